"""The ST-transformer block (Genie, Sec. 2.1) and a stack of them.

One block = spatial attention inside each frame -> causal temporal attention across
frames at the same spatial position -> one feed-forward layer. Pre-norm, QK-norm
(RMSNorm on queries and keys per head, in float32). Attention goes through
genie_jax/models/attention.py, which picks the kernel (`attention`: auto | xla | cudnn |
pallas_tpu; cuDNN flash attention on NVIDIA GPUs, Pallas splash attention on TPU, XLA on
CPU; logits and softmax in float32). Cost is linear in T.

Sampling reuses the temporal keys/values of past frames: `STTransformer.step` runs one
new frame against a per-layer cache [L, B, T_max, S, N, Hd] and gives exactly what the
full forward gives at that frame, because temporal attention is causal.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from genie_jax import parallel
from genie_jax.models import attention as attention_lib
from genie_jax.models.layers import Dense, DenseIn, LayerNorm, MLP

ACT = ("batch", "time", "space", "act_embed")  # logical names of [B, T, S, D] activations

_names = jax.checkpoint_policies.save_only_these_names
_QKV = {part: tuple(f"{part}_{x}" for x in "qkv") for part in ("spatial", "temporal")}


def _offloaded(*names):
  """Keep `names` for the backward in the host's pinned memory instead of HBM."""
  return jax.checkpoint_policies.save_and_offload_only_these_names(
      names_which_can_be_saved=(), names_which_can_be_offloaded=names, offload_src="device",
      offload_dst="pinned_host")


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    # between full and dots: keep some of the q/k/v projections (before QK-norm) that the
    # attention backward reads, so those matmuls are not recomputed; the rest is. On the
    # 11B v5p-256 step (README, Pod scale) temporal_qkv fits at 96% of HBM, qkv does not
    "qkv": _names(*_QKV["spatial"], *_QKV["temporal"]),
    "temporal_qkv": _names(*_QKV["temporal"]),
    "temporal_kv": _names("temporal_k", "temporal_v"),
    # the same tensors kept in host memory: HBM near full's (plus transfer buffers; README, Pod scale)
    "offload_temporal_qkv": _offloaded(*_QKV["temporal"]),
    "offload_qkv": _offloaded(*_QKV["spatial"], *_QKV["temporal"]),
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

  def qkv(self, x: jax.Array, *, name: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x [..., D] -> q, k, v [..., N, Hd] (q and k normalised). The projections are
    tagged `{name}_q`, `{name}_k`, `{name}_v` for the remat policies that keep them
    (REMAT_POLICIES)."""
    q, k, v = (checkpoint_name(proj(x), f"{name}_{part}") for part, proj in zip("qkv", (self.q, self.k, self.v)))
    return self.q_norm(q), self.k_norm(k), v


class STBlock(nnx.Module):
  """Spatial attention -> causal temporal attention -> feed-forward, each pre-norm + residual."""

  def __init__(self, dim: int, num_heads: int, *, head_dim: int = 0, mlp_ratio: int = 4,
               rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32, attention: str = "auto"):
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    self.attention = attention_lib.check_implementation(attention)
    self.spatial_norm = LayerNorm(dim, name="embed", **kw)
    self.spatial = Attention(dim, num_heads, head_dim=head_dim, dtype=dtype, **kw)
    self.temporal_norm = LayerNorm(dim, name="embed", **kw)
    self.temporal = Attention(dim, num_heads, head_dim=head_dim, dtype=dtype, **kw)
    self.mlp_norm = LayerNorm(dim, name="embed", **kw)
    self.mlp = MLP(dim, mlp_ratio * dim, dtype=dtype, **kw)

  def _attend(self, q, k, v, *, causal: bool = False, kv_lengths: jax.Array | None = None) -> jax.Array:
    """q [B', Lq, N, Hd], k/v [B', Lk, N, Hd] -> [B', Lq, N, Hd] through the chosen kernel."""
    return attention_lib.attend(q, k, v, causal=causal, kv_lengths=kv_lengths, implementation=self.attention)

  def _spatial(self, x: jax.Array) -> jax.Array:
    b, t, s, d = x.shape
    q, k, v = self.spatial.qkv(self.spatial_norm(x).reshape(b * t, s, d), name="spatial")
    out = self.spatial.out(self._attend(q, k, v)).reshape(b, t, s, d)
    return parallel.constrain(x + out.astype(x.dtype), ACT)

  def _mlp(self, x: jax.Array) -> jax.Array:
    return parallel.constrain(x + self.mlp(self.mlp_norm(x)).astype(x.dtype), ACT)

  def __call__(self, x: jax.Array, *, return_kv: bool = False):
    """x [B, T, S, D] -> [B, T, S, D]; with return_kv also temporal k, v [B, T, S, N, Hd]."""
    x = self._spatial(x)
    b, t, s, d = x.shape
    q, k, v = self.temporal.qkv(self.temporal_norm(x), name="temporal")  # [B, T, S, N, Hd]
    to_seq = lambda a: a.transpose(0, 2, 1, 3, 4).reshape(b * s, t, *a.shape[3:])
    out = self._attend(to_seq(q), to_seq(k), to_seq(v), causal=True)
    out = out.reshape(b, s, t, *out.shape[2:]).transpose(0, 2, 1, 3, 4)
    x = parallel.constrain(x + self.temporal.out(out).astype(x.dtype), ACT)
    x = self._mlp(x)
    return (x, k, v) if return_kv else x

  def forced(self, clean: jax.Array, masked: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Teacher forcing: clean, masked [B, T, S, D] -> both streams after the block.

    The clean stream is exactly __call__. Frame t of the masked stream attends in time to
    the CLEAN frames < t and to itself, so it is what `step` computes for frame t from a
    cache of the true past: every frame of a clip is a training target at once, each with
    the clean context that sampling gives it. The temporal axis is short (T <= 16), so
    this attention, whose mask no fused kernel takes, runs on XLA.
    """
    b, t, s, d = clean.shape
    both = self._spatial(jnp.concatenate([clean, masked], axis=0))
    q, k, v = self.temporal.qkv(self.temporal_norm(both), name="temporal")  # [2B, T, S, N, Hd]
    to_seq = lambda a: a.transpose(0, 2, 1, 3, 4).reshape(a.shape[0] * s, t, *a.shape[3:])
    q, k, v = to_seq(q), to_seq(k), to_seq(v)  # [2B*S, T, N, Hd]: clean rows first
    n = b * s
    out_clean = self._attend(q[:n], k[:n], v[:n], causal=True)
    # keys: the clean frames 0..T-1, then the masked frames; query t sees clean u < t and masked t
    past = jnp.arange(t)[None, :] < jnp.arange(t)[:, None]
    mask = jnp.concatenate([past, jnp.eye(t, dtype=bool)], axis=1)[None, None]  # [1, 1, T, 2T]
    out_masked = jax.nn.dot_product_attention(
        q[n:], jnp.concatenate([k[:n], k[n:]], axis=1), jnp.concatenate([v[:n], v[n:]], axis=1), mask=mask)
    out = jnp.concatenate([out_clean, out_masked.astype(out_clean.dtype)], axis=0)
    out = out.reshape(2 * b, s, t, *out.shape[2:]).transpose(0, 2, 1, 3, 4)
    both = self._mlp(parallel.constrain(both + self.temporal.out(out).astype(both.dtype), ACT))
    return both[:b], both[b:]

  def step(self, x: jax.Array, k_cache: jax.Array, v_cache: jax.Array, position: jax.Array):
    """One new frame at `position` against cached past frames.

    x [B, 1, S, D]; k_cache, v_cache [B, T_max, S, N, Hd] hold frames < position (later
    slots are ignored). Returns (y [B, 1, S, D], k, v [B, 1, S, N, Hd] of the new frame).
    """
    x = self._spatial(x)
    b, _, s, d = x.shape
    q, k, v = self.temporal.qkv(self.temporal_norm(x), name="temporal")
    keys = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), position, axis=1)
    values = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), position, axis=1)
    t_max = keys.shape[1]
    to_seq = lambda a, n: a.transpose(0, 2, 1, 3, 4).reshape(b * s, n, *a.shape[3:])
    lengths = jnp.full((b * s,), position + 1, dtype=jnp.int32)
    out = self._attend(to_seq(q, 1), to_seq(keys.astype(q.dtype), t_max),
                       to_seq(values.astype(q.dtype), t_max), kv_lengths=lengths)
    out = out.reshape(b, s, 1, *out.shape[2:]).transpose(0, 2, 1, 3, 4)
    x = x + self.temporal.out(out).astype(x.dtype)
    return self._mlp(x), k, v


class STTransformer(nnx.Module):
  """A stack of ST blocks with a final norm. `remat` names a policy in REMAT_POLICIES,
  `attention` a kernel choice of genie_jax/models/attention.py.

  The blocks are one STBlock whose parameters are stacked along a leading "layers" axis
  [L, ...]. With `scan_layers` (the default) the stack runs as a `jax.lax.scan`, for two
  reasons: XLA compiles one block instead of L (minutes saved on the 24-block 10.1B
  model), and on CPU the unrolled backward let XLA fuse the residual stream's gradient
  chain into every block's consumers, recomputing it from the top each time (quadratic in
  depth); the scan keeps each block's cotangent in one buffer (README, "Training
  throughput"). Without it the same parameters run as a Python loop over layer slices:
  the same maths (a test checks), and what XLA's FLOP count needs, since it counts a
  loop body once.
  """

  def __init__(self, *, dim: int, num_layers: int, num_heads: int, head_dim: int = 0,
               mlp_ratio: int = 4, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
               remat: str = "none", scan_layers: bool = True, attention: str = "auto"):
    if remat not in REMAT_POLICIES:
      raise ValueError(f"unknown remat policy {remat!r}; choose from {sorted(REMAT_POLICIES)}")

    @nnx.split_rngs(splits=num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs):
      return STBlock(dim, num_heads, head_dim=head_dim, mlp_ratio=mlp_ratio, rngs=rngs, dtype=dtype,
                     param_dtype=param_dtype, attention=attention)

    self.blocks = make_blocks(rngs)  # every parameter [L, ...], logical names ("layers", ...)
    self.final_norm = LayerNorm(dim, name="embed", rngs=rngs, param_dtype=param_dtype)
    self.num_layers = num_layers
    self.remat = remat
    self.scan_layers = scan_layers

  def _over_layers(self, body, carry, *per_layer):
    """carry -> body(block, carry, *xs) for each layer's (block, *xs) in order -> (carry, stacked ys)."""
    graphdef, params = nnx.split(self.blocks)

    def layer(c, xs):
      return body(nnx.merge(graphdef, xs[0]), c, *xs[1:])

    xs = (params, *per_layer)
    if self.scan_layers:
      return jax.lax.scan(layer, carry, xs)
    ys = []
    for i in range(self.num_layers):
      carry, y = layer(carry, jax.tree.map(lambda a: a[i], xs))
      ys.append(y)
    return carry, jax.tree.map(lambda *a: jnp.stack(a), *ys)

  def __call__(self, x: jax.Array, *, return_kv: bool = False):
    """x [B, T, S, D] -> [B, T, S, D]; with return_kv also a KVCache of [L, B, T, S, N, Hd]."""
    x = parallel.constrain(x, ACT)
    if return_kv:
      def body_kv(block, h):
        h, k, v = block(h, return_kv=True)
        return h, (k, v)

      x, (k, v) = self._over_layers(body_kv, x)
      return self.final_norm(x), KVCache(k, v)
    x, _ = self._over_layers(self._rematerialised(lambda block, h: (block(h), None)), x)
    return self.final_norm(x)

  def _rematerialised(self, body):
    """body wrapped in the stack's remat policy (unchanged for "none")."""
    if self.remat == "none":
      return body
    # CSE cannot undo remat across scan iterations; in an unrolled loop it could
    return jax.checkpoint(body, policy=REMAT_POLICIES[self.remat], prevent_cse=not self.scan_layers)

  def forced(self, clean: jax.Array, masked: jax.Array) -> jax.Array:
    """Teacher forcing (STBlock.forced): clean, masked [B, T, S, D] -> the masked stream's
    output [B, T, S, D], frame t computed from the clean frames < t and masked frame t."""
    body = self._rematerialised(lambda block, h: (block.forced(*h), None))
    (_, masked), _ = self._over_layers(body, (parallel.constrain(clean, ACT), parallel.constrain(masked, ACT)))
    return self.final_norm(masked)

  def step(self, x: jax.Array, cache: KVCache, position: jax.Array):
    """One frame x [B, 1, S, D] at `position` -> (y [B, 1, S, D], KVCache of the new frame [L, B, 1, S, N, Hd])."""
    def body(block, h, k_cache, v_cache):
      h, k, v = block.step(h, k_cache, v_cache, position)
      return h, (k, v)

    x, (k, v) = self._over_layers(body, x, cache.k, cache.v)
    return self.final_norm(x), KVCache(k, v)
