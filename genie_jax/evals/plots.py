"""PNG figures of an evaluation (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402


def psnr_vs_t(metrics: dict, path: str) -> str:
  """PSNR of x̂_t against x_t for LAM-inferred vs random actions, t = 1..T-1."""
  r = metrics["rollout"]
  t = np.arange(1, len(r["psnr_lam"]) + 1)
  fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
  ax.plot(t, r["psnr_lam"], "o-", label="latent actions from the LAM")
  ax.plot(t, r["psnr_random"], "s--", label="random latent actions")
  ax.axvline(metrics["t"], color="grey", lw=0.8, ls=":")
  d = metrics["delta_psnr"]
  ax.set(xlabel="t (frames after the prompt)", ylabel="PSNR(x_t, x̂_t) [dB]",
         title=f"Δ{metrics['t']}PSNR = {d['mean']:+.2f} ± {d['ci95']:.2f} dB ({metrics['num_clips']} clips)")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def rollout_grid(examples: dict, path: str) -> str:
  """Per clip three rows: ground truth x_1.., LAM-action rollout, random-action rollout."""
  rows = []
  for i in range(len(examples["truth"])):
    rows += [examples["truth"][i, 1:], examples["lam"][i], examples["random"][i]]
  grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
  h = examples["truth"].shape[2]
  fig, ax = plt.subplots(figsize=(grid.shape[1] / 60, grid.shape[0] / 60 + 0.5), dpi=100)
  ax.imshow(grid)
  ax.set_yticks([h * (k + 0.5) for k in range(len(rows))])
  ax.set_yticklabels(["truth", "LAM", "random"] * len(examples["truth"]), fontsize=7)
  ax.set_xticks([])
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path
