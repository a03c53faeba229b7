"""How far the whole view moved between two frames (global image shift), by phase correlation.

In CoinRun the camera follows the player, so most of what changes between frames is the view
scrolling, up and down as the player jumps and falls and sideways as it runs. The LAM can be told this
scroll (`lam.decoder_scroll`, lam.py), so that its few codes need not spend themselves on
it, and scripts/coinrun_lam_curve.py scores the codes against it as well as against the
real actions, to see which of the two they follow (README, "CPU reference run").
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def frame_shift(first: jax.Array, second: jax.Array) -> jax.Array:
  """first, second float or uint8 [..., H, W, C] -> float32 [..., 2]: the (rows, columns) by
  which the content of `first` moved to give `second`, to a fraction of a pixel.

  Phase correlation of the grey frames under a Hann window, its peak refined by a parabola
  through its neighbours along each axis. A shift is read modulo the frame, in
  [-H/2, H/2) x [-W/2, W/2); two frames with nothing in common give an arbitrary shift."""
  if first.shape != second.shape or first.ndim < 3:
    raise ValueError(f"frame_shift expects two [..., H, W, C] arrays of one shape, got {first.shape} "
                     f"and {second.shape}")
  lead, (h, w) = first.shape[:-3], first.shape[-3:-1]
  window = jnp.outer(jnp.hanning(h), jnp.hanning(w))

  def spectrum(frames):
    grey = jnp.asarray(frames, jnp.float32).reshape(-1, h, w, first.shape[-1]).mean(-1)
    return jnp.fft.fft2((grey - grey.mean(axis=(1, 2), keepdims=True)) * window)

  cross = spectrum(second) * jnp.conj(spectrum(first))
  surface = jnp.real(jnp.fft.ifft2(cross / (jnp.abs(cross) + 1e-9)))  # [N, H, W], peak at the shift
  peak = jnp.argmax(surface.reshape(surface.shape[0], -1), axis=1)
  rows, cols = peak // w, peak % w
  pick = jax.vmap(lambda s, r, c: s[r % h, c % w])

  def refine(before, at, after):  # vertex of the parabola through three samples, in [-0.5, 0.5]
    curvature = before - 2 * at + after
    ok = jnp.abs(curvature) > 1e-12
    return jnp.where(ok, jnp.clip(0.5 * (before - after) / jnp.where(ok, curvature, 1.0), -0.5, 0.5), 0.0)

  at = pick(surface, rows, cols)
  dy = refine(pick(surface, rows - 1, cols), at, pick(surface, rows + 1, cols))
  dx = refine(pick(surface, rows, cols - 1), at, pick(surface, rows, cols + 1))
  wrap = lambda p, size: (p + size // 2) % size - size // 2  # noqa: E731
  shift = jnp.stack([wrap(rows, h) + dy, wrap(cols, w) + dx], axis=-1).astype(jnp.float32)
  return shift.reshape(*lead, 2)


def shift_frames(frames: jax.Array, shift: jax.Array) -> jax.Array:
  """frames float [..., H, W, C], shift [..., 2] (rows, columns) -> the frames' content moved
  by `shift`, to a fraction of a pixel (a phase ramp in the Fourier domain), circularly: what
  leaves one edge comes back at the other; a whole-pixel shift is np.roll's."""
  if frames.ndim < 3 or shift.shape != (*frames.shape[:-3], 2):
    raise ValueError(f"shift_frames expects frames [..., H, W, C] and shifts [..., 2], got {frames.shape} "
                     f"and {shift.shape}")
  h, w = frames.shape[-3:-1]
  rows = jnp.fft.fftfreq(h)[:, None]  # cycles per pixel
  cols = jnp.fft.fftfreq(w)[None, :]
  dy, dx = shift[..., 0, None, None], shift[..., 1, None, None]
  ramp = jnp.exp(-2j * jnp.pi * (rows * dy + cols * dx))[..., None]  # [..., H, W, 1]
  spectrum = jnp.fft.fft2(jnp.asarray(frames, jnp.float32), axes=(-3, -2))
  return jnp.real(jnp.fft.ifft2(spectrum * ramp, axes=(-3, -2)))


def direction_labels(shift: np.ndarray, dead_zone: float = 0.25) -> np.ndarray:
  """float [...] shifts along one axis -> int [...]: 0 negative, 1 within `dead_zone` px of
  still, 2 positive."""
  return np.digitize(np.asarray(shift), [-dead_zone, dead_zone])
