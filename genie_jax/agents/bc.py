r"""Latent-action behaviour cloning, measured the paper's way (Genie, Sec. 3.3, Fig. 15).

    python -m genie_jax.agents.bc --config experiments/agents.py:coinrun \
        --data_dir data/coinrun_expert --lam_workdir runs/cpu_reference/lam_dynamics --out runs/bc

1. A frozen LAM (`--lam_workdir`, any phase-2 run) labels every transition of the expert
   episodes with a latent action; the real actions stay in the dataset, unseen.
2. For each seed, a policy (agents/policy.py) learns latent actions from frames, and the
   oracle, the same network, learns the expert's real actions.
3. For each N, a mapping latent -> real is fitted from N labelled transitions drawn at
   random (agents/mapping.py), and the latent agent plays through it.
4. Random keys, always RIGHT+UP (the expert's default key: what an agent that learned
   only the commonest action does), the oracle, and the latent agent at each N play the
   same held-out levels (the test range of the expert data's level numbering), each
   level once per seed.

Writes `results.json` and `solved_vs_n.png` (levels solved against N, 95% Wilson
intervals over levels x seeds, the oracle and random agents as bands) to --out, and
prints the table.
"""
from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags
from tqdm import tqdm

from data_pipelines import coinrun, coinrun_expert
from genie_jax import allocator, parallel
from genie_jax.agents import behaviour_cloning, data as data_lib, evaluation
from genie_jax.agents.mapping import fit_mapping
from genie_jax.evals import action_metrics
from genie_jax.models import build
from genie_jax.train import checkpoints


def load_lam(workdir: str):
  """-> (the frozen LAM of a phase-2 workdir, its clip length, its number of latent actions)."""
  config = checkpoints.read_config(workdir)
  if config.phase != "lam_dynamics":
    raise ValueError(f"{workdir!r} is a {config.phase!r} run; the agent needs a LAM from a lam_dynamics "
                     "(phase 2) workdir")
  mesh = parallel.make_mesh(data=1, devices=jax.devices()[:1])
  graphdef, params, _, _, _ = checkpoints.load_params(workdir, build.make_trainable, mesh, rules_config=config)
  return nnx.merge(graphdef, params).lam, int(config.data.window), int(config.lam.num_actions)


def summarise(solved_by_seed: list[np.ndarray]) -> dict:
  """Per-seed bool [L] arrays -> counts, rate and the Wilson interval over all plays."""
  k = int(sum(s.sum() for s in solved_by_seed))
  n = int(sum(s.size for s in solved_by_seed))
  lo, hi = coinrun_expert.wilson_interval(k, n)
  return {"solved": k, "plays": n, "rate": k / n, "ci95": [lo, hi],
          "per_seed": [float(s.mean()) for s in solved_by_seed]}


def run(config, *, data_dir: str, lam_workdir: str, progress: bool = True) -> dict:
  start = time.time()
  episodes = data_lib.read_episodes(data_dir, config.data.name, config.data.split,
                                    max_episodes=config.data.max_episodes or None)
  frame_index = data_lib.transition_frames(episodes)
  real = data_lib.real_actions(episodes, frame_index)
  if max(config.shots) > len(frame_index):
    raise ValueError(f"N up to {max(config.shots)} labelled transitions asked, but the expert data holds "
                     f"{len(frame_index)}")
  first, stop = coinrun.level_range(split=config.eval.split, seed=config.eval.data_seed,
                                    num_levels=config.eval.num_levels)
  if not 0 < config.eval.levels <= stop - first:  # beyond the range: another split's levels
    raise ValueError(f"eval.levels {config.eval.levels} must lie in 1..{stop - first}, the levels of split "
                     f"{config.eval.split!r}")
  levels = list(range(first, first + config.eval.levels))
  lam, window, num_latent = load_lam(lam_workdir)
  latent = data_lib.latent_actions(lam, episodes, window=window)
  num_real = coinrun.NUM_PROCGEN_ACTIONS
  train_kw = dict(context=config.context, steps=config.train.steps, batch_size=config.train.batch_size,
                  lr=config.train.lr, dim=config.policy.dim, hidden=config.policy.hidden, progress=progress)
  play_kw = dict(context=config.context, max_steps=config.eval.max_steps, progress=progress)
  plays = {"random": [], "always RIGHT+UP": [], "oracle": [], **{f"latent N={n}": [] for n in config.shots}}
  losses = {"oracle": [], "latent": []}
  mappings = {n: [] for n in config.shots}  # per N, per seed: the real action of each latent code
  for seed in tqdm(range(config.seeds), desc="seeds", disable=not progress):
    plays["random"].append(evaluation.play_levels(evaluation.random_actor(num_real), levels, seed=seed,
                                                  desc="random", **play_kw))
    plays["always RIGHT+UP"].append(evaluation.play_levels(
        evaluation.constant_actor(coinrun_expert.RIGHT_UP), levels, seed=seed, desc="RIGHT+UP", **play_kw))
    oracle, loss = behaviour_cloning.train_policy(episodes, frame_index, real, num_actions=num_real,
                                                  seed=seed, desc="oracle", **train_kw)
    losses["oracle"].append(loss)
    plays["oracle"].append(evaluation.play_levels(evaluation.policy_actor(oracle), levels, seed=seed,
                                                  desc="oracle", **play_kw))
    policy, loss = behaviour_cloning.train_policy(episodes, frame_index, latent, num_actions=num_latent,
                                                  seed=seed, desc="latent policy", **train_kw)
    losses["latent"].append(loss)
    for n in config.shots:
      shot = np.random.default_rng([seed, n]).choice(len(frame_index), size=n, replace=False)
      mapping = fit_mapping(latent[shot], real[shot], num_latent=num_latent, num_real=num_real)
      mappings[n].append(mapping.tolist())
      plays[f"latent N={n}"].append(evaluation.play_levels(evaluation.policy_actor(policy, mapping), levels,
                                                           seed=seed, desc=f"latent N={n}", **play_kw))
  counts = np.bincount(latent, minlength=num_latent)
  table = action_metrics.contingency(latent, real, num_latent, num_real)
  effects = {name: action_metrics.normalized_mutual_information(
      action_metrics.contingency(latent, labels, num_latent, k))
      for name, (labels, k) in coinrun.action_effects(real).items()}
  return {
      "lam_workdir": lam_workdir, "data_dir": data_dir,
      "episodes": len(episodes.starts) - 1, "transitions": int(len(frame_index)),
      "levels": [levels[0], levels[-1]], "seeds": config.seeds, "shots": list(config.shots),
      "latent_code_counts": counts.tolist(),
      # how much the LAM's codes say about the expert's real actions, over all its transitions
      "latent_real_nmi": action_metrics.normalized_mutual_information(table),
      "latent_effect_nmi": effects,
      "expert_action_counts": np.bincount(real, minlength=num_real).tolist(),
      "train_cross_entropy": losses,
      "mappings": {str(n): m for n, m in mappings.items()},
      "agents": {name: summarise(v) for name, v in plays.items()},
      "seconds": time.time() - start,
  }


def plot(results: dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  shots = results["shots"]
  agents = results["agents"]
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for name, colour in (("oracle", "tab:green"), ("always RIGHT+UP", "tab:orange"), ("random", "tab:grey")):
    a = agents[name]
    ax.axhline(100 * a["rate"], color=colour, label=name)
    ax.axhspan(100 * a["ci95"][0], 100 * a["ci95"][1], color=colour, alpha=0.15)
  latent = [agents[f"latent N={n}"] for n in shots]
  rates = np.array([100 * a["rate"] for a in latent])
  err = np.array([[r - 100 * a["ci95"][0], 100 * a["ci95"][1] - r] for r, a in zip(rates, latent)]).T
  ax.errorbar(shots, rates, yerr=err, marker="o", capsize=3, color="tab:blue", label="latent-action agent")
  ax.set_xscale("log")
  ax.minorticks_off()  # the log axis' own minor labels crowd out the N ticks
  ax.set_xticks(shots, [str(n) for n in shots])
  ax.set_xlabel("labelled transitions N")
  ax.set_ylabel("levels solved (%)")
  ax.set_ylim(0, 100)
  ax.set_title(f"CoinRun, {agents['oracle']['plays'] // results['seeds']} held-out levels x {results['seeds']} seeds",
               fontsize=9)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def table(results: dict) -> str:
  lines = [f"{'agent':16s} {'solved':>14s}  {'95% CI':>13s}  per seed"]
  for name, a in results["agents"].items():
    lo, hi = a["ci95"]
    lines.append(f"{name:16s} {a['solved']:5d} / {a['plays']:<5d} {100 * a['rate']:5.1f}%  "
                 f"{100 * lo:5.1f}-{100 * hi:5.1f}%  " + " ".join(f"{100 * r:.0f}%" for r in a["per_seed"]))
  return "\n".join(lines)


def main(argv):
  del argv
  allocator.relaunch_with_tcmalloc()  # before any work: XLA's per-step buffers (allocator.py)
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
  f = flags.FLAGS
  for name, path in (("--data_dir", f.data_dir), ("--lam_workdir", f.lam_workdir)):
    if not os.path.isdir(path):
      sys.exit(f"error: {name} {path!r} is not a directory")
  try:
    results = run(_CONFIG.value, data_dir=f.data_dir, lam_workdir=f.lam_workdir)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  os.makedirs(f.out, exist_ok=True)
  with open(os.path.join(f.out, "results.json"), "w") as fh:
    json.dump(results, fh, indent=1)
  plot(results, os.path.join(f.out, "solved_vs_n.png"))
  print(f"CoinRun levels {results['levels'][0]}..{results['levels'][1]} (held out), {results['seeds']} seed(s); "
        f"LAM {f.lam_workdir}; {results['transitions']} expert transitions; latent codes used "
        f"{results['latent_code_counts']}, NMI with the real actions {results['latent_real_nmi']:.3f}")
  print(table(results))
  print(f"{results['seconds']:.0f} s; wrote {f.out}/results.json and solved_vs_n.png")


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", "experiments/agents.py:coinrun",
                                            "Agent config (file.py:variant).", lock_config=True)
  flags.DEFINE_string("data_dir", None, "Expert episodes (python -m data_pipelines.coinrun --policy expert).",
                      required=True)
  flags.DEFINE_string("lam_workdir", None, "A phase-2 (lam_dynamics) workdir whose LAM labels the videos.",
                      required=True)
  flags.DEFINE_string("out", "runs/bc", "Where results.json and solved_vs_n.png go.")
  app.run(main)
