r"""Evaluate a trained Genie: FVD, ΔtPSNR, rollout and reconstruction PSNR/SSIM, latent actions.

    python -m genie_jax.evaluate --config experiments/coinrun.py:lam_dynamics \
        --workdir runs/dyn [--num_clips 64] [--t 4] [--fvd_clips 64] [--out runs/dyn/eval]

--workdir is a phase-2 (lam_dynamics) run; its tokenizer is found from its config.json.
The --config supplies the data to evaluate on (any field overridable, e.g.
--config.data.data_dir); the models come from the workdir. Writes metrics.json,
psnr_vs_t.png (PSNR of x̂_t for LAM vs random actions) and rollouts.png (ground truth vs
rollouts) under --out, and prints a summary table.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from genie_jax import allocator

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config (file.py:variant).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Phase-2 (lam_dynamics) workdir.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 64, "Held-out clips for ΔtPSNR, PSNR/SSIM and actions.")
_FVD_CLIPS = flags.DEFINE_integer("fvd_clips", None, "Clips for FVD (default: --num_clips; 0 skips FVD).")
_T = flags.DEFINE_integer("t", 4, "The t of ΔtPSNR (the paper: 4).")
_STEPS = flags.DEFINE_integer("steps", None, "MaskGIT steps per frame (default: the config's).")
_TEMPERATURE = flags.DEFINE_float("temperature", None,
                                  "Sampling temperature, 0 for greedy (default: the config's).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Clips per evaluation batch.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: <workdir>/eval).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random actions and of sampling.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  allocator.relaunch_with_tcmalloc()  # before any work: XLA's per-step buffers (allocator.py)
  logging.set_verbosity(logging.WARNING)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  out = _OUT.value or os.path.join(_WORKDIR.value, "eval")
  fvd_clips = _NUM_CLIPS.value if _FVD_CLIPS.value is None else _FVD_CLIPS.value
  from genie_jax.evals import run as eval_run  # pylint: disable=g-import-not-at-top
  try:
    metrics = eval_run.run(_CONFIG.value, _WORKDIR.value, num_clips=_NUM_CLIPS.value, fvd_clips=fvd_clips,
                           t=_T.value, out=out, batch_size=_BATCH.value, steps=_STEPS.value,
                           temperature=_TEMPERATURE.value,
                           seed=_SEED.value)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  print(eval_run.summary_table(metrics))
  print(f"-> {out}/metrics.json, psnr_vs_t.png, rollouts.png")


if __name__ == "__main__":
  app.run(main)
