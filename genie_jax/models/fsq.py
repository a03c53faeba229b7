"""Finite scalar quantization (Mentzer et al., 2023, "FSQ: VQ-VAE made simple").

Each of the d latent channels is bounded with tanh and rounded to one of L_i levels
(straight-through gradient); the code is the tuple of levels, so there are prod(L_i)
codes and no codebook to learn. Nothing can collapse onto one code through the codebook,
no code goes unused for lack of gradient, and there is no commitment loss: the only
failure left is the encoder ignoring its input, which the reconstruction loss punishes.
A drop-in for `VectorQuantizer` (same output, `lookup`, `num_codes`).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie_jax.models.quantizer import QuantizerOutput


def radix_basis(levels: Sequence[int]) -> tuple[int, ...]:
  """The weight of each digit in a code index: index = sum_i digit_i * prod(levels[:i])
  (mixed radix, first level fastest)."""
  return tuple(int(b) for b in np.cumprod((1,) + tuple(levels[:-1])))


def digits(indices, levels: Sequence[int]):
  """Code indices int [...] -> their FSQ digits [..., d] (radix_basis's numbering). Works
  on NumPy and JAX arrays alike."""
  return (indices[..., None] // np.asarray(radix_basis(levels))) % np.asarray(levels)


class FiniteScalarQuantizer(nnx.Module):
  def __init__(self, *, levels: Sequence[int]):
    levels = tuple(int(l) for l in levels)
    if not levels or min(levels) < 2:
      raise ValueError(f"FSQ levels must be integers >= 2, got {levels}")
    self.levels = levels
    self.half_width = tuple(l // 2 for l in levels)  # digit d <-> code value (d - hw) / hw
    # index = sum_i digit_i * basis_i, digits in 0..L_i-1 (mixed radix)
    self.basis = radix_basis(levels)

  @property
  def num_codes(self) -> int:
    return int(np.prod(self.levels))

  @property
  def code_dim(self) -> int:
    return len(self.levels)

  def _bound(self, z: jax.Array) -> jax.Array:
    """z [..., d] -> values in (-(L-1)/2, (L-1)/2) (shifted by 1/2 for even L, so rounding
    gives exactly L integers)."""
    levels = jnp.asarray(self.levels, jnp.float32)
    half = (levels - 1) * (1 - 1e-3) / 2
    offset = jnp.where(levels % 2 == 0, 0.5, 0.0)
    shift = jnp.arctanh(offset / half)
    return jnp.tanh(z + shift) * half - offset

  def __call__(self, z: jax.Array) -> QuantizerOutput:
    """z [..., d] -> quantized [..., d] in [-1, 1] (straight-through), indices int32 [...]."""
    if z.shape[-1] != self.code_dim:
      raise ValueError(f"FSQ with {self.code_dim} levels {self.levels} got latents of width {z.shape[-1]}")
    bounded = self._bound(z.astype(jnp.float32))
    rounded = bounded + jax.lax.stop_gradient(jnp.round(bounded) - bounded)
    half_width = jnp.asarray(self.half_width, jnp.float32)
    level_ids = jnp.round(jax.lax.stop_gradient(rounded)).astype(jnp.int32) + jnp.asarray(self.half_width, jnp.int32)
    indices = jnp.sum(level_ids * jnp.asarray(self.basis, jnp.int32), axis=-1)
    return QuantizerOutput(rounded / half_width, indices, jnp.zeros((), jnp.float32), bounded / half_width)

  def lookup(self, indices: jax.Array) -> jax.Array:
    """int [...] -> code values [..., d] (float32)."""
    half_width = jnp.asarray(self.half_width, jnp.float32)
    return (digits(indices, self.levels).astype(jnp.float32) - half_width) / half_width
