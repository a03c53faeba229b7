r"""How much of CoinRun's real action can a model read off its frames? A floor under any LAM's ceiling.

    python scripts/coinrun_action_probe.py --data_dir runs/coinrun/data [--steps 3000]

A LAM is scored against the real actions (NMI), but a random policy's action changes the
next CoinRun frame little: on the ground a push moves the player's speed a fifth of the
way to the key's direction, in the air 3% of the way (Procgen's coinrun.cpp: mixrate 0.2,
air_control 0.15), and what it always changes at once is the player's pose and which way
it faces, a sprite about 5 x 8 px. So this trains, with the real actions as labels, the
behaviour-cloning network (genie_jax/agents/policy.py) as an inverse-dynamics model on
the training split, and scores it on the held-out split, reading:

  x_t-2..x_t      only the past: a random policy's action is independent of it, so this
                  must stay at chance (a check that nothing leaks)
  x_t+1           the frame the action produced
  x_t, x_t+1      the pair a LAM's transition sees
  x_t-2..x_t+1    the pair and the momentum before it

Labels are the action's effect (data_pipelines.coinrun.action_effects): horizontal
direction x jump (6), and its two parts. What a supervised model reads off the frames,
they hold at least; a LAM's codes can share with the real actions no more than the
frames hold, so this is a floor under that ceiling, not the ceiling itself.
"""
import argparse
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from data_pipelines import coinrun
from genie_jax.agents import behaviour_cloning, data as data_lib
from genie_jax.evals import action_metrics

# (name, context frames, offset of the newest frame read from x_t)
READINGS = (("x_t-2..x_t (past only)", 3, 0), ("x_t+1", 1, 1), ("x_t, x_t+1", 2, 1), ("x_t-2..x_t+1", 4, 1))


def predict(policy, episodes: data_lib.Episodes, frame_index: np.ndarray, context: int,
            batch_size: int = 256) -> np.ndarray:
  """The policy's most likely label for each of `frame_index`'s readings, int [N]."""
  contexts = data_lib.context_indices(episodes, frame_index, context)
  call = jax.jit(lambda frames: jnp.argmax(policy(frames), axis=-1))
  return np.concatenate([np.asarray(call(jnp.asarray(episodes.frames[contexts[i:i + batch_size]])))
                         for i in range(0, len(contexts), batch_size)])


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--data_dir", required=True, help="a CoinRun dataset with its real actions")
  ap.add_argument("--steps", type=int, default=3000)
  ap.add_argument("--batch_size", type=int, default=64)
  ap.add_argument("--lr", type=float, default=1e-3)
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  logging.set_verbosity(logging.WARNING)  # TFDS logs every split it opens at INFO
  train = data_lib.read_episodes(args.data_dir, "coinrun", "train")
  held = data_lib.read_episodes(args.data_dir, "coinrun", "validation")
  train_t, held_t = data_lib.transition_frames(train), data_lib.transition_frames(held)
  train_labels = coinrun.action_effects(data_lib.real_actions(train, train_t))["horizontal x jump"][0]
  held_groups = coinrun.action_effects(data_lib.real_actions(held, held_t))
  print(f"{len(train_t)} training and {len(held_t)} held-out transitions "
        f"({len(held.starts) - 1} held-out episodes, unseen levels)")
  print(f"{'reading':24s} {'horizontal acc / NMI':>21s} {'jump acc / NMI':>16s} {'both acc / NMI':>16s}")
  chance = "  ".join(f"{np.bincount(labels).max() / labels.size:9.3f}" for labels, _ in held_groups.values())
  print(f"{'commonest label':24s} {chance}")
  for name, context, offset in READINGS:
    policy, _ = behaviour_cloning.train_policy(
        train, train_t + offset, train_labels, num_actions=6, context=context, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, desc=name)
    guess = predict(policy, held, held_t + offset, context)  # horizontal * 2 + jump
    cells = []
    for group, (labels, count) in held_groups.items():
      guessed = {"horizontal": guess // 2, "jump": guess % 2, "horizontal x jump": guess}[group]
      cells.append("%.3f / %.3f" % action_metrics.accuracy_and_nmi(guessed, labels, count, count))
    print(f"{name:24s} {cells[0]:>21s} {cells[1]:>16s} {cells[2]:>16s}", flush=True)


if __name__ == "__main__":
  main()
