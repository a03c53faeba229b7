r"""The whole loop, small, on one CPU machine: CoinRun data -> tokenizer -> LAM + dynamics
-> held-out evaluation, with progress shown throughout.

    python -m genie_jax.quickstart [--workdir runs/quickstart] [--steps 400]

Writes under --workdir: data/ (TFDS CoinRun), tokenizer/ and lam_dynamics/ (checkpoints,
TensorBoard, metrics.jsonl) and summary.json (validation metrics of both phases).
Rerunning resumes where it stopped.
"""
from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart", "Where data, checkpoints and the summary go.")
_STEPS = flags.DEFINE_integer("steps", 400, "Training steps per phase.")
_EPISODES = flags.DEFINE_integer("episodes", 48, "CoinRun training episodes.")


def quickstart_config(phase: str, data_dir: str, steps: int, tokenizer_workdir: str = ""):
  from experiments import tiny
  c = tiny.get_config(phase)
  c.data.update(name="coinrun", data_dir=data_dir)
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
  print(f"[1/4] CoinRun dataset -> {data_dir}")
  try:
    records.dataset_dir(data_dir, "coinrun")
    print("      already built, reusing it")
  except FileNotFoundError:
    coinrun.build(data_dir=data_dir, episodes=_EPISODES.value, eval_episodes=8, max_steps=64,
                  num_levels=1000)

  tok_dir, dyn_dir = os.path.join(workdir, "tokenizer"), os.path.join(workdir, "lam_dynamics")
  print("[2/4] phase 1: video tokenizer")
  tok_cfg = quickstart_config("tokenizer", data_dir, _STEPS.value)
  trainer.train(tok_cfg, tok_dir)
  print("[3/4] phase 2: latent action model + dynamics (tokenizer frozen)")
  dyn_cfg = quickstart_config("lam_dynamics", data_dir, _STEPS.value, tokenizer_workdir=tok_dir)
  trainer.train(dyn_cfg, dyn_dir)
  print("[4/4] evaluation on the validation split (levels unseen in training)")
  summary = {"tokenizer": validate.validate(tok_cfg, tok_dir),
             "lam_dynamics": validate.validate(dyn_cfg, dyn_dir),
             "minutes": (time.perf_counter() - started) / 60}
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  t, d = summary["tokenizer"], summary["lam_dynamics"]
  print(f"tokenizer reconstruction PSNR {t['recon_psnr']:.2f} dB, codebook perplexity "
        f"{t['codebook_perplexity']:.1f}\n"
        f"dynamics masked-token accuracy {d['dynamics_token_acc']:.3f}, LAM next-frame PSNR "
        f"{d['lam_psnr']:.2f} dB, latent actions used {d['actions_used']:.0f} of 6\n"
        f"summary: {os.path.join(workdir, 'summary.json')}  ({summary['minutes']:.1f} min)\n"
        f"TensorBoard: tensorboard --logdir {workdir}")


if __name__ == "__main__":
  app.run(main)
