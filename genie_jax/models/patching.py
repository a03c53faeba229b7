"""Video <-> patch grids. Frames whose sides do not divide by the patch are zero-padded
at the bottom/right and cropped back after decoding: 160x90 (Platformers) with patch 4
becomes 160x92 (a 40x23 token grid), with patch 16 160x96 (10x6)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def token_grid(height: int, width: int, patch: int) -> tuple[int, int]:
  """(h, w) token grid of a frame after padding to a multiple of the patch."""
  return math.ceil(height / patch), math.ceil(width / patch)


def patchify(video: jax.Array, patch: int) -> jax.Array:
  """[B, T, H, W, C] -> [B, T, h*w, patch*patch*C] (zero padding where needed)."""
  b, t, height, width, c = video.shape
  h, w = token_grid(height, width, patch)
  video = jnp.pad(video, ((0, 0), (0, 0), (0, h * patch - height), (0, w * patch - width), (0, 0)))
  x = video.reshape(b, t, h, patch, w, patch, c).transpose(0, 1, 2, 4, 3, 5, 6)
  return x.reshape(b, t, h * w, patch * patch * c)


def unpatchify(x: jax.Array, *, patch: int, height: int, width: int, channels: int = 3) -> jax.Array:
  """[B, T, h*w, patch*patch*C] -> [B, T, H, W, C] (padding cropped)."""
  b, t = x.shape[:2]
  h, w = token_grid(height, width, patch)
  x = x.reshape(b, t, h, w, patch, patch, channels).transpose(0, 1, 2, 4, 3, 5, 6)
  return x.reshape(b, t, h * patch, w * patch, channels)[:, :, :height, :width]


def to_unit_float(frames: jax.Array) -> jax.Array:
  """uint8 frames -> float32 in [0, 1] (the range every model takes and gives)."""
  return frames.astype(jnp.float32) / 255.0 if frames.dtype == jnp.uint8 else frames.astype(jnp.float32)
