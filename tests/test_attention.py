"""The attention kernels against a NumPy reference and each other, on CPU.

The Pallas TPU (splash) kernel runs here in Pallas' interpreter: the same kernel code,
padding, segment ids and shard_map that run on a TPU, at CPU speed. cuDNN cannot run
here; what is checked is that "auto" never picks it off an NVIDIA GPU and that forcing
it fails with a message naming why (scripts/gpu_check.sh compares it on a GPU)."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genie_jax import parallel
from genie_jax.models import attention
from genie_jax.models.st_transformer import STTransformer


def _np_attention(q, k, v, *, causal=False, kv_lengths=None):
  """q [B, Lq, N, H], k/v [B, Lk, N, H] in float64, masks applied as -inf logits."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  logits = np.einsum("bqnh,bknh->bnqk", q, k) / np.sqrt(q.shape[-1])
  allowed = np.ones(logits.shape, bool)
  if causal:
    allowed &= np.tril(np.ones(logits.shape[-2:], bool))
  if kv_lengths is not None:
    allowed &= (np.arange(k.shape[1])[None, :] < np.asarray(kv_lengths)[:, None])[:, None, None, :]
  logits = np.where(allowed, logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  return np.einsum("bnqk,bknh->bqnh", w / w.sum(-1, keepdims=True), v)


def _qkv(batch, q_len, kv_len, heads=2, head_dim=16, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(batch, q_len, heads, head_dim)).astype(np.float32),
          *rng.normal(size=(2, batch, kv_len, heads, head_dim)).astype(np.float32))


# (q_len, kv_len, causal, kv_lengths): spatial attention over 17 tokens (padded to 128),
# causal temporal attention over 16 frames, the frame cache's step (1 query, 16 cached
# slots, per-row lengths), and sequences longer than one 128-long block
CASES = {
    "spatial_17": (17, 17, False, None),
    "temporal_causal_16": (16, 16, True, None),
    "cache_step_lengths": (1, 16, False, [1, 7, 16]),
    "spatial_200_two_blocks": (200, 200, False, None),
    "causal_130_with_lengths": (130, 130, True, [130, 64, 3]),
}


@pytest.mark.parametrize("implementation", ["xla", "auto", "pallas_tpu"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_kernel_matches_numpy(implementation, case):
  q_len, kv_len, causal, lengths = CASES[case]
  q, k, v = _qkv(3, q_len, kv_len)
  kv_lengths = None if lengths is None else jnp.asarray(lengths, jnp.int32)
  got = attention.attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), causal=causal, kv_lengths=kv_lengths,
                         implementation=implementation, interpret=implementation == "pallas_tpu")
  np.testing.assert_allclose(got, _np_attention(q, k, v, causal=causal, kv_lengths=lengths), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["spatial_17", "temporal_causal_16", "causal_130_with_lengths"])
def test_pallas_gradients_match_xla(case):
  """The splash kernel's own backward (dq and dk/dv kernels) against XLA's autodiff."""
  q_len, kv_len, causal, lengths = CASES[case]
  q, k, v = (jnp.asarray(a) for a in _qkv(3, q_len, kv_len, seed=1))
  kv_lengths = None if lengths is None else jnp.asarray(lengths, jnp.int32)
  weights = jax.random.normal(jax.random.key(0), q.shape)

  def loss(implementation, q, k, v):
    out = attention.attend(q, k, v, causal=causal, kv_lengths=kv_lengths, implementation=implementation,
                           interpret=True)
    return jnp.sum(weights * out)

  grads = {impl: jax.grad(loss, argnums=(1, 2, 3))(impl, q, k, v) for impl in ("xla", "pallas_tpu")}
  for got, want in zip(grads["pallas_tpu"], grads["xla"]):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.eight_devices
def test_pallas_under_a_mesh_runs_in_shard_map_and_agrees():
  """On 8 devices split data x fsdp x tensor, the kernel runs per shard (batch over data
  and fsdp, heads over tensor) and gives the single-device values."""
  q, k, v = _qkv(4, 17, 17, heads=2)
  mesh = parallel.make_mesh(data=2, fsdp=2, tensor=2)
  with parallel.use_mesh_rules(mesh, parallel.DEFAULT_RULES):
    run = jax.jit(lambda q, k, v: attention.attend(q, k, v, implementation="pallas_tpu", interpret=True))
    got = run(q, k, v)
    assert "shard_map" in str(jax.make_jaxpr(run)(q, k, v))
  np.testing.assert_allclose(got, _np_attention(q, k, v), rtol=1e-5, atol=1e-5)


def test_stack_with_pallas_equals_xla_forward_gradient_and_cached_step():
  """A whole ST stack (spatial, causal temporal, and the cached step with kv lengths)
  built with attention="pallas_tpu" gives what the same parameters give on XLA."""
  kw = dict(dim=32, num_layers=1, num_heads=2, rngs=nnx.Rngs(0))
  xla, pallas = STTransformer(attention="xla", **kw), STTransformer(attention="pallas_tpu", **kw)
  nnx.update(pallas, nnx.state(xla))
  x = jax.random.normal(jax.random.key(1), (2, 5, 6, 32))
  loss = lambda model: jnp.sum(jnp.sin(model(x)))
  with attention.pallas_interpret():
    outputs = [(m(x), jax.tree.leaves(nnx.grad(loss)(m))) for m in (pallas, xla)]
    _, cache = pallas(x[:, :4], return_kv=True)
    pad = lambda a: jnp.pad(a, ((0, 0), (0, 0), (0, 3), (0, 0), (0, 0), (0, 0)))  # 7 slots, 4 filled
    step, _ = pallas.step(x[:, 4:5], type(cache)(pad(cache.k), pad(cache.v)), jnp.int32(4))
  (y, grads), (y_ref, grads_ref) = outputs
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(grads, grads_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(step, y_ref[:, 4:5], rtol=1e-5, atol=1e-5)


def _device(platform, kind="", version="", capability=None):
  return types.SimpleNamespace(platform=platform, device_kind=kind, compute_capability=capability,
                               client=types.SimpleNamespace(platform_version=version))


H100 = _device("gpu", "NVIDIA H100 80GB HBM3", "PJRT C API\ncuda 13000", "9.0")
V5P = _device("tpu", "TPU v5")


def test_auto_picks_per_platform_and_says_why_it_falls_back():
  choose = lambda device, **kw: attention.choose("auto", device=device, **{
      **dict(dtype=jnp.bfloat16, head_dim=64, q_len=921, kv_len=921), **kw})
  assert choose(jax.devices()[0]) == ("xla", None)  # this CPU: XLA, nothing to report
  assert choose(jax.devices()[0], dtype=jnp.float32) == ("xla", None)
  assert choose(H100) == ("cudnn", None)
  kernel, why = choose(H100, dtype=jnp.float32)
  assert kernel == "xla" and "bfloat16 or float16, not float32" in why
  kernel, why = choose(H100, head_dim=12)
  assert kernel == "xla" and "multiple of 8" in why
  assert choose(H100, q_len=257, kv_len=257) == ("cudnn", None)  # odd: padded by cudnn_rules_applied
  kernel, why = choose(H100, q_len=16, kv_len=16, causal=True)  # temporal attention: XLA was faster
  assert kernel == "xla" and "shorter than 128" in why
  assert attention.choose("cudnn", device=H100, dtype=jnp.bfloat16, head_dim=64, q_len=16,
                          kv_len=16) == ("cudnn", None)  # forced: runs
  assert choose(V5P) == ("pallas_tpu", None)
  kernel, why = choose(V5P, q_len=16, kv_len=16)  # temporal attention over 16 frames
  assert kernel == "xla" and "shorter than the splash kernel's 128-long blocks" in why
  assert attention.choose("pallas_tpu", device=V5P, dtype=jnp.bfloat16, head_dim=64, q_len=16,
                          kv_len=16) == ("pallas_tpu", None)  # forced: padded, never refused


def test_forcing_a_kernel_this_backend_lacks_is_a_clear_error():
  model = STTransformer(dim=32, num_layers=1, num_heads=2, rngs=nnx.Rngs(0), attention="cudnn")
  with pytest.raises(attention.AttentionUnavailable, match="attention='cudnn' cannot run: .*needs an NVIDIA GPU"):
    model(jnp.zeros((1, 2, 3, 32)))
  with pytest.raises(attention.AttentionUnavailable, match="attention='pallas_tpu' cannot run: .*needs a TPU"):
    attention.attend(*(jnp.zeros((1, 3, 2, 16)),) * 3, implementation="pallas_tpu")
  with pytest.raises(attention.AttentionUnavailable, match="float16, not float32"):
    attention.choose("cudnn", device=H100, dtype=jnp.float32, head_dim=64, q_len=16, kv_len=16)
  with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
    STTransformer(dim=32, num_layers=1, num_heads=2, rngs=nnx.Rngs(0), attention="flash")


@pytest.mark.parametrize("q_len,kv_len,causal,lengths", [
    (17, 17, False, None),         # the dynamics' 256 + 1 and the LAM's 16 + 1, small
    (17, 17, True, None),
    (1, 16, False, [1, 7, 16, 3, 9]),  # the frame cache's step: one query
    (5, 7, False, [7, 1, 4, 2, 6]),
])
def test_cudnn_rules_pad_odd_lengths_and_slice_rows_without_changing_the_result(q_len, kv_len, causal, lengths):
  """cudnn_rules_applied around XLA's path (cuDNN needs a GPU): every call it makes has
  even lengths and at most max_rows rows, and output and gradients equal the unpadded,
  unsliced call's."""
  q, k, v = (jnp.asarray(a) for a in _qkv(5, q_len, kv_len, seed=2))
  kv_lengths = None if lengths is None else jnp.asarray(lengths, jnp.int32)
  weights = jax.random.normal(jax.random.key(1), q.shape)
  calls = []

  def xla(q, k, v, causal, kv_lengths):
    calls.append((q.shape[0], q.shape[1], k.shape[1]))
    return jax.nn.dot_product_attention(q, k, v, is_causal=causal, key_value_seq_lengths=kv_lengths)

  def loss(q, k, v, ruled):
    out = (attention.cudnn_rules_applied(xla, q, k, v, causal=causal, kv_lengths=kv_lengths, max_rows=2) if ruled
           else xla(q, k, v, causal, kv_lengths))
    return jnp.sum(weights * out), out

  (_, got), got_grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, True)
  ruled_calls, calls[:] = list(calls), []
  (_, want), want_grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, False)
  assert [rows for rows, _, _ in ruled_calls] == [2, 2, 1]
  assert all(lq % 2 == 0 and lk % 2 == 0 for _, lq, lk in ruled_calls)
  np.testing.assert_allclose(got, _np_attention(q, k, v, causal=causal, kv_lengths=lengths), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
