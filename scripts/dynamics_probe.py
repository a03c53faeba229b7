r"""Trains the dynamics model alone, on the TRUE actions, over tokens of a frozen tokenizer,
and prints every --every steps whether it uses them: held-out next-frame token accuracy
with the true actions, with random ones, and of copying the previous frame, on all
tokens and on the tokens that change. The true-action control without the LAM, and fast:
the clips are encoded once, so a step costs only the dynamics model.

    python scripts/dynamics_probe.py --data_dir runs/sprites/data \
        --tokenizer_workdir runs/sprites/tok --steps 1500 [--set dynamics.dim=128 ...]
    python scripts/dynamics_probe.py --tokens occupancy --steps 600 [--set ...]

--set overrides fields of experiments/sprites.py:lam_dynamics (the tokenizer fields come
from the tokenizer's workdir). `--tokens occupancy` trains instead on the sprite world's
occupancy tokens, an exact function of where the sprite is (genie_jax/train/
occupancy_control.py, the test suite's guard), and prints the changed-token accuracy
with the true and with random actions: no tokenizer, no dataset needed.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipelines import loader
from experiments import sprites
from genie_jax import parallel, sampling
from genie_jax.evals import run as eval_run
from genie_jax.models import build, dynamics as dynamics_lib, patching
from genie_jax.train import checkpoints, occupancy_control, state as state_lib
from lam_probe import apply_override  # scripts/ is on sys.path when run as a script


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--tokens", choices=("tokenizer", "occupancy"), default="tokenizer")
  ap.add_argument("--data_dir", help="the sprite dataset (--tokens tokenizer)")
  ap.add_argument("--tokenizer_workdir", help="a trained tokenizer (--tokens tokenizer)")
  ap.add_argument("--steps", type=int, default=1500)
  ap.add_argument("--every", type=int, default=250)
  ap.add_argument("--train_batches", type=int, default=200, help="batches encoded once for training")
  ap.add_argument("--set", action="append", default=[], help="config override, e.g. dynamics.dim=128")
  args = ap.parse_args()

  c = sprites.get_config("lam_dynamics")
  if args.tokens == "occupancy":
    for assignment in args.set:
      apply_override(c, assignment)
    started = time.perf_counter()
    m = occupancy_control.train_and_measure(c, steps=args.steps, seed=c.seed)
    print(f"occupancy tokens, {args.steps} steps, dynamics {dict(c.dynamics)} lr {c.optim.lr}: on the "
          f"held-out tokens a move changes, true actions {m['changed_accuracy']:.3f}, random actions "
          f"{m['random_changed_accuracy']:.3f}; rollouts painted from their tokens, PSNR at t="
          f"{occupancy_control.WINDOW - 1} {m['psnr']:.2f} vs {m['psnr_random']:.2f} dB, Δ {m['delta_psnr']:+.3f} ± "
          f"{m['delta_psnr_ci95']:.3f} ({time.perf_counter() - started:.0f} s)")
    return
  if not (args.data_dir and args.tokenizer_workdir):
    ap.error("--tokens tokenizer needs --data_dir and --tokenizer_workdir")
  c.data.data_dir = args.data_dir
  c.tokenizer = checkpoints.read_config(args.tokenizer_workdir).tokenizer
  for assignment in args.set:
    apply_override(c, assignment)
  mesh = parallel.make_mesh(data=1, devices=jax.devices()[:1])
  tok_graphdef, tok_params, _ = checkpoints.load_frozen_tokenizer(c, mesh, args.tokenizer_workdir)
  encode = jax.jit(lambda video: nnx.merge(tok_graphdef, tok_params).encode(patching.to_unit_float(video)))

  def tokens_of(batch):
    t = np.asarray(encode(jnp.asarray(batch["frames"])))
    return t.reshape(*t.shape[:2], -1), np.asarray(batch["actions"][:, :-1], np.int32)

  started = time.perf_counter()
  data = loader.make_iterator(c.data, mesh=mesh, rules=c.rules, global_batch_size=c.train.batch_size,
                              seed=c.seed)
  pool = [tokens_of(next(data)) for _ in range(args.train_batches)]
  train_tokens = np.concatenate([p[0] for p in pool])
  train_actions = np.concatenate([p[1] for p in pool])
  val_tokens, val_actions = tokens_of(next(eval_run.evaluation_batches(c, batch_size=64)))
  print(f"encoded {len(train_tokens)} training and {len(val_tokens)} held-out clips "
        f"({time.perf_counter() - started:.0f} s); config: dynamics {dict(c.dynamics)} lr {c.optim.lr}",
        flush=True)

  model = build.make_dynamics(c, nnx.Rngs(c.seed))
  graphdef, params = nnx.split(model, nnx.Param)
  tx = state_lib.make_optimizer(c.optim, args.steps)
  opt_state = tx.init(params)
  num_actions = model.num_actions
  train_step = occupancy_control.make_dynamics_step(c, graphdef, tx)

  @jax.jit
  def predict(params, tokens, actions):
    dyn = nnx.merge(graphdef, params)
    return sampling.next_frame_predictions(dyn, tokens, dynamics_lib.frame_actions(actions, num_actions))

  rng = np.random.default_rng(c.seed)
  random_actions = rng.integers(0, num_actions, size=val_actions.shape).astype(np.int32)
  started = time.perf_counter()
  for step in range(1, args.steps + 1):
    idx = rng.integers(0, len(train_tokens), size=c.train.batch_size)
    params, opt_state, ce, acc = train_step(params, opt_state, jnp.asarray(train_tokens[idx]),
                                            jnp.asarray(train_actions[idx]), jax.random.key(step))
    if step % args.every == 0 or step == args.steps:
      true_all, true_changed, copy, changed = occupancy_control.token_accuracies(
          np.asarray(predict(params, val_tokens, val_actions)), val_tokens)
      rand_all, rand_changed, _, _ = occupancy_control.token_accuracies(
          np.asarray(predict(params, val_tokens, random_actions)), val_tokens)
      print(f"step {step:5d}  train CE {float(ce):.3f} acc {float(acc):.3f} | held-out next frame: "
            f"true actions {true_all:.3f} random {rand_all:.3f} copy {copy:.3f} | on the "
            f"{changed:.1%} that change: true {true_changed:.3f} random {rand_changed:.3f} "
            f"({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
  main()
