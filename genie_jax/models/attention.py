"""Which attention kernel runs, chosen by the code for the platform being compiled for.

`jax.nn.dot_product_attention` with implementation=None is XLA's path in jax 0.10 and
0.11: it materialises every [Lq, Lk] matrix of logits and probabilities. At the paper's
921 tokens per frame that is gigabytes per layer, so the fused kernels are chosen here:

  "auto"        NVIDIA GPU: cuDNN flash attention for bfloat16/float16 with a head size
                cuDNN takes and sequences of at least 128 (XLA was faster below:
                CUDNN_MIN_LENGTH), else XLA. TPU: the Pallas splash kernel for sequences of at
                least 128 (its block), else XLA. CPU and anything else: XLA. Every
                fallback is logged once, with its reason.
  "xla"         XLA's materialising path everywhere.
  "cudnn"       `jax.nn.dot_product_attention(..., implementation="cudnn")`; a clear
                error where it cannot run (not an NVIDIA GPU, float32, head size).
                Odd lengths are padded to even and calls of more than 65,535 rows
                are sliced, two limits jax does not check (cudnn_rules_applied).
  "pallas_tpu"  `jax.experimental.pallas.ops.tpu.splash_attention` for every sequence,
                padded to a multiple of 128; an error off TPU (tests run it on CPU in
                Pallas' interpret mode, `interpret=True`).

The platform is that of the enclosing mesh's devices when there is one (genie_jax.aot
compiles for a TPU topology from a CPU host, where jax.default_backend() says "cpu"),
else jax's default backend. Under a mesh the splash kernel runs inside shard_map, split
along the batch and heads the way the sharding rules split them: a Pallas call is opaque
to XLA's partitioner, which would otherwise gather the whole batch onto every chip.

Shapes: q [B', Lq, N, Hd], k and v [B', Lk, N, Hd] (B' is any merged batch: B*T frames
for spatial attention, B*S positions for temporal), kv_lengths int32 [B'] or None.
Logits and softmax are float32 in every kernel.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import math

import jax
import jax.numpy as jnp

from genie_jax import parallel

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "pallas_tpu")
PALLAS_BLOCK = 128  # the splash kernel's sequence blocks are multiples of 128 lanes
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
CUDNN_MAX_ROWS = 65_535  # merged batch rows per cuDNN call (see cudnn_rules_applied)
# `auto` keeps shorter sequences on XLA: on an H100 (jax 0.11.2, bf16, forward + backward)
# causal attention over 16 frames x 12,336 rows took 6.35 ms with cuDNN and 3.03 ms with
# XLA, while 256 tokens x 768 frames took 2.95 ms vs 7.84 (scripts/attention_check.py)
CUDNN_MIN_LENGTH = 128

_log = logging.getLogger(__name__)
_logged: set[str] = set()
_INTERPRET: contextvars.ContextVar = contextvars.ContextVar("genie_pallas_interpret", default=False)


@contextlib.contextmanager
def pallas_interpret():
  """Within this context (at trace time) the Pallas TPU kernel runs in Pallas' interpreter,
  so that models built with attention="pallas_tpu" run, slowly, on CPU (tests)."""
  token = _INTERPRET.set(True)
  try:
    yield
  finally:
    _INTERPRET.reset(token)


class AttentionUnavailable(ValueError):
  """A forced attention kernel cannot run on this platform, dtype or shape."""


def check_implementation(implementation: str) -> str:
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"unknown attention implementation {implementation!r}; choose from {IMPLEMENTATIONS}")
  return implementation


def target_device():
  """The device compiled for: the enclosing mesh's first device, else jax's default device."""
  current = parallel.current_mesh_rules()
  return current[0].devices.flat[0] if current is not None else jax.devices()[0]


def _is_nvidia(device) -> bool:
  return device.platform == "gpu" and "cuda" in getattr(device.client, "platform_version", "").lower()


def _cudnn_problem(device, dtype, head_dim: int, q_len: int, kv_len: int, causal: bool) -> str | None:
  """Why cuDNN flash attention cannot take this call (None: it can). Its rules are those
  jax checks (jax/_src/cudnn/fused_attention_stablehlo.py) for bf16/fp16."""
  if not _is_nvidia(device):
    return f"cuDNN flash attention needs an NVIDIA GPU; this is {device.platform} ({device.device_kind})"
  if jnp.dtype(dtype) not in [jnp.dtype(d) for d in CUDNN_DTYPES]:
    return (f"cuDNN flash attention takes bfloat16 or float16, not {jnp.dtype(dtype).name} "
            "(--config.dtype=bfloat16)")
  capability = tuple(int(x) for x in str(getattr(device, "compute_capability", None) or "0.0").split("."))
  max_head = 256 if capability >= (9, 0) else 128
  if head_dim % 8 or head_dim > max_head:
    return f"cuDNN flash attention needs a head size that is a multiple of 8 and <= {max_head}; it is {head_dim}"
  if causal and q_len != kv_len:  # our causal mask is top-left aligned; cuDNN's is not documented here
    return f"causal attention with {q_len} queries against {kv_len} keys"
  return None


def _pallas_problem(device, q_len: int, kv_len: int, *, forced: bool, interpret: bool) -> str | None:
  if device.platform != "tpu" and not interpret:
    return f"the Pallas TPU kernel needs a TPU; this is {device.platform} ({device.device_kind})"
  if not forced and max(q_len, kv_len) < PALLAS_BLOCK:
    # the materialised [L, L] matrix is smaller than one kernel block: padding costs more
    return (f"sequences of {q_len} queries x {kv_len} keys are shorter than the splash kernel's "
            f"{PALLAS_BLOCK}-long blocks")
  return None


def choose(implementation: str, *, device, dtype, head_dim: int, q_len: int, kv_len: int,
           causal: bool = False, interpret: bool = False) -> tuple[str, str | None]:
  """(kernel that runs: "xla" | "cudnn" | "pallas_tpu", why "auto" fell back to XLA or None).

  A forced kernel that cannot run raises AttentionUnavailable naming the reason."""
  check_implementation(implementation)
  if implementation == "xla":
    return "xla", None
  if implementation == "cudnn":
    problem = _cudnn_problem(device, dtype, head_dim, q_len, kv_len, causal)
    if problem:
      raise AttentionUnavailable(f"attention='cudnn' cannot run: {problem}. Use attention='auto' "
                                 "(falls back to XLA) or 'xla'.")
    return "cudnn", None
  if implementation == "pallas_tpu":
    problem = _pallas_problem(device, q_len, kv_len, forced=True, interpret=interpret)
    if problem:
      raise AttentionUnavailable(f"attention='pallas_tpu' cannot run: {problem}. Use attention='auto' "
                                 "or 'xla'.")
    return "pallas_tpu", None
  if device.platform == "gpu":
    problem = _cudnn_problem(device, dtype, head_dim, q_len, kv_len, causal)
    if not problem and max(q_len, kv_len) < CUDNN_MIN_LENGTH:
      problem = (f"sequences of {q_len} queries x {kv_len} keys are shorter than {CUDNN_MIN_LENGTH}, where "
                 "XLA was faster than cuDNN on an H100 (16-frame causal attention: 3.03 vs 6.35 ms)")
    return ("xla", problem) if problem else ("cudnn", None)
  if device.platform == "tpu":
    problem = _pallas_problem(device, q_len, kv_len, forced=False, interpret=False)
    return ("xla", problem) if problem else ("pallas_tpu", None)
  return "xla", None  # CPU: XLA is the only path, nothing to report


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool = False,
           kv_lengths: jax.Array | None = None, implementation: str = "auto",
           interpret: bool = False) -> jax.Array:
  """softmax(q k^T / sqrt(Hd) [masked]) v: q [B', Lq, N, Hd], k/v [B', Lk, N, Hd] -> [B', Lq, N, Hd].

  causal: query i sees keys <= i. kv_lengths int32 [B']: row b sees only its first
  kv_lengths[b] keys (>= 1). `interpret` (or the `pallas_interpret()` context) runs the
  Pallas kernel in Pallas' interpreter (CPU tests)."""
  interpret = interpret or _INTERPRET.get()
  kernel, reason = choose(implementation, device=target_device(), dtype=q.dtype, head_dim=q.shape[-1],
                          q_len=q.shape[1], kv_len=k.shape[1], causal=causal, interpret=interpret)
  if reason and reason not in _logged:
    _logged.add(reason)
    _log.warning("attention runs on XLA (materialised) here: %s", reason)
  if kernel == "pallas_tpu":
    return _splash(q, k, v, causal=causal, kv_lengths=kv_lengths, interpret=interpret)
  run = _dot_product_attention(kernel)
  if kernel == "cudnn":
    return cudnn_rules_applied(run, q, k, v, causal=causal, kv_lengths=kv_lengths)
  return run(q, k, v, causal, kv_lengths)


def _dot_product_attention(implementation: str):
  """jax.nn.dot_product_attention with `implementation` ("xla" | "cudnn"), called as
  run(q, k, v, causal, kv_lengths)."""
  return lambda q, k, v, causal, kv_lengths: jax.nn.dot_product_attention(
      q, k, v, is_causal=causal, key_value_seq_lengths=kv_lengths, implementation=implementation)


def cudnn_rules_applied(run, q, k, v, *, causal: bool, kv_lengths, max_rows: int = CUDNN_MAX_ROWS):
  """`run(q, k, v, causal, kv_lengths)` (cuDNN's attention) within the two rules it does not
  check for itself, measured on an H100 with jax 0.11.2:

  - Odd lengths: jax's cuDNN path refuses to differentiate attention whose query or key
    length is odd ("Unsupported sequence length Q 257, KV 257": the backward's check
    counts the placeholder of an absent bias as a bias, jax 0.10 and 0.11), which is the
    dynamics' 256 + 1 action tokens, the LAM's 16 + 1 and the 11B model's 921. Both are
    padded by one: the padded key is masked through kv_lengths, the padded query row is
    dropped (its output gets no cotangent, so it adds nothing to any gradient).
  - Rows: a call over more than 65,535 merged rows (B') fails at launch (a CUDA grid
    axis; 70,000 rows of temporal attention did, 12,336 did not) and leaves the GPU's
    stream unusable. Such calls run in slices of at most `max_rows` rows.

  The rules are applied around any `run`, so tests check them on CPU with XLA's path."""
  rows, q_len, kv_len = q.shape[0], q.shape[1], k.shape[1]
  if rows > max_rows:
    part = lambda a, s: None if a is None else a[s:s + max_rows]
    return jnp.concatenate([cudnn_rules_applied(run, part(q, s), part(k, s), part(v, s), causal=causal,
                                                kv_lengths=part(kv_lengths, s), max_rows=max_rows)
                            for s in range(0, rows, max_rows)], axis=0)
  q_pad, kv_pad = q_len % 2, kv_len % 2
  if not (q_pad or kv_pad):
    return run(q, k, v, causal, kv_lengths)
  pad = lambda a, n: jnp.pad(a, ((0, 0), (0, n), (0, 0), (0, 0)))
  if kv_pad and kv_lengths is None and not causal:
    kv_lengths = jnp.full((rows,), kv_len, jnp.int32)
  # causal attention pads queries and keys alike (their lengths are equal on cuDNN's causal
  # path, see _cudnn_problem), so the padded key follows every real query: masked already
  return run(pad(q, q_pad), pad(k, kv_pad), pad(v, kv_pad), causal, kv_lengths)[:, :q_len]


def _block(length: int) -> int:
  """The largest of 512, 256, 128 dividing `length` (a multiple of 128)."""
  return next(b for b in (512, 256, PALLAS_BLOCK) if length % b == 0)


def _splash(q, k, v, *, causal: bool, kv_lengths, interpret: bool):
  """The splash kernel, padded to 128-multiples, under shard_map when a mesh is active."""
  batch, q_len, heads, head_dim = q.shape
  kv_len = k.shape[1]
  lengths = (jnp.full((batch,), kv_len, jnp.int32) if kv_lengths is None
             else jnp.asarray(kv_lengths, jnp.int32))
  # padded keys (and those beyond kv_lengths) get segment id 0, queries 1: never attended.
  # Causal attention without lengths needs no ids: padded keys follow every real query.
  segmented = kv_lengths is not None or (not causal and kv_len % PALLAS_BLOCK != 0)
  run = lambda q, k, v, lengths: _splash_local(q, k, v, lengths, causal=causal, segmented=segmented,
                                               interpret=interpret)
  current = parallel.current_mesh_rules()
  if current is None:
    return run(q, k, v, lengths)
  mesh, rules = current
  spec = parallel.logical_to_spec(("batch", None, "act_heads", None), rules)
  qkv_spec = parallel.divisible_spec(spec, q.shape, mesh)
  length_spec = jax.sharding.PartitionSpec(qkv_spec[0])
  return jax.shard_map(run, mesh=mesh, in_specs=(qkv_spec, qkv_spec, qkv_spec, length_spec),
                       out_specs=qkv_spec, check_vma=False)(q, k, v, lengths)


def _splash_local(q, k, v, lengths, *, causal: bool, segmented: bool, interpret: bool):
  """One shard: q [b, Lq, n, Hd], k/v [b, Lk, n, Hd], lengths [b] -> [b, Lq, n, Hd]."""
  from jax.experimental.pallas.ops.tpu.splash_attention import (  # pylint: disable=g-import-not-at-top
      splash_attention_kernel as splash, splash_attention_mask as masks)
  batch, q_len, heads, head_dim = q.shape
  kv_len = k.shape[1]
  q_pad, kv_pad = (-q_len) % PALLAS_BLOCK, (-kv_len) % PALLAS_BLOCK
  # the kernel takes no scale: fold 1/sqrt(Hd) into q (in float32, then back to q's dtype)
  q = (q.astype(jnp.float32) * (1.0 / math.sqrt(head_dim))).astype(q.dtype)
  to_heads_major = lambda a, pad: jnp.pad(a, ((0, 0), (0, pad), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
  q, k, v = to_heads_major(q, q_pad), to_heads_major(k, kv_pad), to_heads_major(v, kv_pad)
  shape = (q_len + q_pad, kv_len + kv_pad)
  mask = masks.CausalMask(shape) if causal else masks.FullMask(shape)
  bq, bkv = _block(shape[0]), _block(shape[1])
  blocks = splash.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq,
                             block_kv_dkv=bkv, block_kv_dkv_compute=bkv, block_q_dq=bq, block_kv_dq=bkv)
  kernel = splash.make_splash_mha(masks.MultiHeadMask([mask] * heads), block_sizes=blocks, head_shards=1,
                                  q_seq_shards=1, interpret=interpret)
  if segmented:
    ids = splash.SegmentIds(
        q=jnp.ones((batch, shape[0]), jnp.int32),
        kv=(jnp.arange(shape[1])[None, :] < lengths[:, None]).astype(jnp.int32))
    out = jax.vmap(lambda q, k, v, ids: kernel(q, k, v, segment_ids=ids))(q, k, v, ids)
  else:
    out = jax.vmap(kernel)(q, k, v)
  return out.transpose(0, 2, 1, 3)[:, :q_len]


def describe(implementation: str, *, device=None) -> str:
  """One line for benchmarks and logs: what `implementation` means on `device`."""
  device = device or target_device()
  names = {"xla": "XLA (materialised)", "cudnn": "cuDNN flash attention",
           "pallas_tpu": "Pallas splash attention"}
  if implementation != "auto":
    return f"{implementation}: {names[check_implementation(implementation)]}"
  if device.platform == "gpu":
    return (f"auto: {names['cudnn'] if _is_nvidia(device) else names['xla']} for sequences >= {CUDNN_MIN_LENGTH}, "
            "XLA below and where cuDNN cannot take a call")
  if device.platform == "tpu":
    return f"auto: {names['pallas_tpu']} for sequences >= {PALLAS_BLOCK}, XLA below"
  return f"auto: {names['xla']} on {device.platform}"

