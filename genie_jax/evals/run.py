"""The evaluation as a library: fixed held-out batches, the full run (metrics.json and PNG
plots), and the summary table. `python -m genie_jax.evaluate` is its command line; the
quickstart and periodic evaluation call it directly."""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from data_pipelines import loader
from genie_jax import parallel
from genie_jax.evals import fvd as fvd_lib, plots, world_eval
from genie_jax.genie import Genie


def evaluation_batches(config, *, batch_size: int, split: str | None = None):
  """Fixed (unshuffled) windows of the evaluation split, one per record (so no clip is
  counted twice), as numpy batches on the host."""
  mesh = parallel.make_mesh(data=1, devices=jax.devices()[:1])
  data = loader.make_iterator(config.data, mesh=mesh, rules=config.rules,
                              split=split or config.data.eval_split, global_batch_size=batch_size,
                              seed=0, shuffle=False, num_epochs=1)
  for batch in data:
    yield {k: np.asarray(v) for k, v in batch.items()}


def run(config, workdir: str, *, num_clips: int, fvd_clips: int, t: int, out: str, batch_size: int = 8,
        steps: int | None = None, temperature: float | None = None, seed: int = 0, genie=None) -> dict:
  started = time.perf_counter()
  genie = genie or Genie.load(workdir, steps=steps, temperature=temperature, seed=seed)
  extractor = fvd_lib.FeatureExtractor() if fvd_clips else None
  # a true-action control run is evaluated with the actions its dynamics model learned from
  action_source = genie.config.train.get("dynamics_actions", "lam")
  metrics, examples = world_eval.evaluate_world(
      genie, evaluation_batches(config, batch_size=batch_size), num_clips=num_clips, t=t, seed=seed,
      extractor=extractor, fvd_clips=fvd_clips, action_source=action_source)
  metrics["maskgit_steps"] = genie.sampling["steps"]
  metrics["temperature"] = genie.sampling["temperature"]
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
          ("actions rolled out", "the dataset's true actions (control run)" if m.get("action_source") == "true"
           else "the LAM's, inferred from each clip"),
          (f"Δ{m['t']}PSNR (95% CI)", f"{d['mean']:+.3f} ± {d['ci95']:.3f} dB"),
          (f"PSNR x̂_{m['t']}: LAM / random", f"{d['psnr_lam']:.2f} / {d['psnr_random']:.2f} dB"),
          ("rollout PSNR / SSIM (LAM, all t)", f"{m['rollout_psnr_lam_mean']:.2f} dB / {m['rollout_ssim_lam_mean']:.3f}"),
          ("tokenizer PSNR / SSIM", f"{m['recon_psnr']:.2f} dB / {m['recon_ssim']:.3f}"),
          ("latent actions used", f"{m['latent_actions']['used']} (perplexity {m['latent_actions']['perplexity']:.2f})")]
  if "next_frame_tokens" in m:
    n = m["next_frame_tokens"]
    rows.append(("next-frame tokens: LAM / random / copy",
                 f"{n['lam_accuracy']:.3f} / {n['random_accuracy']:.3f} / {n['copy_accuracy']:.3f}"))
    rows.append((f"  on changed tokens ({100 * n['changed_fraction']:.1f}%): LAM / random",
                 f"{n['lam_accuracy_changed']:.3f} / {n['random_accuracy_changed']:.3f}"))
  if "real_actions" in m:
    r = m["real_actions"]
    rows.append(("latent->real actions", f"accuracy {r['best_mapping_accuracy']:.3f}, NMI {r['nmi']:.3f}"))
  if "fvd" in m:
    f = m["fvd"]
    rows.append(("FVD", f"{f['value']:.1f} ({f['real_clips']} real vs {f['generated_clips']} generated clips, "
                        f"{f['frames']} frames)"))
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
