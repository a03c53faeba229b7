r"""Generation speed: one new frame with the frame cache vs recomputing the whole context,
and many worlds stepped as one batch through the Genie API (what play and an agent see).

    python scripts/bench_sampler.py [--frames 5] [--context 15] [--batch 1] [--shapes jasmine|paper]
        [--patch P] [--dtype bfloat16] [--attention auto|xla|cudnn|pallas_tpu]
        [--env_batches 1,16] [--compare_unrolled] [--variants base,cast_weights+unroll_layers]
        [--skip_recompute] [--profile DIR] [--json out.json]

Shapes (experiments/coinrun.py): jasmine (default) is Jasmine's CoinRun dynamics (d512, 6
blocks, 8 heads, patch 16: 16 tokens + 1 action token per frame, 25 MaskGIT steps);
paper is the paper's CoinRun models (tokenizer patch 4: 256 + 1 tokens per frame).

Model part (sampling.next_frame, dynamics only): seconds per new frame with `--context`
frames before it, for the cached sampler and the recompute path (the model run over
every context frame at every MaskGIT step), their ratio, and the cost once the window is
full and the context slides.

Environment part (`--env_batches`, Genie.start + Genie.step): B worlds, each prompted with
`--context` frames, stepped together with one latent action per world; each step is
MaskGIT over the new frame, the tokenizer's decode of the window and the copy of B frames
to the host. With the default context (window - 1) every timed step slides the window:
the steady state of play, not its cheaper first frames.
Prints frames/s per world and in total for each B. Parameters are random: the speed of a
forward pass does not depend on training.

`--variants` times the cached frame and the environment once per variant, in the same
run: `base` (the config as it is), `off`, or a '+'-joined set of config.sampling's speed
switches to turn on (the others off), which change how a frame is computed and not its
values: `unroll` (the MaskGIT steps as straight-line code instead of a device loop),
`cast_weights` (on by default) and `unroll_layers` (sampling.inference_view). `--profile DIR` traces 3 environment steps of each variant at
the smallest `--env_batches` into DIR and prints where their device time went
(genie_jax/trace_summary.py), beside their wall time: device time far below wall time means
the step waits on kernel launches and loop control, not on the GPU's arithmetic.
"""
import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from experiments import coinrun  # noqa: E402
from genie_jax import benchmark, parallel, sampling, trace_summary  # noqa: E402
from genie_jax.genie import Genie  # noqa: E402
from genie_jax.models import attention, build  # noqa: E402


def seconds_per_frame(graphdef, params, state, sampling_kwargs, frames):
  """(seconds per generated frame, the compiled generate function)."""
  def generate(params, state, rng):
    return sampling.next_frame(nnx.merge(graphdef, params), state, jnp.zeros((state.tokens.shape[0],), jnp.int32),
                               rng, **sampling_kwargs)

  compiled = jax.jit(generate).lower(params, state, jax.random.PRNGKey(0)).compile()
  jax.block_until_ready(compiled(params, state, jax.random.PRNGKey(0)))
  start = time.perf_counter()
  for i in range(frames):
    out = compiled(params, state, jax.random.PRNGKey(i + 1))
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / frames, compiled


def random_genie(config, steps: int) -> Genie:
  """A Genie (tokenizer + LAM + dynamics) with random parameters on one device."""
  tok_graphdef, tok_params = nnx.split(build.make_tokenizer(config, nnx.Rngs(1)))
  world_graphdef, world_params = nnx.split(build.make_trainable(config, nnx.Rngs(2)))
  return Genie(config=config, tokenizer_graphdef=tok_graphdef, world_graphdef=world_graphdef,
               params={"tokenizer": tok_params, "world": world_params},
               mesh=parallel.make_mesh(data=1, devices=jax.devices()[:1]), steps=steps)


PROFILED_STEPS = 3
SPEED_SWITCHES = tuple(sampling.SPEED_DEFAULTS)  # config.sampling's; the same values


def variant_switches(name: str) -> dict:
  """'base' -> {} (the config as it is); 'off' -> every switch off; 'cast_weights+unroll_layers'
  -> those two on, the others off."""
  if name == "base":
    return {}
  switches = [] if name == "off" else name.split("+")
  unknown = sorted(set(switches) - set(SPEED_SWITCHES))
  if unknown:
    raise SystemExit(f"--variants: unknown switch(es) {unknown}; choose from base, off or {list(SPEED_SWITCHES)}")
  return {switch: switch in switches for switch in SPEED_SWITCHES}


def env_frames_per_second(genie: Genie, batch: int, frames: int, context: int, profile_dir: str = "") -> float:
  """Total frames/s of `batch` worlds stepped together (compile excluded), each prompted
  with `context` frames: with the default 15 of a 16-frame window, the first step fills
  the window and every timed step slides it, as play does once it has run a while.
  With `profile_dir`, 3 more steps are traced there and their summary printed."""
  rng = np.random.default_rng(0)
  h, w, _ = genie.frame_shape
  state = genie.start(rng.integers(0, 256, (batch, context, h, w, 3), dtype=np.uint8))
  actions = rng.integers(0, genie.num_actions, (frames + 2, batch))
  state, _ = genie.step(state, actions[0], seed=0)  # compile (fills the window)
  state, _ = genie.step(state, actions[1], seed=1)  # compile the sliding step
  start = time.perf_counter()
  for i in range(2, frames + 2):  # each step returns its frames on the host, as an environment does
    state, _ = genie.step(state, actions[i], seed=i)
  fps = batch * frames / (time.perf_counter() - start)
  if profile_dir:
    try:  # a profiler that cannot start loses the profile, not the timing
      with jax.profiler.trace(profile_dir):
        start = time.perf_counter()
        for i in range(PROFILED_STEPS):
          state, _ = genie.step(state, actions[i], seed=frames + 2 + i)
        wall = (time.perf_counter() - start) / PROFILED_STEPS
      print(f"profile of {batch} world(s), {wall * 1000:.2f} ms of wall time per step (traced):\n"
            + trace_summary.summary(trace_summary.latest_trace(profile_dir), steps=PROFILED_STEPS), flush=True)
    except Exception as error:
      print(f"no profile: {type(error).__name__}: {str(error)[:300]}", flush=True)
  return fps


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frames", type=int, default=5, help="timed frames per measurement")
  parser.add_argument("--context", type=int, default=15, help="frames before the new one")
  parser.add_argument("--batch", type=int, default=1, help="batch of the model part")
  parser.add_argument("--steps", type=int, default=25, help="MaskGIT steps per frame")
  parser.add_argument("--shapes", choices=("jasmine", "paper"), default="jasmine")
  parser.add_argument("--patch", type=int, default=0, help="tokenizer patch (sets tokens per frame)")
  parser.add_argument("--dtype", choices=sorted(build.DTYPES), default="float32")
  parser.add_argument("--attention", choices=attention.IMPLEMENTATIONS, default="auto")
  parser.add_argument("--env_batches", default="", help="comma-separated world counts, e.g. 1,16")
  parser.add_argument("--skip_model", action="store_true", help="only the environment part")
  parser.add_argument("--compare_unrolled", action="store_true",
                      help="also time the cached step with config.scan_layers=False")
  parser.add_argument("--variants", default="base",
                      help="comma list: base, off, or '+'-joined switches of " + ", ".join(SPEED_SWITCHES))
  parser.add_argument("--skip_recompute", action="store_true", help="do not time the recompute path")
  parser.add_argument("--profile", default="", help="trace 3 environment steps of the smallest batch into this folder")
  parser.add_argument("--json", default="", help="also write the results to this JSON file")
  args = parser.parse_args()

  config = coinrun.get_config("bench_dynamics" if args.shapes == "jasmine" else "lam_dynamics")
  config.dtype, config.attention = args.dtype, args.attention
  if args.patch:
    config.tokenizer.patch = args.patch
  window = config.data.window
  if not 1 <= args.context < window:
    parser.error(f"--context must be in 1..{window - 1} (the window is {window} frames)")
  env_batches = [int(b) for b in args.env_batches.split(",") if b]
  variants = [v for v in args.variants.split(",") if v]
  for name in variants:
    variant_switches(name)  # a typo stops the run before anything compiles
  device = jax.devices()[0]
  dynamics = build.make_dynamics(config, nnx.Rngs(0))
  tokens_per_frame = dynamics.tokens_per_frame
  extra = "+1" if config.dynamics.action_conditioning == "token" else ""
  print(f"dynamics d{config.dynamics.dim}, {config.dynamics.num_blocks} blocks, {config.dynamics.num_heads} "
        f"heads, {tokens_per_frame}{extra} tokens/frame, {args.steps} MaskGIT steps, {args.dtype}, "
        f"{device.device_kind} ({device.platform}), attention {attention.describe(args.attention, device=device)}",
        flush=True)
  def save():  # --json, rewritten as each part ends
    if args.json:
      with open(args.json, "w") as f:
        json.dump(results, f, indent=2)

  results = {"device": device.device_kind, "dtype": args.dtype, "attention": args.attention,
             "tokens_per_frame": tokens_per_frame, "maskgit_steps": args.steps}
  if not args.skip_model:
    graphdef, params = nnx.split(dynamics)
    rng = jax.random.PRNGKey(0)
    prompt = jax.random.randint(rng, (args.batch, window, tokens_per_frame), 0, dynamics.num_codes)
    prompt_actions = jax.random.randint(rng, (args.batch, window), 0, dynamics.num_actions)
    kw = dict(steps=args.steps, temperature=1.0, gumbel_scale=1.0)

    def state(graphdef, context, cached):
      return jax.jit(lambda p, t, a: sampling.init_state(nnx.merge(graphdef, p), t, a, max_frames=window,
                                                         cached=cached))(params, prompt[:, :context],
                                                                         prompt_actions[:, :context])

    print(f"batch {args.batch}:")
    if not args.skip_recompute:
      recompute, _ = seconds_per_frame(graphdef, params, state(graphdef, args.context, False), kw, args.frames)
      print(f"recompute, {args.context} context frames: {recompute:.3f} s/frame")
      results["recompute_s"] = recompute
    cached, compiled = seconds_per_frame(graphdef, params, state(graphdef, args.context, True), kw, args.frames)
    sliding, _ = seconds_per_frame(graphdef, params, state(graphdef, window, True), kw, args.frames)
    versus = "" if args.skip_recompute else f"{results['recompute_s'] / cached:.1f}x faster than recompute, "
    print(f"cached,    {args.context} context frames: {cached:.3f} s/frame  ({versus}{args.batch / cached:.1f} "
          f"frames/s; {benchmark.peak_memory(compiled, device)})")
    print(f"cached, window full (slide + re-encode {window - 1} frames): {sliding:.3f} s/frame "
          f"({args.batch / sliding:.1f} frames/s)", flush=True)
    results.update(batch=args.batch, context=args.context, cached_s=cached, window_full_s=sliding)
    for name in (v for v in variants if v != "base"):  # base is the timing above
      faster, _ = seconds_per_frame(graphdef, params, state(graphdef, window, True),
                                    dict(kw, **variant_switches(name)), args.frames)
      results[f"window_full_s_{name}"] = faster
      print(f"cached, window full, {name}: {faster:.4f} s/frame ({args.batch / faster:.1f} frames/s) -> "
            f"{sliding / faster:.2f}x the config's speed", flush=True)
    if args.compare_unrolled:
      config.scan_layers = False
      unrolled_graphdef = nnx.graphdef(nnx.eval_shape(lambda: build.make_dynamics(config, nnx.Rngs(0))))
      unrolled, _ = seconds_per_frame(unrolled_graphdef, params, state(unrolled_graphdef, args.context, True), kw,
                                      args.frames)  # the same params, layers unrolled
      config.scan_layers = True
      results["cached_unrolled_s"] = unrolled
      print(f"cached, unrolled layers: {unrolled:.3f} s/frame -> the scan is {unrolled / cached:.2f}x faster")
    save()
  base_sampling = dict(config.sampling)
  for name in variants if env_batches else ():
    config.sampling.update(base_sampling)
    config.sampling.update(variant_switches(name))  # read by Genie when it is built
    genie = random_genie(config, args.steps)
    key = "env_frames_per_second" + ("" if name == "base" else f"_{name}")
    results[key] = {}
    for batch in env_batches:
      profile_dir = (os.path.join(args.profile, f"env_b{batch}_{name.replace('+', '_')}")
                     if args.profile and batch == min(env_batches) else "")
      fps = env_frames_per_second(genie, batch, args.frames, args.context, profile_dir)
      results[key][batch] = fps
      print(f"environment, {name}, {batch:3d} world(s) stepped as one batch: "
            f"{fps:7.2f} frames/s in total, {fps / batch:.2f} per world", flush=True)
    if len(env_batches) > 1:
      lo, hi = min(env_batches), max(env_batches)
      print(f"batch {hi} vs {lo}: {results[key][hi] / results[key][lo]:.1f}x the total frames/s", flush=True)
    save()  # after each variant, so a run stopped at its limit keeps what it measured
  save()


if __name__ == "__main__":
  main()
