r"""Does the fused attention kernel agree with XLA's path at the model's shapes, and what
does it save? Forward and gradients, per case, against a float32 reference.

    python scripts/attention_check.py [--kernel cudnn|pallas_tpu] [--dtype bfloat16] [--json out.json]

The kernel defaults to this platform's fused one: cuDNN on an NVIDIA GPU, Pallas splash
attention on TPU, and on CPU the splash kernel in Pallas' interpreter at reduced sizes
(`--small` is then implied: a check of this script, not of speed).

Cases: spatial attention over a frame's tokens (CoinRun patch 4: 256, +1 action token;
Platformers 11B: 920 + 1 with 36 heads of 128), causal temporal attention over 16 frames
(up to ~70k merged rows, past the 65,535 a CUDA grid's y/z axis allows), and the frame
cache's step (1 query against 16 cached slots with per-row lengths). For each, the
kernel and XLA both run in --dtype on the same inputs, and both are compared with XLA in
float32 on those inputs (the reference); the kernel passes when its error is at most
twice XLA's own (+1e-3), for the output and for the gradients of q, k and v. Also
printed: each path's fwd+bwd time and the compiled program's temporary memory.
"""
import argparse
import contextlib
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from genie_jax import benchmark
from genie_jax.models import attention
from genie_jax.models.st_transformer import STTransformer

# name: (merged batch B', q_len, kv_len, heads, head_dim, causal, with kv lengths)
CASES = {
    "spatial_256_coinrun": (768, 256, 256, 8, 64, False, False),
    "spatial_257_action_token": (768, 257, 257, 8, 64, False, False),
    "spatial_921_platformers_11b": (64, 921, 921, 36, 128, False, False),
    "temporal_16_causal": (12336, 16, 16, 8, 64, True, False),
    "temporal_16_causal_70k_rows": (70000, 16, 16, 8, 64, True, False),
    "cache_step_16_slots_lengths": (4112, 1, 16, 8, 64, False, True),
}
SMALL = {  # CPU, interpreter: the same kinds of case, small
    "spatial_17": (4, 17, 17, 2, 16, False, False),
    "spatial_130": (2, 130, 130, 2, 16, False, False),
    "temporal_16_causal": (6, 16, 16, 2, 16, True, False),
    "cache_step_16_slots_lengths": (6, 1, 16, 2, 16, False, True),
}


def _inputs(case, dtype, seed=0):
  b, lq, lk, n, hd, _, with_lengths = case
  keys = jax.random.split(jax.random.key(seed), 5)
  q = jax.random.normal(keys[0], (b, lq, n, hd), jnp.float32).astype(dtype)
  k = jax.random.normal(keys[1], (b, lk, n, hd), jnp.float32).astype(dtype)
  v = jax.random.normal(keys[2], (b, lk, n, hd), jnp.float32).astype(dtype)
  weights = jax.random.normal(keys[3], (b, lq, n, hd), jnp.float32)
  lengths = jax.random.randint(keys[4], (b,), 1, lk + 1).astype(jnp.int32) if with_lengths else None
  return q, k, v, weights, lengths


def _fwd_bwd(implementation, causal, lengths, interpret):
  def f(q, k, v, weights):
    def loss(q, k, v):
      out = attention.attend(q, k, v, causal=causal, kv_lengths=lengths, implementation=implementation,
                             interpret=interpret)
      return jnp.sum(weights * out.astype(jnp.float32)), out
    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    return out, grads
  return f


def _timed(compiled, args, repeats):
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def check_case(name, case, *, kernel, dtype, interpret, repeats):
  q, k, v, weights, lengths = _inputs(case, dtype)
  causal = case[5]
  runs = {}
  for impl, cast in ((kernel, dtype), ("xla", dtype), ("reference", jnp.float32)):
    f = _fwd_bwd("xla" if impl == "reference" else impl, causal, lengths, interpret)
    args = tuple(a.astype(cast) for a in (q, k, v)) + (weights,)
    compiled = jax.jit(f).lower(*args).compile()
    out, grads = compiled(*args)
    runs[impl] = {"values": (out,) + tuple(grads), "compiled": compiled, "args": args}
  ref = [np.asarray(a, np.float32) for a in runs["reference"]["values"]]
  err = {impl: [float(np.max(np.abs(np.asarray(a, np.float32) - r))) for a, r in zip(runs[impl]["values"], ref)]
         for impl in (kernel, "xla")}
  ok = all(e_k <= 2 * e_x + 1e-3 for e_k, e_x in zip(err[kernel], err["xla"]))
  result = {"case": name, "shape": list(case[:5]), "causal": causal, "kv_lengths": case[6], "ok": ok,
            "max_abs_error": err}
  for impl in (kernel, "xla"):
    result[f"{impl}_ms"] = 1000 * _timed(runs[impl]["compiled"], runs[impl]["args"], repeats)
    result[f"{impl}_compiled_gib"] = (benchmark.compiled_bytes(runs[impl]["compiled"]) or 0) / benchmark.GIB
  return result


def check_stack(*, kernel, dtype, interpret):
  """A 2-block ST stack with the kernel vs XLA (same parameters), and the kernel's cached
  step (kv lengths) vs its own full forward at that frame."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  kw = dict(dim=64, num_layers=2, num_heads=4, rngs=nnx.Rngs(0), dtype=dtype)
  fused, xla = STTransformer(attention=kernel, **kw), STTransformer(attention="xla", **kw)
  nnx.update(fused, nnx.state(xla))
  x = jax.random.normal(jax.random.key(1), (2, 6, 17, 64)).astype(dtype)
  with attention.pallas_interpret() if interpret else contextlib.nullcontext():
    y, y_xla = fused(x), xla(x)
    _, cache = fused(x[:, :5], return_kv=True)
    pad = lambda a: jnp.pad(a, ((0, 0), (0, 0), (0, 11), (0, 0), (0, 0), (0, 0)))  # 16 slots, 5 filled
    step, _ = fused.step(x[:, 5:6], type(cache)(pad(cache.k), pad(cache.v)), jnp.int32(5))
  f32 = lambda a: np.asarray(a, np.float32)
  stack_err = float(np.max(np.abs(f32(y) - f32(y_xla))))
  step_err = float(np.max(np.abs(f32(step) - f32(y[:, 5:6]))))
  tol = 1e-4 if jnp.dtype(dtype) == jnp.float32 else 0.1  # bf16 through 2 blocks of LayerNorm'd activations
  return {"case": "st_stack_and_cached_step", "ok": stack_err <= tol and step_err <= tol,
          "stack_vs_xla_max_abs": stack_err, "cached_step_vs_full_max_abs": step_err, "tolerance": tol}


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--kernel", choices=("cudnn", "pallas_tpu"), default=None)
  ap.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None)
  ap.add_argument("--small", action="store_true", help="small shapes (implied on CPU)")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--json", default="")
  args = ap.parse_args()
  device = jax.devices()[0]
  interpret = device.platform == "cpu"
  kernel = args.kernel or ("cudnn" if device.platform == "gpu" else "pallas_tpu")
  dtype = jnp.dtype(args.dtype or ("float32" if interpret else "bfloat16"))
  cases = SMALL if (args.small or interpret) else CASES
  print(f"{device.device_kind} ({device.platform}), jax {jax.__version__}: {kernel} vs XLA in {dtype.name}"
        f"{' (Pallas interpreter)' if interpret else ''}", flush=True)
  results = []
  for name, case in cases.items():
    try:
      r = check_case(name, case, kernel=kernel, dtype=dtype, interpret=interpret, repeats=args.repeats)
    except Exception as e:  # one case's failure (an unsupported shape) must not hide the others
      r = {"case": name, "ok": False, "error": f"{type(e).__name__}: {str(e)[:500]}"}
    results.append(r)
    if "error" in r:
      print(f"{name:32s} FAILED {r['error']}", flush=True)
      continue
    e = r["max_abs_error"]
    print(f"{name:32s} {'ok ' if r['ok'] else 'BAD'} max|err| out/dq/dk/dv {kernel} "
          f"{'/'.join(f'{x:.1e}' for x in e[kernel])} vs xla {'/'.join(f'{x:.1e}' for x in e['xla'])}; "
          f"fwd+bwd {r[f'{kernel}_ms']:.2f} ms vs {r['xla_ms']:.2f} ms; compiled "
          f"{r[f'{kernel}_compiled_gib']:.3f} GiB vs {r['xla_compiled_gib']:.3f} GiB", flush=True)
  try:
    stack = check_stack(kernel=kernel, dtype=dtype, interpret=interpret)
  except Exception as e:
    stack = {"case": "st_stack_and_cached_step", "ok": False, "error": f"{type(e).__name__}: {str(e)[:500]}"}
  results.append(stack)
  print(f"{'st_stack_and_cached_step':32s} {'ok ' if stack['ok'] else 'BAD'} "
        f"{ {k: v for k, v in stack.items() if k not in ('case', 'ok')} }", flush=True)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"device": device.device_kind, "jax": jax.__version__, "kernel": kernel, "dtype": dtype.name,
                 "results": results}, f, indent=2)
  sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
  main()
