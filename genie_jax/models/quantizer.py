"""Vector quantizer with cosine (L2-normalised) lookup, straight-through gradients,
codebook + 0.25 commitment losses, usage statistics and dead-code re-seeding.

Dead codes are a known failure (the LAM especially): the trainer keeps, per code, the
number of steps since it was last chosen, and `reseed_dead_codes` replaces codes unused
for `max_age` steps with encoder outputs drawn from the current batch.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from genie_jax.models.layers import ONE_HOT_MAX_ROWS, param, take_rows


class QuantizerOutput(NamedTuple):
  quantized: jax.Array   # [..., C] straight-through: value = code, gradient -> encoder output
  indices: jax.Array     # int32 [...]
  loss: jax.Array        # scalar: codebook loss + commitment * commitment loss
  normalized: jax.Array  # [..., C] L2-normalised encoder outputs (re-seeding candidates)


def _l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


class VectorQuantizer(nnx.Module):
  def __init__(self, *, num_codes: int, code_dim: int, rngs: nnx.Rngs, commitment: float = 0.25,
               param_dtype=jnp.float32):
    self.codebook = param(rngs, nnx.initializers.normal(1.0), (num_codes, code_dim),
                          ("codebook", "latent"), param_dtype)
    self.commitment = commitment

  @property
  def num_codes(self) -> int:
    return self.codebook[...].shape[0]

  @property
  def code_dim(self) -> int:
    return self.codebook[...].shape[1]

  def lookup(self, indices: jax.Array) -> jax.Array:
    """int [...] -> normalised codes [..., C] (float32)."""
    return take_rows(_l2_normalize(self.codebook[...].astype(jnp.float32)), indices)

  def __call__(self, z: jax.Array) -> QuantizerOutput:
    """z [..., C] -> nearest code by cosine similarity (computed in float32)."""
    z = _l2_normalize(z.astype(jnp.float32))
    codes = _l2_normalize(self.codebook[...].astype(jnp.float32))
    indices = jnp.argmax(jnp.einsum("...c,kc->...k", z, codes), axis=-1).astype(jnp.int32)
    chosen = take_rows(codes, indices)
    codebook_loss = jnp.mean(jnp.square(jax.lax.stop_gradient(z) - chosen))
    commitment_loss = jnp.mean(jnp.square(z - jax.lax.stop_gradient(chosen)))
    quantized = z + jax.lax.stop_gradient(chosen - z)
    return QuantizerOutput(quantized, indices, codebook_loss + self.commitment * commitment_loss, z)


class CategoricalQuantizer(nnx.Module):
  """K codes as a straight-through categorical: the latent [..., K] are logits, the code is
  the one-hot of their argmax, and the gradient is that of the softmax. No codebook, so
  nothing to collapse onto or re-seed; every code's logit gets a gradient on every step.
  Its loss, `usage_weight` * (log K - H(mean softmax)), is 0 when the batch uses every code
  equally and pushes against one code taking all (a batch-level term: each sample stays
  free to pick one code). `normalized` holds the softmax probabilities. The LAM's weight
  is `lam.usage_weight` (0.01 in base, 0.002 in the sprite recipe): without the term two of
  five codes took every sprite transition; too heavy against a small error, it keeps the
  codes unsure (README, findings 16 and 17). A per-sample term that rewards sure codes is
  not here: it fixed an arbitrary balanced split within 250 steps (NMI 0.007 and 0.080 after
  1,500; finding 17).

  A learned offset is added to the logits: with the LAM's encoder_input="change", standing
  still gives a latent of exactly 0, and without an offset its code would be the argmax of
  five equal logits, decided by rounding noise (measured: "stay" then shared a code with
  "left"); with one, "stay" has a code of its own choosing.
  """

  def __init__(self, *, num_codes: int, rngs: nnx.Rngs, usage_weight: float = 0.01,
               param_dtype=jnp.float32):
    if usage_weight < 0:  # a negative weight would reward one code taking every sample
      raise ValueError(f"the categorical quantizer's usage_weight (lam.usage_weight) must be >= 0, got {usage_weight}")
    self._num_codes = num_codes
    self.usage_weight = usage_weight
    self.offset = param(rngs, nnx.initializers.zeros, (num_codes,), ("latent",), param_dtype)

  @property
  def num_codes(self) -> int:
    return self._num_codes

  @property
  def code_dim(self) -> int:
    return self._num_codes

  def lookup(self, indices: jax.Array) -> jax.Array:
    """int [...] -> one-hot codes [..., K] (float32)."""
    return jax.nn.one_hot(indices, self._num_codes, dtype=jnp.float32)

  def __call__(self, z: jax.Array) -> QuantizerOutput:
    if z.shape[-1] != self._num_codes:
      raise ValueError(f"categorical quantizer with {self._num_codes} codes got logits of width {z.shape[-1]}")
    probs = jax.nn.softmax(z.astype(jnp.float32) + self.offset[...].astype(jnp.float32), axis=-1)
    indices = jnp.argmax(probs, axis=-1).astype(jnp.int32)
    quantized = self.lookup(indices) + probs - jax.lax.stop_gradient(probs)
    mean = jnp.mean(probs.reshape(-1, self._num_codes), axis=0)
    usage = jnp.log(float(self._num_codes)) + jnp.sum(mean * jnp.log(jnp.maximum(mean, 1e-9)))
    return QuantizerOutput(quantized, indices, self.usage_weight * usage, probs)


def code_usage(indices: jax.Array, num_codes: int) -> jax.Array:
  """How often each code was chosen: int32 [K]. Up to ONE_HOT_MAX_ROWS codes a one-hot
  sum, which XLA fuses into one reduction, rather than a scatter-add (slow on GPUs; see
  layers.take_rows). Beyond, the [N, K] one-hot would be large (an FSQ tokenizer has
  64,000 codes), so the scatter stays."""
  flat = indices.reshape(-1)
  if num_codes > ONE_HOT_MAX_ROWS:
    return jnp.zeros((num_codes,), jnp.int32).at[flat].add(1)
  return jnp.sum(jax.nn.one_hot(flat, num_codes, dtype=jnp.int32), axis=0)


def perplexity(counts: jax.Array) -> jax.Array:
  """exp(entropy) of the code distribution: K when uniform, 1 when collapsed."""
  p = counts / jnp.maximum(jnp.sum(counts), 1)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def update_code_age(age: jax.Array, counts: jax.Array) -> jax.Array:
  """Steps since each code was last used: reset to 0 where used this step, else +1."""
  return jnp.where(counts > 0, 0, age + 1)


def reseed_dead_codes(codebook: jax.Array, age: jax.Array, candidates: jax.Array,
                      key: jax.Array, max_age: int) -> tuple[jax.Array, jax.Array]:
  """Replaces codes unused for >= max_age steps with random rows of `candidates` [M, C].

  Returns (new codebook [K, C], new age [K]); re-seeded codes get age 0.
  """
  flat = candidates.reshape(-1, candidates.shape[-1]).astype(codebook.dtype)
  picks = jax.random.randint(key, (codebook.shape[0],), 0, flat.shape[0])
  dead = age >= max_age
  return jnp.where(dead[:, None], flat[picks], codebook), jnp.where(dead, 0, age)


QUANTIZERS = ("vq", "fsq", "categorical")


def make_quantizer(*, kind: str, num_codes: int, latent_dim: int, fsq_levels, rngs: nnx.Rngs,
                   param_dtype=jnp.float32, usage_weight: float = 0.01):
  """"vq": cosine VQ (the paper); "fsq": finite scalar quantization with `fsq_levels`,
  whose product must be `num_codes` (the vocabulary the dynamics model predicts);
  "categorical": a straight-through softmax over `num_codes` (CategoricalQuantizer, whose
  batch-usage term weighs `usage_weight`; the other two ignore it)."""
  if kind == "vq":
    return VectorQuantizer(num_codes=num_codes, code_dim=latent_dim, rngs=rngs, param_dtype=param_dtype)
  if kind == "fsq":
    from genie_jax.models.fsq import FiniteScalarQuantizer  # fsq imports this module's output type
    q = FiniteScalarQuantizer(levels=fsq_levels)
    if q.num_codes != num_codes:
      raise ValueError(f"FSQ levels {tuple(fsq_levels)} give {q.num_codes} codes, but num_codes is "
                       f"{num_codes}: set num_codes to the product of the levels")
    return q
  if kind == "categorical":
    return CategoricalQuantizer(num_codes=num_codes, rngs=rngs, param_dtype=param_dtype, usage_weight=usage_weight)
  raise ValueError(f"unknown quantizer {kind!r}; choose from {QUANTIZERS}")
