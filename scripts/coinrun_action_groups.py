r"""How a CoinRun world's latent actions line up with the real ones, and with what those do.

    python scripts/coinrun_action_groups.py --workdir runs/coinrun/lam_dynamics \
        --data_dir runs/coinrun/data [--num_clips 160]

Procgen has 15 actions, but CoinRun reads only LEFT, RIGHT and UP (jump), so many do the
same thing (data_pipelines.coinrun.action_effects). Prints the best-mapping accuracy and NMI
of the LAM's codes on held-out clips against the 15 actions and against their effects:
horizontal direction (left / neither / right), jump, and both; then the contingency table
of codes against horizontal direction.
"""
import argparse
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

from data_pipelines import coinrun  # noqa: E402
from genie_jax.evals import action_metrics, run as evaluate  # noqa: E402
from genie_jax.genie import Genie  # noqa: E402
from genie_jax.train import checkpoints  # noqa: E402


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--workdir", required=True, help="a trained LAM + dynamics run on CoinRun")
  ap.add_argument("--data_dir", required=True, help="its CoinRun dataset (the validation split is read)")
  ap.add_argument("--num_clips", type=int, default=160)
  args = ap.parse_args()
  genie = Genie.load(args.workdir)
  config = checkpoints.read_config(args.workdir)
  config.data.data_dir = args.data_dir
  latent, real = [], []
  for batch in evaluate.evaluation_batches(config, batch_size=8):
    latent.append(genie.infer_actions(np.asarray(batch["frames"])))
    real.append(np.asarray(batch["actions"])[:, :-1])  # a_t moves frame t to t+1
    if sum(len(x) for x in latent) >= args.num_clips:
      break
  latent = np.concatenate(latent)[:args.num_clips]
  real = np.concatenate(real)[:args.num_clips]
  groups = {"the 15 actions": (real, coinrun.NUM_PROCGEN_ACTIONS), **coinrun.action_effects(real)}
  print(f"{len(latent)} held-out clips, {latent.size} transitions, {genie.num_actions} latent actions")
  print(f"{'latent actions against':24s} {'accuracy':>8s} {'NMI':>6s}  (chance accuracy)")
  for name, (labels, count) in groups.items():
    table = action_metrics.contingency(latent, labels, genie.num_actions, count)
    chance = np.bincount(labels.ravel(), minlength=count).max() / labels.size
    print(f"{name:24s} {action_metrics.best_mapping_accuracy(table):8.3f} "
          f"{action_metrics.normalized_mutual_information(table):6.3f}  ({chance:.3f})")
  labels, count = groups["horizontal"]
  print("codes (rows) x horizontal direction (left, neither, right):")
  print(action_metrics.contingency(latent, labels, genie.num_actions, count))


if __name__ == "__main__":
  main()
