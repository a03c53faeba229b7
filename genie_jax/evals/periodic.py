"""Evaluation inside training (config.train.eval_every > 0): a few held-out clips scored
with the current parameters, logged next to the losses as eval/* scalars.

Phase 1 scores tokenizer reconstructions (PSNR, SSIM). Phase 2 runs the world-model
protocol of evals.world_eval without FVD (ΔtPSNR, rollout PSNR, latent-action usage and,
where the data has real actions, their NMI), through a Genie built once around the
trainer's own params, so later evaluations reuse its compiled functions.
"""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from genie_jax.evals import image_metrics, world_eval


class PeriodicEvaluator:
  def __init__(self, config, *, graphdef, tokenizer_graphdef=None, mesh):
    self.config, self.graphdef, self.tokenizer_graphdef, self.mesh = config, graphdef, tokenizer_graphdef, mesh
    self.num_clips = config.train.eval_clips
    self.t = min(4, config.data.window - 1)
    self._genie = None
    self._reconstruct = jax.jit(lambda params, frames: nnx.merge(graphdef, params)(frames).reconstruction)

  def _batches(self):
    from genie_jax.evals import run  # pylint: disable=g-import-not-at-top
    return run.evaluation_batches(self.config, batch_size=self.config.train.batch_size)

  def __call__(self, params, frozen) -> dict[str, float]:
    if self.config.phase == "tokenizer":
      psnr, ssim, seen = [], [], 0
      for batch in self._batches():
        truth = batch["frames"].astype(np.float32) / 255.0
        recon = np.asarray(self._reconstruct(params, batch["frames"]))
        psnr.append(np.asarray(image_metrics.psnr(truth, recon)).ravel())
        ssim.append(np.asarray(image_metrics.ssim(truth, recon)).ravel())
        seen += len(truth)
        if seen >= self.num_clips:
          break
      return {"eval/recon_psnr": float(np.mean(np.concatenate(psnr))),
              "eval/recon_ssim": float(np.mean(np.concatenate(ssim)))}
    from genie_jax.genie import Genie  # pylint: disable=g-import-not-at-top
    all_params = {"tokenizer": frozen, "world": params}
    if self._genie is None:
      self._genie = Genie(config=self.config, tokenizer_graphdef=self.tokenizer_graphdef,
                          world_graphdef=self.graphdef, params=all_params, mesh=self.mesh)
    self._genie.params = all_params
    m, _ = world_eval.evaluate_world(self._genie, self._batches(), num_clips=self.num_clips, t=self.t)
    out = {f"eval/delta{self.t}_psnr": m["delta_psnr"]["mean"],
           f"eval/psnr_lam_t{self.t}": m["delta_psnr"]["psnr_lam"],
           f"eval/psnr_random_t{self.t}": m["delta_psnr"]["psnr_random"],
           "eval/rollout_psnr": m["rollout_psnr_lam_mean"], "eval/recon_psnr": m["recon_psnr"],
           "eval/actions_used": float(m["latent_actions"]["used"])}
    if "real_actions" in m:
      out["eval/action_nmi"] = m["real_actions"]["nmi"]
    return out
