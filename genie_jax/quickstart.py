r"""The whole loop, small, on one CPU machine: CoinRun data -> tokenizer -> LAM + dynamics
-> held-out evaluation -> a rollout GIF, with progress shown throughout.

    python -m genie_jax.quickstart [--workdir runs/quickstart] [--steps 400]

Writes under --workdir: data/ (TFDS CoinRun), tokenizer/ and lam_dynamics/ (checkpoints,
TensorBoard, metrics.jsonl), eval/ (metrics.json with FVD and ΔtPSNR, PNG plots),
rollout.gif (a played episode), actions.png (each latent action applied again and again
from one prompt, a row per action) and summary.json. Rerunning resumes where it stopped.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart", "Where data, checkpoints and the summary go.")
_STEPS = flags.DEFINE_integer("steps", 400, "Training steps per phase.")
_EPISODES = flags.DEFINE_integer("episodes", 48, "CoinRun training episodes.")
_EVAL_CLIPS = flags.DEFINE_integer("eval_clips", 16, "Held-out clips for the evaluation (and FVD).")
WINDOW = 12  # frames per training clip: I3D (FVD) needs at least 9


def quickstart_config(phase: str, data_dir: str, steps: int, tokenizer_workdir: str = ""):
  from experiments import tiny
  c = tiny.get_config(phase)
  c.data.update(name="coinrun", data_dir=data_dir)
  c.data.window = WINDOW
  c.lam.num_actions = 6  # the paper's CoinRun latent actions
  c.train.update(steps=steps, log_every=25, ckpt_every=max(steps // 2, 1), image_every=200,
                 tokenizer_workdir=tokenizer_workdir)
  return c


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from data_pipelines import coinrun, records
  from genie_jax.train import trainer, validate

  workdir = os.path.abspath(_WORKDIR.value)
  data_dir = os.path.join(workdir, "data")
  started = time.perf_counter()
  print(f"[1/5] CoinRun dataset -> {data_dir}")
  try:
    records.dataset_dir(data_dir, "coinrun")
    print("      already built, reusing it")
  except FileNotFoundError:
    # twice the clips evaluated: each clip is its own episode, even if a few end too soon
    coinrun.build(data_dir=data_dir, episodes=_EPISODES.value, eval_episodes=2 * _EVAL_CLIPS.value,
                  max_steps=64, num_levels=1000)

  tok_dir, dyn_dir = os.path.join(workdir, "tokenizer"), os.path.join(workdir, "lam_dynamics")
  print("[2/5] phase 1: video tokenizer")
  tok_cfg = quickstart_config("tokenizer", data_dir, _STEPS.value)
  trainer.train(tok_cfg, tok_dir)
  print("[3/5] phase 2: latent action model + dynamics (tokenizer frozen)")
  dyn_cfg = quickstart_config("lam_dynamics", data_dir, _STEPS.value, tokenizer_workdir=tok_dir)
  trainer.train(dyn_cfg, dyn_dir)
  print("[4/5] evaluation on the validation split (levels unseen in training)")
  from genie_jax import play
  from genie_jax.evals import run as evaluate
  from genie_jax.genie import Genie
  genie = Genie.load(dyn_dir)
  metrics = evaluate.run(dyn_cfg, dyn_dir, num_clips=_EVAL_CLIPS.value, fvd_clips=_EVAL_CLIPS.value,
                         t=4, out=os.path.join(workdir, "eval"), batch_size=8, genie=genie)
  print(evaluate.summary_table(metrics))
  print("[5/5] a rollout from a validation frame with random latent actions")
  actions = np.random.default_rng(0).integers(0, genie.num_actions, 24)
  gif = play.run_headless(genie, play.default_prompt(genie), actions.tolist(),
                          os.path.join(workdir, "rollout.gif"), fps=8, scale=4, seed=0)
  from genie_jax.evals import plots
  grid = plots.action_grid(genie, play.default_prompt(genie), os.path.join(workdir, "actions.png"), repeats=6)
  print(f"what each latent action does: {grid}")
  summary = {"tokenizer_validation": validate.validate(tok_cfg, tok_dir),
             "lam_dynamics_validation": validate.validate(dyn_cfg, dyn_dir),
             "evaluation": {k: metrics[k] for k in ("num_clips", "clip_frames", "delta_psnr", "recon_psnr",
                                                    "recon_ssim", "rollout_psnr_lam_mean",
                                                    "latent_actions", "real_actions", "fvd") if k in metrics},
             "rollout_gif": gif, "rollout_actions": actions.tolist(), "action_grid": grid,
             "minutes": (time.perf_counter() - started) / 60}
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(f"rollout: {gif}\nsummary: {os.path.join(workdir, 'summary.json')}  ({summary['minutes']:.1f} min)\n"
        f"play it: python -m genie_jax.play --workdir {dyn_dir}\n"
        f"TensorBoard: tensorboard --logdir {workdir}")


if __name__ == "__main__":
  app.run(main)
