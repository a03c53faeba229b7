"""The behaviour-cloning policy: the last few frames -> logits over actions.

The same network serves the latent-action agent (A latent actions) and the oracle (the
real actions), so the two differ only in their labels. Frames [B, T, H, W, 3] (T the
context, oldest first) are stacked on channels and cut into 4x4 patches, so the first
layer is a patch embedding (16x16 positions at 64x64, 4x fewer than a stride-1 convolution
would see), then two 3x3 convolutions, each halving the grid by a 2x2 mean, and two dense
layers. Small enough to step 100 CoinRun levels in lockstep on 2 CPU cores.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from genie_jax.models import patching
from genie_jax.models.layers import Conv, Dense

PATCH = 4


def _halve(x: jax.Array) -> jax.Array:
  """[B, h, w, C] -> [B, h/2, w/2, C]: the mean of each 2x2 block (h, w even)."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class FramePolicy(nnx.Module):
  def __init__(self, *, context: int, height: int, width: int, num_actions: int, dim: int = 64,
               hidden: int = 256, rngs: nnx.Rngs):
    if height % (4 * PATCH) or width % (4 * PATCH):
      raise ValueError(f"the policy needs frames whose sides divide by {4 * PATCH}, got {height}x{width}")
    if context < 1 or num_actions < 1:
      raise ValueError(f"context ({context}) and num_actions ({num_actions}) must be >= 1")
    self.context, self.num_actions = context, num_actions
    self.grid = (height // PATCH, width // PATCH)
    self.embed = Dense(PATCH * PATCH * 3 * context, dim, names=("embed", "mlp"), rngs=rngs)
    self.conv1 = Conv(dim, dim, rngs=rngs)
    self.conv2 = Conv(dim, dim, rngs=rngs)
    flat = dim * (self.grid[0] // 4) * (self.grid[1] // 4)
    self.hidden = Dense(flat, hidden, names=("embed", "mlp"), rngs=rngs)
    self.out = Dense(hidden, num_actions, names=("mlp", "vocab"), rngs=rngs)

  def __call__(self, frames: jax.Array) -> jax.Array:
    """frames uint8 [B, T, H, W, 3] (T = context) -> logits float32 [B, A]."""
    if frames.ndim != 5 or frames.shape[1] != self.context:
      raise ValueError(f"the policy reads [B, {self.context}, H, W, 3] frames, got {frames.shape}")
    x = patching.patchify(patching.to_unit_float(frames) - 0.5, PATCH)  # [B, T, S, P*P*3]
    b, t, s, p = x.shape
    x = x.transpose(0, 2, 1, 3).reshape(b, *self.grid, t * p)  # each patch's pixels over time
    x = jax.nn.gelu(self.embed(x))
    x = _halve(jax.nn.gelu(self.conv1(x)))
    x = _halve(jax.nn.gelu(self.conv2(x)))
    x = jax.nn.gelu(self.hidden(x.reshape(b, -1)))
    return self.out(x).astype(jnp.float32)
