r"""Generation speed: one new frame with the frame cache vs recomputing the whole context,
and many worlds stepped as one batch through the Genie API (what play and an agent see).

    python scripts/bench_sampler.py [--frames 5] [--context 15] [--batch 1] [--shapes jasmine|paper]
        [--patch P] [--dtype bfloat16] [--attention auto|xla|cudnn|pallas_tpu]
        [--env_batches 1,16] [--compare_unrolled] [--json out.json]

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
from genie_jax import benchmark, parallel, sampling  # noqa: E402
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


def env_frames_per_second(genie: Genie, batch: int, frames: int, context: int) -> float:
  """Total frames/s of `batch` worlds stepped together (compile excluded), each prompted
  with `context` frames: with the default 15 of a 16-frame window, the first step fills
  the window and every timed step slides it, as play does once it has run a while."""
  rng = np.random.default_rng(0)
  h, w, _ = genie.frame_shape
  state = genie.start(rng.integers(0, 256, (batch, context, h, w, 3), dtype=np.uint8))
  actions = rng.integers(0, genie.num_actions, (frames + 2, batch))
  state, _ = genie.step(state, actions[0], seed=0)  # compile (fills the window)
  state, _ = genie.step(state, actions[1], seed=1)  # compile the sliding step
  start = time.perf_counter()
  for i in range(2, frames + 2):  # each step returns its frames on the host, as an environment does
    state, _ = genie.step(state, actions[i], seed=i)
  return batch * frames / (time.perf_counter() - start)


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
  device = jax.devices()[0]
  dynamics = build.make_dynamics(config, nnx.Rngs(0))
  tokens_per_frame = dynamics.tokens_per_frame
  extra = "+1" if config.dynamics.action_conditioning == "token" else ""
  print(f"dynamics d{config.dynamics.dim}, {config.dynamics.num_blocks} blocks, {config.dynamics.num_heads} "
        f"heads, {tokens_per_frame}{extra} tokens/frame, {args.steps} MaskGIT steps, {args.dtype}, "
        f"{device.device_kind} ({device.platform}), attention {attention.describe(args.attention, device=device)}",
        flush=True)
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

    recompute, _ = seconds_per_frame(graphdef, params, state(graphdef, args.context, False), kw, args.frames)
    cached, compiled = seconds_per_frame(graphdef, params, state(graphdef, args.context, True), kw, args.frames)
    sliding, _ = seconds_per_frame(graphdef, params, state(graphdef, window, True), kw, args.frames)
    print(f"batch {args.batch}:")
    print(f"recompute, {args.context} context frames: {recompute:.3f} s/frame")
    print(f"cached,    {args.context} context frames: {cached:.3f} s/frame  ({recompute / cached:.1f}x faster "
          f"than recompute, {args.batch / cached:.1f} frames/s; {benchmark.peak_memory(compiled, device)})")
    print(f"cached, window full (slide + re-encode {window - 1} frames): {sliding:.3f} s/frame "
          f"({args.batch / sliding:.1f} frames/s)", flush=True)
    results.update(batch=args.batch, context=args.context, recompute_s=recompute, cached_s=cached,
                   window_full_s=sliding)
    if args.compare_unrolled:
      config.scan_layers = False
      unrolled_graphdef = nnx.graphdef(nnx.eval_shape(lambda: build.make_dynamics(config, nnx.Rngs(0))))
      unrolled, _ = seconds_per_frame(unrolled_graphdef, params, state(unrolled_graphdef, args.context, True), kw,
                                      args.frames)  # the same params, layers unrolled
      config.scan_layers = True
      results["cached_unrolled_s"] = unrolled
      print(f"cached, unrolled layers: {unrolled:.3f} s/frame -> the scan is {unrolled / cached:.2f}x faster")
  if env_batches:
    genie = random_genie(config, args.steps)
    results["env_frames_per_second"] = {}
    for batch in env_batches:
      fps = env_frames_per_second(genie, batch, args.frames, args.context)
      results["env_frames_per_second"][batch] = fps
      print(f"environment, {batch:3d} world(s) stepped as one batch: {fps:7.2f} frames/s in total, "
            f"{fps / batch:.2f} per world", flush=True)
    if len(env_batches) > 1:
      lo, hi = min(env_batches), max(env_batches)
      print(f"batch {hi} vs {lo}: {results['env_frames_per_second'][hi] / results['env_frames_per_second'][lo]:.1f}x "
            "the total frames/s")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
