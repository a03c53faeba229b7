r"""Training throughput (frames/s) per model at Jasmine's CoinRun shapes: 64x64, T=16,
B=2, patch 16, d512, FFW 2048, 8 heads; tokenizer and LAM 4+4 blocks (LAM codebook 6),
dynamics 6 blocks on tokens (16 tokens + 1 action token per frame). fp32 on CPU.

    python scripts/bench_train.py [--steps 10] [--dtype float32]

Each step is the real AdamW update (clip + adamw from genie_jax.train.state) on the
model's training loss; the tokenizer uses the trainer's own jitted step. Also prints the
model FLOP rate (genie_jax/flops.py: 3x the forward's matmuls and attention) and, on a
GPU whose peak is known (H100, H200, A100), the model FLOPs utilisation (MFU).
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from experiments import coinrun  # noqa: E402
from genie_jax import flops, params as param_counts  # noqa: E402
from genie_jax.models import build, dynamics as dynamics_lib  # noqa: E402
from genie_jax.train import losses, state as state_lib, step as step_lib  # noqa: E402

# Jasmine's figures on this 2-core CPU (frames/s), quoted in the issue
REFERENCE = {"tokenizer": 22.0, "lam": 22.0, "dynamics": 24.0}


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


def simple_step(graphdef, tx, loss_fn):
  def step(params, opt_state, batch, rng):
    loss, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p), batch, rng))(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return jax.jit(step, donate_argnums=(0, 1))


def time_steps(run, steps):
  """Median seconds per step. Each step is waited for on its own: the warm-up calls used to
  return while still executing, so the first timed step also paid for them."""
  jax.block_until_ready(run())  # compile
  jax.block_until_ready(run())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


MAKE = {"tokenizer": build.make_tokenizer, "lam": build.make_lam, "dynamics": build.make_dynamics}
FORWARD_FLOPS = {"tokenizer": flops.tokenizer_forward, "lam": flops.lam_forward,
                 "dynamics": flops.dynamics_forward}


def make_runner(part, config, frames, key):
  """A function that runs one training step of `part` and returns its loss."""
  tx = state_lib.make_optimizer(config.optim, 1000)
  if part == "tokenizer":
    state = jax.jit(lambda: state_lib.init_state(config, build.make_tokenizer, tx))()
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: build.make_tokenizer(config, nnx.Rngs(0))))
    step = jax.jit(step_lib.make_train_step(config, graphdef, tx, state_lib.learning_rate_schedule(config.optim, 1000)),
                   donate_argnums=(0,))
    batch, holder = {"frames": frames}, [state]

    def run():
      holder[0], metrics = step(holder[0], batch, None)
      return metrics["loss"]
    return run
  graphdef, params = nnx.split(MAKE[part](config, nnx.Rngs(0)), nnx.Param)
  params = nnx.to_pure_dict(params)
  if part == "lam":
    batch, loss_fn = {"frames": frames}, lam_loss
  else:
    batch = {"tokens": jax.random.randint(key, (2, 16, 16), 0, config.tokenizer.num_codes),
             "actions": jax.random.randint(key, (2, 15), 0, config.lam.num_actions)}
    loss_fn = dynamics_loss
  step = simple_step(graphdef, tx, loss_fn)
  holder = [params, tx.init(params)]

  def run():
    holder[0], holder[1], loss = step(holder[0], holder[1], batch, key)
    return loss
  return run


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--parts", default="tokenizer,lam,dynamics")
  ap.add_argument("--compare_unrolled", action="store_true",
                  help="also time each step with config.scan_layers=False and print the speed-up")
  args = ap.parse_args()
  unknown = set(args.parts.split(",")) - set(MAKE)
  if unknown:
    ap.error(f"unknown --parts {sorted(unknown)}; choose from {sorted(MAKE)}")
  key = jax.random.PRNGKey(0)
  frames = jax.random.randint(key, (2, 16, 64, 64, 3), 0, 256).astype(jnp.uint8)
  device = jax.devices()[0]
  peak = flops.peak_flops(device.device_kind, args.dtype)
  for part in args.parts.split(","):
    config = coinrun.get_config(f"bench_{part}")
    config.dtype = args.dtype
    seconds = time_steps(make_runner(part, config, frames, key), args.steps)
    fps = config.train.batch_size * config.data.window / seconds
    flop_rate = 3 * FORWARD_FLOPS[part](config, param_counts.count_params(MAKE[part], config)) / seconds
    mfu = f", MFU {flop_rate / peak:.1%} of {device.device_kind}" if peak else ""
    print(f"{part:10s} {fps:7.1f} frames/s  ({seconds * 1000:7.1f} ms/step, B=2 T=16, {args.dtype}, "
          f"{flop_rate / 1e9:,.0f} GFLOP/s{mfu})"
          f"   reference {REFERENCE[part]:.0f} frames/s -> ratio {fps / REFERENCE[part]:.2f}x", flush=True)
    if args.compare_unrolled:
      config.scan_layers = False
      unrolled = time_steps(make_runner(part, config, frames, key), args.steps)
      print(f"{'':10s} unrolled layers: {unrolled * 1000:7.1f} ms/step -> the scan is "
            f"{unrolled / seconds:.2f}x faster", flush=True)


if __name__ == "__main__":
  main()
