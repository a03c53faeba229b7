"""The ST-transformer block (Genie, Sec. 2.1) and a stack of them.

One block = spatial attention inside each frame -> causal temporal attention across
frames at the same spatial position -> one feed-forward layer. Pre-norm, QK-norm
(RMSNorm on queries and keys per head, in float32), attention through
`jax.nn.dot_product_attention` so fused kernels are used where the backend has them
(logits and softmax in float32 for bf16 inputs). Cost is linear in T.

Sampling reuses the temporal keys/values of past frames: `STTransformer.step` runs one
new frame against a per-layer cache [L, B, T_max, S, N, Hd] and gives exactly what the
full forward gives at that frame, because temporal attention is causal.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from genie_jax import parallel
from genie_jax.models.layers import Dense, DenseIn, LayerNorm, MLP

ACT = ("batch", "time", "space", "act_embed")  # logical names of [B, T, S, D] activations

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class KVCache(NamedTuple):
  """Temporal keys/values of past frames for every layer: [L, B, T_max, S, N, Hd] each."""
  k: jax.Array
  v: jax.Array


class Attention(nnx.Module):
  """Multi-head attention with QK-norm; projections keep a separate heads axis for sharding."""

  def __init__(self, dim: int, num_heads: int, *, head_dim: int = 0, rngs: nnx.Rngs,
               dtype=jnp.float32, param_dtype=jnp.float32):
    if not head_dim:  # 0: the usual dim / heads; the paper's 10.1B model uses 36 x 128 at d5120
      if dim % num_heads:
        raise ValueError(f"model width {dim} is not divisible by {num_heads} heads; set head_dim")
      head_dim = dim // num_heads
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype, use_bias=False)
    self.q = Dense(dim, (num_heads, head_dim), names=("embed", "heads", "kv"), **kw)
    self.k = Dense(dim, (num_heads, head_dim), names=("embed", "heads", "kv"), **kw)
    self.v = Dense(dim, (num_heads, head_dim), names=("embed", "heads", "kv"), **kw)
    self.out = DenseIn((num_heads, head_dim), dim, names=("heads", "kv", "embed"), rngs=rngs,
                       dtype=dtype, param_dtype=param_dtype)
    self.q_norm = LayerNorm(head_dim, name="kv", rms=True, rngs=rngs, param_dtype=param_dtype)
    self.k_norm = LayerNorm(head_dim, name="kv", rms=True, rngs=rngs, param_dtype=param_dtype)
    self.dtype = dtype

  def qkv(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x [..., D] -> q, k, v [..., N, Hd] (q and k normalised)."""
    return self.q_norm(self.q(x)), self.k_norm(self.k(x)), self.v(x)

  @staticmethod
  def attend(q, k, v, *, causal: bool = False, kv_lengths: jax.Array | None = None) -> jax.Array:
    """q [B', Lq, N, Hd], k/v [B', Lk, N, Hd] -> [B', Lq, N, Hd]."""
    return jax.nn.dot_product_attention(q, k, v, is_causal=causal, key_value_seq_lengths=kv_lengths)


class STBlock(nnx.Module):
  """Spatial attention -> causal temporal attention -> feed-forward, each pre-norm + residual."""

  def __init__(self, dim: int, num_heads: int, *, head_dim: int = 0, mlp_ratio: int = 4,
               rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    self.spatial_norm = LayerNorm(dim, name="embed", **kw)
    self.spatial = Attention(dim, num_heads, head_dim=head_dim, dtype=dtype, **kw)
    self.temporal_norm = LayerNorm(dim, name="embed", **kw)
    self.temporal = Attention(dim, num_heads, head_dim=head_dim, dtype=dtype, **kw)
    self.mlp_norm = LayerNorm(dim, name="embed", **kw)
    self.mlp = MLP(dim, mlp_ratio * dim, dtype=dtype, **kw)

  def _spatial(self, x: jax.Array) -> jax.Array:
    b, t, s, d = x.shape
    q, k, v = self.spatial.qkv(self.spatial_norm(x).reshape(b * t, s, d))
    out = self.spatial.out(Attention.attend(q, k, v)).reshape(b, t, s, d)
    return parallel.constrain(x + out.astype(x.dtype), ACT)

  def _mlp(self, x: jax.Array) -> jax.Array:
    return parallel.constrain(x + self.mlp(self.mlp_norm(x)).astype(x.dtype), ACT)

  def __call__(self, x: jax.Array, *, return_kv: bool = False):
    """x [B, T, S, D] -> [B, T, S, D]; with return_kv also temporal k, v [B, T, S, N, Hd]."""
    x = self._spatial(x)
    b, t, s, d = x.shape
    q, k, v = self.temporal.qkv(self.temporal_norm(x))  # [B, T, S, N, Hd]
    to_seq = lambda a: a.transpose(0, 2, 1, 3, 4).reshape(b * s, t, *a.shape[3:])
    out = Attention.attend(to_seq(q), to_seq(k), to_seq(v), causal=True)
    out = out.reshape(b, s, t, *out.shape[2:]).transpose(0, 2, 1, 3, 4)
    x = parallel.constrain(x + self.temporal.out(out).astype(x.dtype), ACT)
    x = self._mlp(x)
    return (x, k, v) if return_kv else x

  def step(self, x: jax.Array, k_cache: jax.Array, v_cache: jax.Array, position: jax.Array):
    """One new frame at `position` against cached past frames.

    x [B, 1, S, D]; k_cache, v_cache [B, T_max, S, N, Hd] hold frames < position (later
    slots are ignored). Returns (y [B, 1, S, D], k, v [B, 1, S, N, Hd] of the new frame).
    """
    x = self._spatial(x)
    b, _, s, d = x.shape
    q, k, v = self.temporal.qkv(self.temporal_norm(x))
    keys = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), position, axis=1)
    values = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), position, axis=1)
    t_max = keys.shape[1]
    to_seq = lambda a, n: a.transpose(0, 2, 1, 3, 4).reshape(b * s, n, *a.shape[3:])
    lengths = jnp.full((b * s,), position + 1, dtype=jnp.int32)
    out = Attention.attend(to_seq(q, 1), to_seq(keys.astype(q.dtype), t_max),
                           to_seq(values.astype(q.dtype), t_max), kv_lengths=lengths)
    out = out.reshape(b, s, 1, *out.shape[2:]).transpose(0, 2, 1, 3, 4)
    x = x + self.temporal.out(out).astype(x.dtype)
    return self._mlp(x), k, v


class STTransformer(nnx.Module):
  """A stack of ST blocks with a final norm. `remat` names a policy in REMAT_POLICIES."""

  def __init__(self, *, dim: int, num_layers: int, num_heads: int, head_dim: int = 0,
               mlp_ratio: int = 4, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
               remat: str = "none"):
    if remat not in REMAT_POLICIES:
      raise ValueError(f"unknown remat policy {remat!r}; choose from {sorted(REMAT_POLICIES)}")
    self.blocks = nnx.List([STBlock(dim, num_heads, head_dim=head_dim, mlp_ratio=mlp_ratio, rngs=rngs, dtype=dtype,
                                    param_dtype=param_dtype) for _ in range(num_layers)])
    self.final_norm = LayerNorm(dim, name="embed", rngs=rngs, param_dtype=param_dtype)
    self.remat = remat

  def __call__(self, x: jax.Array, *, return_kv: bool = False):
    """x [B, T, S, D] -> [B, T, S, D]; with return_kv also a KVCache of [L, B, T, S, N, Hd]."""
    x = parallel.constrain(x, ACT)
    ks, vs = [], []
    for block in self.blocks:
      if return_kv:
        x, k, v = block(x, return_kv=True)
        ks.append(k)
        vs.append(v)
      elif self.remat != "none":
        x = nnx.remat(lambda blk, h: blk(h), policy=REMAT_POLICIES[self.remat])(block, x)
      else:
        x = block(x)
    x = self.final_norm(x)
    return (x, KVCache(jnp.stack(ks), jnp.stack(vs))) if return_kv else x

  def step(self, x: jax.Array, cache: KVCache, position: jax.Array):
    """One frame x [B, 1, S, D] at `position` -> (y [B, 1, S, D], KVCache of the new frame [L, B, 1, S, N, Hd])."""
    ks, vs = [], []
    for i, block in enumerate(self.blocks):
      x, k, v = block.step(x, cache.k[i], cache.v[i], position)
      ks.append(k)
      vs.append(v)
    return self.final_norm(x), KVCache(jnp.stack(ks), jnp.stack(vs))
