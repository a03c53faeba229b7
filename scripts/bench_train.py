r"""Training throughput of each model: frames/s, model TFLOP/s, MFU and peak memory.

    python scripts/bench_train.py [--steps 10] [--shapes jasmine|paper] [--parts ...]
        [--batch B] [--frames T] [--patch P] [--lam_patch P] [--dtype bfloat16]
        [--attention auto|xla|cudnn|pallas_tpu] [--remat full] [--json out.json] [--profile DIR]

Shapes (experiments/coinrun.py), overridable by the flags above:
  jasmine  Jasmine's CoinRun benchmark: 64x64, T=16, B=2, patch 16 everywhere, d512, FFW
           2048, 8 heads; tokenizer and LAM 4+4 blocks (LAM codebook 6), dynamics 6 blocks
           (16 tokens + 1 action token per frame). The default, sized for this CPU.
  paper    the paper's CoinRun models (App. F) at its batch: B=48, tokenizer patch 4
           (16x16 = 256 tokens per frame), LAM patch 16, same widths and depths. For a GPU.
  sprites  the sprite recipe's tokenizer and LAM + dynamics steps (experiments/sprites.py,
           what the quickstart trains): d64, B=4 and 8, T=8. Parts tokenizer, lam_dynamics.

Parts: tokenizer, lam, dynamics (each alone, on random frames or tokens) and
lam_dynamics (the real phase-2 step: LAM + dynamics trained on the tokens of a frozen
tokenizer). Each step is the real AdamW update (genie_jax.train.state's optimizer);
tokenizer and lam_dynamics use the trainer's own step. The header names the host's memory
allocator: like the training commands, the script runs under tcmalloc where it is installed
(genie_jax/allocator.py; GENIE_JAX_TCMALLOC=0 keeps glibc's malloc, and
scripts/bench_allocator.py compares the two). Each is compiled once ahead of
time, so its memory analysis is at hand. Prints the median step, frames/s, the model
FLOP rate (genie_jax/flops.py, 3x the forward's matmuls and attention), MFU on a GPU
whose peak is known (H100, H200, A100), and peak memory (genie_jax/benchmark.py).
Each part runs its config's layers (scan_layers; the sprite recipe's phase 2 unrolls them);
`--compare_unrolled` times each step scanned and then with scan_layers=False, in the same run.
`--profile DIR` traces 3 more steps of each part into DIR/<part> and prints where the device
time went, by kernel family and for the longest kernels (genie_jax/trace_summary.py).
"""
import argparse
import json
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from experiments import coinrun, sprites  # noqa: E402
from genie_jax import allocator, benchmark, flops, params as param_counts, trace_summary  # noqa: E402
from genie_jax.models import attention, build, dynamics as dynamics_lib, patching  # noqa: E402
from genie_jax.train import losses, state as state_lib, step as step_lib  # noqa: E402

PARTS = ("tokenizer", "lam", "dynamics", "lam_dynamics")
PROFILED_STEPS = 3
MAKE = {"tokenizer": build.make_tokenizer, "lam": build.make_lam, "dynamics": build.make_dynamics}


def lam_loss(model, batch, rng):
  del rng
  video = batch["frames"].astype(jnp.float32) / 255.0
  out = model(video)
  mse = jnp.mean(jnp.square(out.prediction - video[:, 1:]))
  return mse + out.vq_loss


def dynamics_loss(model, batch, rng):
  tokens, actions = batch["tokens"], batch["actions"]
  mask = losses.mask_tokens(rng, tokens, rate_min=0.5, rate_max=1.0)
  logits = model(jnp.where(mask, model.mask_id, tokens), dynamics_lib.frame_actions(actions, model.num_actions))
  return losses.masked_token_loss(logits, tokens, mask)[0]


def make_config(part: str, args):
  """The config of `part` at --shapes, with the flags' overrides."""
  phase = "tokenizer" if part == "tokenizer" else "dynamics"
  if args.shapes == "sprites":
    if part not in ("tokenizer", "lam_dynamics"):
      raise SystemExit(f"--shapes sprites times the recipe's tokenizer and lam_dynamics steps, not {part!r}")
    config = sprites.get_config("tokenizer" if part == "tokenizer" else "lam_dynamics")
  else:
    config = coinrun.get_config(f"bench_{phase}" if args.shapes == "jasmine" else
                                ("tokenizer" if phase == "tokenizer" else "lam_dynamics"))
  config.dtype, config.attention, config.remat = args.dtype, args.attention, args.remat
  if args.batch:
    config.train.batch_size = args.batch
  if args.frames:
    config.data.window = args.frames
  if args.patch:
    config.tokenizer.patch = args.patch
  if args.lam_patch:
    config.lam.patch = args.lam_patch
  return config


def forward_flops(part: str, config) -> float:
  """Model FLOPs of one training step of `part` (3x forward; the frozen encoder 1x)."""
  if part == "lam_dynamics":
    counts = param_counts.all_counts(config)
    tok_params = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: build.make_tokenizer(config, nnx.Rngs(0))),
                                            nnx.Param))
    counts["tokenizer_encoder"] = param_counts.count_leaves(
        {k: v for k, v in tok_params.items() if k in ("patch_in", "enc_pos", "encoder", "to_latent")})
    return flops.step_flops(config, counts)
  forward = {"tokenizer": flops.tokenizer_forward, "lam": flops.lam_forward, "dynamics": flops.dynamics_forward}
  return 3 * forward[part](config, param_counts.count_params(MAKE[part], config))


def make_runner(part: str, config, key):
  """(run: one training step -> its loss, compiled step) with the state held inside."""
  b, t = config.train.batch_size, config.data.window
  frames = jax.random.randint(key, (b, t, config.data.height, config.data.width, 3), 0, 256).astype(jnp.uint8)
  tx = state_lib.make_optimizer(config.optim, 1000)
  if part in ("tokenizer", "lam_dynamics"):
    config.phase = "tokenizer" if part == "tokenizer" else "lam_dynamics"
    state = jax.jit(lambda: state_lib.init_state(config, build.make_trainable, tx))()
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: build.make_trainable(config, nnx.Rngs(0))))
    tok_graphdef, frozen = None, None
    if part == "lam_dynamics":
      tok_graphdef, frozen = nnx.split(build.make_tokenizer(config, nnx.Rngs(1)), nnx.Param)
      frozen = nnx.to_pure_dict(frozen)
    batch = {"frames": frames, "actions": jnp.zeros((b, t), jnp.int32)}
    step = jax.jit(step_lib.make_train_step(config, graphdef, tx, state_lib.learning_rate_schedule(config.optim, 1000),
                                            tok_graphdef), donate_argnums=(0,))
    compiled = step.lower(state, batch, frozen).compile()
    holder = [state]

    def run():
      holder[0], metrics = compiled(holder[0], batch, frozen)
      return metrics["loss"]
    return run, compiled
  graphdef, params = nnx.split(MAKE[part](config, nnx.Rngs(0)), nnx.Param)
  params = nnx.to_pure_dict(params)
  if part == "lam":
    batch, loss_fn = {"frames": frames}, lam_loss
  else:
    h, w = patching.token_grid(config.data.height, config.data.width, config.tokenizer.patch)
    batch = {"tokens": jax.random.randint(key, (b, t, h * w), 0, config.tokenizer.num_codes),
             "actions": jax.random.randint(key, (b, t - 1), 0, config.lam.num_actions)}
    loss_fn = dynamics_loss

  def step(params, opt_state, batch, rng):
    loss, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p), batch, rng))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  holder = [params, tx.init(params)]
  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(holder[0], holder[1], batch, key).compile()

  def run():
    holder[0], holder[1], loss = compiled(holder[0], holder[1], batch, key)
    return loss
  return run, compiled


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--shapes", choices=("jasmine", "paper", "sprites"), default="jasmine")
  ap.add_argument("--parts", default="", help="default: tokenizer,lam,dynamics (sprites: tokenizer,lam_dynamics)")
  ap.add_argument("--batch", type=int, default=0, help="clips per step (default: the shapes')")
  ap.add_argument("--frames", type=int, default=0, help="frames per clip T (default 16)")
  ap.add_argument("--patch", type=int, default=0, help="tokenizer patch, which sets the dynamics' token grid")
  ap.add_argument("--lam_patch", type=int, default=0)
  ap.add_argument("--dtype", choices=sorted(build.DTYPES), default="float32")
  ap.add_argument("--attention", choices=attention.IMPLEMENTATIONS, default="auto")
  ap.add_argument("--remat", default="none", help="remat policy (genie_jax/models/st_transformer.py)")
  ap.add_argument("--json", default="", help="also write the results to this JSON file")
  ap.add_argument("--compare_unrolled", action="store_true",
                  help="also time each step with config.scan_layers=False and print the speed-up")
  ap.add_argument("--profile", default="", help="trace 3 steps of each part into this folder and summarise them")
  args = ap.parse_args()
  allocator.relaunch_with_tcmalloc()  # as the training commands run
  parts = (args.parts or ("tokenizer,lam_dynamics" if args.shapes == "sprites" else "tokenizer,lam,dynamics")).split(",")
  unknown = set(parts) - set(PARTS)
  if unknown:
    ap.error(f"unknown --parts {sorted(unknown)}; choose from {list(PARTS)}")
  key = jax.random.PRNGKey(0)
  device = jax.devices()[0]
  print(f"{device.device_kind} ({device.platform}), jax {jax.__version__}, attention "
        f"{attention.describe(args.attention, device=device)}, shapes {args.shapes}, remat {args.remat}, "
        f"host allocator {'tcmalloc' if allocator.tcmalloc_loaded() else 'glibc malloc'}", flush=True)
  results = []
  failed = []
  for part in parts:
    config = make_config(part, args)
    if args.compare_unrolled:  # the first timing scanned, whatever the config chose
      config.scan_layers = True
    try:
      run, compiled = make_runner(part, config, key)
      seconds = benchmark.median_seconds(run, args.steps)
    except Exception as error:  # out of memory, a kernel refused: report it, go on to the next part
      message = str(error).strip().splitlines()[0][:400] if str(error).strip() else ""
      print(f"{part:12s} FAILED at B={config.train.batch_size}: {type(error).__name__}: {message}", flush=True)
      results.append({"part": part, "error": f"{type(error).__name__}: {message}", "batch": config.train.batch_size,
                      "remat": args.remat, "attention": args.attention, "dtype": args.dtype})
      failed.append(part)
      continue
    b, t = config.train.batch_size, config.data.window
    step_flops = forward_flops(part, config)
    result = {"part": part, "seconds_per_step": seconds, "frames_per_second": b * t / seconds,
              "batch": b, "frames": t, "patch": config.tokenizer.patch, "lam_patch": config.lam.patch,
              "dtype": args.dtype, "attention": args.attention, "remat": args.remat,
              "model_flops_per_step": step_flops, "device": device.device_kind,
              "compiled_gib": (benchmark.compiled_bytes(compiled) or 0) / benchmark.GIB}
    print(f"{part:12s} {b * t / seconds:8.1f} frames/s  ({seconds * 1000:8.1f} ms/step, B={b} T={t}, "
          f"{args.dtype}, layers {'scanned' if config.scan_layers else 'unrolled'}, "
          f"{benchmark.rate_text(step_flops, seconds, args.dtype, device)}; "
          f"{benchmark.peak_memory(compiled, device)})", flush=True)
    if args.profile:
      trace_dir = os.path.join(args.profile, part)
      try:  # a profiler that cannot start (no CUPTI, say) loses the profile, not the timing
        with jax.profiler.trace(trace_dir):
          for _ in range(PROFILED_STEPS):
            jax.block_until_ready(run())
        print(trace_summary.summary(trace_summary.latest_trace(trace_dir), steps=PROFILED_STEPS), flush=True)
      except Exception as error:
        print(f"{'':12s} no profile: {type(error).__name__}: {str(error)[:300]}", flush=True)
    if args.compare_unrolled:
      config.scan_layers = False
      unrolled = benchmark.median_seconds(make_runner(part, config, key)[0], args.steps)
      result["unrolled_seconds_per_step"] = unrolled
      print(f"{'':12s} unrolled layers: {unrolled * 1000:8.1f} ms/step -> the scan is "
            f"{unrolled / seconds:.2f}x faster", flush=True)
    results.append(result)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)
  if failed:
    raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
  main()
