r"""The whole loop, small, on one CPU machine: data -> tokenizer -> LAM + dynamics ->
held-out evaluation -> a rollout GIF, with progress shown throughout.

    python -m genie_jax.quickstart [--workdir runs/quickstart] [--world sprites|coinrun] [--steps N]

--world sprites (the default): the sprite world and its recipe (experiments/sprites.py),
a world trained from video alone that recovers the true actions and obeys them, in about
a quarter of an hour here. --world coinrun: tiny models on 48 CoinRun episodes, 400 steps
per phase, a smoke test of the loop on the paper's data (its world does not obey its
actions yet; README, "A world that obeys its actions").

Writes under --workdir: data/ (TFDS), tokenizer/ and lam_dynamics/ (checkpoints,
TensorBoard, metrics.jsonl), eval/ (metrics.json with ΔtPSNR, and FVD for CoinRun, PNG
plots), rollout.gif (a played episode), actions.png (each latent action applied again and
again from one prompt, a row per action) and summary.json. Rerunning resumes where it
stopped.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from absl import app, flags, logging

from genie_jax import allocator

WORLDS = ("sprites", "coinrun")
_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart", "Where data, checkpoints and the summary go.")
_WORLD = flags.DEFINE_enum("world", "sprites", WORLDS, "sprites: the recipe whose world obeys its "
                           "actions; coinrun: tiny models on CoinRun, a smoke test.")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps per phase (default: sprites, the recipe's "
                              "own in experiments/sprites.py; coinrun 400).")
_EPISODES = flags.DEFINE_integer("episodes", None, "Training episodes (default: sprites 128, coinrun 48).")
_EVAL_CLIPS = flags.DEFINE_integer("eval_clips", None, "Held-out clips for the evaluation (default: "
                                   "sprites 64; coinrun 16, FVD too).")
WINDOW = 12  # CoinRun frames per training clip: I3D (FVD) needs at least 9
DEFAULTS = {"sprites": {"episodes": 128, "eval_clips": 64}, "coinrun": {"episodes": 48, "eval_clips": 16}}


def quickstart_config(phase: str, data_dir: str, steps: int | None, tokenizer_workdir: str = "",
                      world: str = "coinrun"):
  if world == "sprites":
    from experiments import sprites
    c = sprites.get_config(phase)
    c.data.data_dir = data_dir
    steps = steps or c.train.steps
  else:
    from experiments import tiny
    c = tiny.get_config(phase)
    c.data.update(name="coinrun", data_dir=data_dir)
    c.data.window = WINDOW
    c.lam.num_actions = 6  # the paper's CoinRun latent actions
    steps = steps or 400
  c.train.update(steps=steps, log_every=25, ckpt_every=max(steps // 2, 1), tokenizer_workdir=tokenizer_workdir)
  if world != "sprites":
    # the sprite recipe writes no preview images: each is a compile and a forward pass in a
    # run that must fit a quarter of an hour, and evaluate writes images of held-out clips
    c.train.image_every = 200
  return c


def _build_data(world: str, data_dir: str, *, episodes: int, eval_clips: int):
  from data_pipelines import coinrun, records, sprites
  try:
    records.dataset_dir(data_dir, world)
    print("      already built, reusing it")
    return
  except FileNotFoundError:
    pass
  if world == "sprites":
    sprites.build(data_dir=data_dir, episodes=episodes, eval_episodes=eval_clips, max_steps=48)
  else:
    # twice the clips evaluated: each clip is its own episode, even if a few end too soon
    coinrun.build(data_dir=data_dir, episodes=episodes, eval_episodes=2 * eval_clips,
                  max_steps=64, num_levels=1000)


def main(argv):
  del argv
  allocator.relaunch_with_tcmalloc()  # before any work: XLA's per-step buffers (allocator.py)
  logging.set_verbosity(logging.WARNING)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from genie_jax.train import trainer, validate

  world = _WORLD.value
  episodes = _EPISODES.value or DEFAULTS[world]["episodes"]
  eval_clips = _EVAL_CLIPS.value or DEFAULTS[world]["eval_clips"]
  workdir = os.path.abspath(_WORKDIR.value)
  data_dir = os.path.join(workdir, "data")
  started = time.perf_counter()
  print(f"[1/5] {world} dataset -> {data_dir}")
  _build_data(world, data_dir, episodes=episodes, eval_clips=eval_clips)

  tok_dir, dyn_dir = os.path.join(workdir, "tokenizer"), os.path.join(workdir, "lam_dynamics")
  print("[2/5] phase 1: video tokenizer")
  tok_cfg = quickstart_config("tokenizer", data_dir, _STEPS.value, world=world)
  trainer.train(tok_cfg, tok_dir)
  print("[3/5] phase 2: latent action model + dynamics (tokenizer frozen)")
  dyn_cfg = quickstart_config("lam_dynamics", data_dir, _STEPS.value, tokenizer_workdir=tok_dir, world=world)
  trainer.train(dyn_cfg, dyn_dir)
  print("[4/5] evaluation on the validation split (episodes unseen in training)")
  from genie_jax import play
  from genie_jax.evals import run as evaluate
  from genie_jax.genie import Genie
  genie = Genie.load(dyn_dir)
  # the sprite recipe's 8-frame clips are too short for I3D (FVD needs 9 frames)
  metrics = evaluate.run(dyn_cfg, dyn_dir, num_clips=eval_clips, fvd_clips=eval_clips if world == "coinrun" else 0,
                         t=4, out=os.path.join(workdir, "eval"), batch_size=8, genie=genie)
  print(evaluate.summary_table(metrics))
  print("[5/5] a rollout from a validation frame with random latent actions")
  actions = np.random.default_rng(0).integers(0, genie.num_actions, 24)
  gif = play.run_headless(genie, play.default_prompt(genie), actions.tolist(),
                          os.path.join(workdir, "rollout.gif"), fps=8, scale=4, seed=0)
  from genie_jax.evals import plots
  grid = plots.action_grid(genie, play.default_prompt(genie), os.path.join(workdir, "actions.png"), repeats=6)
  print(f"what each latent action does: {grid}")
  summary = {"world": world, "tokenizer_validation": validate.validate(tok_cfg, tok_dir),
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
