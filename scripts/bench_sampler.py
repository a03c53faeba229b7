r"""Generation speed of one new frame: the frame cache vs recomputing the whole context.

At the dynamics shapes of Jasmine's CoinRun config (coinrun.py:bench_dynamics: d512, 6
blocks, 8 heads, 16 tokens + 1 action token per frame, 25 MaskGIT steps), fp32 on CPU:

    python scripts/bench_sampler.py [--frames 5] [--context 15] [--batch 1]

Prints seconds per new frame (MaskGIT over one frame with `--context` frames before it)
for the cached sampler and for the recompute path (the model run over every context frame
at every MaskGIT step, as Jasmine's sampler does), their ratio, the cost once the window is
full and the context slides, and the ratio to Jasmine's quoted 5.9 s/frame. Parameters
are random: the speed of a forward pass does not depend on training.
"""
import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from experiments import coinrun  # noqa: E402
from genie_jax import sampling  # noqa: E402
from genie_jax.models import build  # noqa: E402

JASMINE_SECONDS_PER_FRAME = 5.9  # quoted in the issue: 15 context frames, this 2-core CPU


def seconds_per_frame(graphdef, params, state, sampling_kwargs, frames):
  @jax.jit
  def generate(params, state, rng):
    return sampling.next_frame(nnx.merge(graphdef, params), state, jnp.zeros((state.tokens.shape[0],), jnp.int32),
                               rng, **sampling_kwargs)

  jax.block_until_ready(generate(params, state, jax.random.PRNGKey(0)))  # compile
  start = time.perf_counter()
  for i in range(frames):
    out = generate(params, state, jax.random.PRNGKey(i + 1))
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / frames


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frames", type=int, default=5, help="timed frames per measurement")
  parser.add_argument("--context", type=int, default=15, help="frames before the new one")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--steps", type=int, default=25, help="MaskGIT steps per frame")
  parser.add_argument("--compare_unrolled", action="store_true",
                      help="also time the cached step with config.scan_layers=False")
  args = parser.parse_args()

  config = coinrun.get_config("bench_dynamics")
  window = config.data.window
  if not 1 <= args.context < window:
    parser.error(f"--context must be in 1..{window - 1} (the window is {window} frames)")
  dynamics = build.make_dynamics(config, nnx.Rngs(0))
  graphdef, params = nnx.split(dynamics)
  tokens_per_frame = dynamics.tokens_per_frame
  rng = jax.random.PRNGKey(0)
  prompt = jax.random.randint(rng, (args.batch, window, tokens_per_frame), 0, dynamics.num_codes)
  prompt_actions = jax.random.randint(rng, (args.batch, window), 0, dynamics.num_actions)
  kw = dict(steps=args.steps, temperature=1.0, gumbel_scale=1.0)

  def state(graphdef, context, cached):
    return jax.jit(lambda p, t, a: sampling.init_state(nnx.merge(graphdef, p), t, a, max_frames=window,
                                                       cached=cached))(params, prompt[:, :context],
                                                                       prompt_actions[:, :context])

  print(f"dynamics d{config.dynamics.dim}, {config.dynamics.num_blocks} blocks, {config.dynamics.num_heads} "
        f"heads, {tokens_per_frame}+1 tokens/frame, {args.steps} MaskGIT steps, batch {args.batch}, "
        f"{jax.devices()[0].platform}")
  recompute = seconds_per_frame(graphdef, params, state(graphdef, args.context, False), kw, args.frames)
  cached = seconds_per_frame(graphdef, params, state(graphdef, args.context, True), kw, args.frames)
  sliding = seconds_per_frame(graphdef, params, state(graphdef, window, True), kw, args.frames)
  print(f"recompute, {args.context} context frames: {recompute:.3f} s/frame")
  print(f"cached,    {args.context} context frames: {cached:.3f} s/frame  ({recompute / cached:.1f}x faster "
        f"than recompute, {args.batch / cached:.1f} frames/s)")
  print(f"cached, window full (slide + re-encode {window - 1} frames): {sliding:.3f} s/frame "
        f"({args.batch / sliding:.1f} frames/s)")
  if args.compare_unrolled:
    config.scan_layers = False
    unrolled_graphdef = nnx.graphdef(nnx.eval_shape(lambda: build.make_dynamics(config, nnx.Rngs(0))))
    unrolled = seconds_per_frame(unrolled_graphdef, params, state(unrolled_graphdef, args.context, True), kw,
                                 args.frames)  # the same params, layers unrolled
    print(f"cached, unrolled layers: {unrolled:.3f} s/frame -> the scan is {unrolled / cached:.2f}x faster")
  if args.batch == 1 and args.steps == 25 and args.context == 15:
    print(f"vs Jasmine's {JASMINE_SECONDS_PER_FRAME} s/frame: cached {JASMINE_SECONDS_PER_FRAME / cached:.1f}x, "
          f"window full {JASMINE_SECONDS_PER_FRAME / sliding:.1f}x, our recompute "
          f"{JASMINE_SECONDS_PER_FRAME / recompute:.1f}x")


if __name__ == "__main__":
  main()
