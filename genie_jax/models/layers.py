"""Parameter helpers and the small layers every model shares (dense, norm, MLP, embeddings).

Every parameter is created through `param(...)`, which records its logical axis names
(`out_sharding` metadata) for genie_jax/parallel.py. Norms and their statistics run in
float32 whatever the compute dtype.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def param(rngs: nnx.Rngs, init, shape: Sequence[int], names: Sequence[str | None],
          dtype=jnp.float32) -> nnx.Param:
  if len(names) != len(shape):
    raise ValueError(f"{len(names)} axis names {tuple(names)} for a parameter of shape {tuple(shape)}")
  return nnx.Param(init(rngs.params(), tuple(shape), dtype), out_sharding=tuple(names))


class Dense(nnx.Module):
  """y = x @ W (+ b) over the last axis; W has logical names (in_name, *out_names)."""

  def __init__(self, in_features: int, out_shape: Sequence[int] | int, *,
               names: Sequence[str | None], rngs: nnx.Rngs, use_bias: bool = True,
               dtype=jnp.float32, param_dtype=jnp.float32, zero_init: bool = False):
    out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
    init = (nnx.initializers.zeros if zero_init else
            nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                              in_axis=0, out_axis=tuple(range(1, 1 + len(out_shape)))))
    self.kernel = param(rngs, init, (in_features, *out_shape), names, param_dtype)
    self.bias = (param(rngs, nnx.initializers.zeros, out_shape, names[1:], param_dtype)
                 if use_bias else None)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.kernel[...].astype(self.dtype)
    y = jnp.tensordot(x.astype(self.dtype), kernel, axes=((x.ndim - 1,), (0,)))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class DenseIn(nnx.Module):
  """Contracts several trailing axes: x [..., N, H] @ W [N, H, D] -> [..., D] (attention output)."""

  def __init__(self, in_shape: Sequence[int], out_features: int, *, names: Sequence[str | None],
               rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                             in_axis=tuple(range(len(in_shape))), out_axis=-1)
    self.kernel = param(rngs, init, (*in_shape, out_features), names, param_dtype)
    self.bias = param(rngs, nnx.initializers.zeros, (out_features,), names[-1:], param_dtype)
    self.dtype = dtype
    self._n_in = len(in_shape)

  def __call__(self, x: jax.Array) -> jax.Array:
    axes = tuple(range(x.ndim - self._n_in, x.ndim))
    y = jnp.tensordot(x.astype(self.dtype), self.kernel[...].astype(self.dtype),
                      axes=(axes, tuple(range(self._n_in))))
    return y + self.bias[...].astype(self.dtype)


class LayerNorm(nnx.Module):
  """LayerNorm (or RMSNorm with `rms=True`) over the last axis, computed in float32."""

  def __init__(self, dim: int, *, name: str | None, rngs: nnx.Rngs, rms: bool = False,
               eps: float = 1e-6, param_dtype=jnp.float32):
    self.scale = param(rngs, nnx.initializers.ones, (dim,), (name,), param_dtype)
    self.bias = None if rms else param(rngs, nnx.initializers.zeros, (dim,), (name,), param_dtype)
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    dtype = x.dtype
    x = x.astype(jnp.float32)
    if self.bias is None:
      x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)
      y = x * self.scale[...]
    else:
      mean = jnp.mean(x, axis=-1, keepdims=True)
      var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
      y = (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
    return y.astype(dtype)


class Conv(nnx.Module):
  """3x3 "same" convolution over [N, H, W, C]; small (pixel-level) layers, so replicated."""

  def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32, zero_init: bool = False):
    init = (nnx.initializers.zeros if zero_init else
            nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=(0, 1, 2), out_axis=3))
    self.kernel = param(rngs, init, (3, 3, in_features, out_features), (None, None, None, None), param_dtype)
    self.bias = param(rngs, nnx.initializers.zeros, (out_features,), (None,), param_dtype)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(x.astype(self.dtype), self.kernel[...].astype(self.dtype),
                                     window_strides=(1, 1), padding="SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + self.bias[...].astype(self.dtype)


class MLP(nnx.Module):
  """The block's one feed-forward layer: D -> 4D (gelu) -> D."""

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32):
    self.up = Dense(dim, hidden, names=("embed", "mlp"), rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.down = Dense(hidden, dim, names=("mlp", "embed"), rngs=rngs, dtype=dtype, param_dtype=param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down(jax.nn.gelu(self.up(x)))


ONE_HOT_MAX_ROWS = 8192  # take_rows' backward is a one-hot matmul up to this many table rows


@jax.custom_vjp
def take_rows(table: jax.Array, ids: jax.Array) -> jax.Array:
  """table [K, D], int ids [...] -> table[ids] [..., D], whose gradient is a matmul.

  The gradient of a plain `jnp.take` is a scatter-add of every looked-up row into the
  table. On an H100 (jax 0.11.2) one scatter kernel took 108.7 of the patch-16
  tokenizer step's 138 ms of device time (bench_train --profile; the step's scatters
  were the gradient of the VQ codebook lookup over 12,288 tokens and the code counts,
  and the trace names only an `input_scatter_fusion`); with both made one-hot products
  the step went from 122.8 to 34.3 ms. Here the backward is one_hot(ids)^T @ g, a
  matmul of 2 N K D flops accumulated in float32 at full precision, with no atomics.
  Tables of more than ONE_HOT_MAX_ROWS rows keep the scatter: their one-hot would be
  [N, K]."""
  return jnp.take(table, ids, axis=0)


def _take_rows_fwd(table, ids):
  return jnp.take(table, ids, axis=0), (ids, table)  # the table only for its shape and dtype


def _take_rows_bwd(residuals, g):
  ids, table = residuals
  num, dtype = table.shape[0], table.dtype
  flat = g.reshape(-1, g.shape[-1])
  if num > ONE_HOT_MAX_ROWS:  # the one-hot would be [N, K]: scatter-add instead
    return jnp.zeros(table.shape, jnp.float32).at[ids.reshape(-1)].add(flat.astype(jnp.float32)).astype(dtype), None
  one_hot = jax.nn.one_hot(ids.reshape(-1), num, dtype=flat.dtype)
  grad = jnp.einsum("nk,nd->kd", one_hot, flat, preferred_element_type=jnp.float32,
                    precision=jax.lax.Precision.HIGHEST)
  return grad.astype(dtype), None


take_rows.defvjp(_take_rows_fwd, _take_rows_bwd)


class Embed(nnx.Module):
  """Lookup table [num, D]; `attend` reuses nothing (heads are separate Dense layers)."""

  def __init__(self, num: int, dim: int, *, names: Sequence[str | None], rngs: nnx.Rngs,
               param_dtype=jnp.float32):
    self.table = param(rngs, nnx.initializers.normal(0.02), (num, dim), names, param_dtype)

  def __call__(self, ids: jax.Array, dtype=jnp.float32) -> jax.Array:
    return take_rows(self.table[...], ids).astype(dtype)


class PositionalEmbedding(nnx.Module):
  """Learned positions over the time and space axes, added once at the model input."""

  def __init__(self, max_frames: int, tokens_per_frame: int, dim: int, *, rngs: nnx.Rngs,
               param_dtype=jnp.float32):
    self.time = param(rngs, nnx.initializers.normal(0.02), (max_frames, dim), ("time", "embed"), param_dtype)
    self.space = param(rngs, nnx.initializers.normal(0.02), (tokens_per_frame, dim), ("space", "embed"), param_dtype)

  def __call__(self, x: jax.Array, *, time_offset: jax.Array | int = 0) -> jax.Array:
    """x [B, T, S, D] + positions of frames time_offset .. time_offset+T-1."""
    num_frames, num_tokens = x.shape[1], x.shape[2]
    if num_tokens != self.space[...].shape[0]:
      raise ValueError(f"{num_tokens} tokens per frame, positions built for {self.space[...].shape[0]}")
    if num_frames > self.time[...].shape[0]:
      raise ValueError(f"{num_frames} frames, but the model was built for at most "
                       f"{self.time[...].shape[0]} (max_frames)")
    time = jax.lax.dynamic_slice_in_dim(self.time[...], time_offset, num_frames, axis=0)
    return x + (time[:, None, :] + self.space[...][None, :, :]).astype(x.dtype)
