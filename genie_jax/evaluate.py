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

import json
import os
import sys
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config (file.py:variant).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Phase-2 (lam_dynamics) workdir.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 64, "Held-out clips for ΔtPSNR, PSNR/SSIM and actions.")
_FVD_CLIPS = flags.DEFINE_integer("fvd_clips", None, "Clips for FVD (default: --num_clips; 0 skips FVD).")
_T = flags.DEFINE_integer("t", 4, "The t of ΔtPSNR (the paper: 4).")
_STEPS = flags.DEFINE_integer("steps", None, "MaskGIT steps per frame (default: the config's).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Clips per evaluation batch.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: <workdir>/eval).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random actions and of sampling.")
flags.mark_flags_as_required(["config", "workdir"])


def evaluation_batches(config, *, batch_size: int, split: str | None = None):
  """Fixed (unshuffled) windows of the evaluation split, as numpy batches on the host."""
  import jax  # pylint: disable=g-import-not-at-top
  from data_pipelines import loader  # pylint: disable=g-import-not-at-top
  from genie_jax import parallel  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh(data=1, devices=jax.devices()[:1])
  data = loader.make_iterator(config.data, mesh=mesh, rules=tuple(tuple(r) for r in config.rules),
                              split=split or config.data.eval_split, global_batch_size=batch_size,
                              seed=0, shuffle=False)
  for batch in data:
    yield {k: np.asarray(v) for k, v in batch.items()}


def run(config, workdir: str, *, num_clips: int, fvd_clips: int, t: int, out: str, batch_size: int = 8,
        steps: int | None = None, seed: int = 0, genie=None) -> dict:
  from genie_jax.evals import fvd as fvd_lib, plots, world_eval  # pylint: disable=g-import-not-at-top
  from genie_jax.genie import Genie  # pylint: disable=g-import-not-at-top
  started = time.perf_counter()
  genie = genie or Genie.load(workdir, steps=steps, seed=seed)
  extractor = fvd_lib.FeatureExtractor() if fvd_clips else None
  batches = lambda: evaluation_batches(config, batch_size=batch_size)
  same_clips = fvd_clips == num_clips
  metrics, examples = world_eval.evaluate_world(genie, batches(), num_clips=num_clips, t=t, seed=seed,
                                                extractor=extractor if same_clips else None)
  if extractor is not None and not same_clips:  # FVD on its own number of clips
    metrics["fvd"] = world_eval.evaluate_world(genie, batches(), num_clips=fvd_clips, t=t, seed=seed,
                                               extractor=extractor)[0]["fvd"]
  metrics["maskgit_steps"] = genie.sampling["steps"]
  metrics["workdir"] = os.path.abspath(workdir)
  metrics["data"] = {"name": config.data.name, "split": config.data.eval_split}
  metrics["minutes"] = (time.perf_counter() - started) / 60
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  plots.psnr_vs_t(metrics, os.path.join(out, "psnr_vs_t.png"))
  plots.rollout_grid(examples, os.path.join(out, "rollouts.png"))
  return metrics


def summary_table(m: dict) -> str:
  d = m["delta_psnr"]
  rows = [("clips", f"{m['num_clips']} x {m['clip_frames']} frames"),
          (f"Δ{m['t']}PSNR (95% CI)", f"{d['mean']:+.3f} ± {d['ci95']:.3f} dB"),
          (f"PSNR x̂_{m['t']}: LAM / random", f"{d['psnr_lam']:.2f} / {d['psnr_random']:.2f} dB"),
          ("rollout PSNR / SSIM (LAM, all t)", f"{m['rollout_psnr_lam_mean']:.2f} dB / {m['rollout_ssim_lam_mean']:.3f}"),
          ("tokenizer PSNR / SSIM", f"{m['recon_psnr']:.2f} dB / {m['recon_ssim']:.3f}"),
          ("latent actions used", f"{m['latent_actions']['used']} (perplexity {m['latent_actions']['perplexity']:.2f})")]
  if "real_actions" in m:
    r = m["real_actions"]
    rows.append(("latent->real actions", f"accuracy {r['best_mapping_accuracy']:.3f}, NMI {r['nmi']:.3f}"))
  if "fvd" in m:
    f = m["fvd"]
    rows.append(("FVD", f"{f['value']:.1f} ({f['real_clips']} real vs {f['generated_clips']} generated clips, "
                        f"{f['frames']} frames)"))
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  out = _OUT.value or os.path.join(_WORKDIR.value, "eval")
  fvd_clips = _NUM_CLIPS.value if _FVD_CLIPS.value is None else _FVD_CLIPS.value
  try:
    metrics = run(_CONFIG.value, _WORKDIR.value, num_clips=_NUM_CLIPS.value, fvd_clips=fvd_clips,
                  t=_T.value, out=out, batch_size=_BATCH.value, steps=_STEPS.value, seed=_SEED.value)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"error: {e}")
  print(summary_table(metrics))
  print(f"-> {out}/metrics.json, psnr_vs_t.png, rollouts.png")


if __name__ == "__main__":
  app.run(main)
