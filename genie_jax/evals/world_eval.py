"""The world model's evaluation on held-out clips (Genie, Sec. 3 and App. D).

For every clip x_0..x_T-1 of the evaluation split:
  * the LAM infers a_0..a_T-2 from the clip; the model rolls out x̂_1.. from the prompt
    x_0 with those actions, and x̂'_1.. with uniformly random actions (same seed);
  * PSNR and SSIM of every rolled-out frame against the clip, for both;
  * ΔtPSNR = PSNR(x_t, x̂_t) - PSNR(x_t, x̂'_t) at t (default 4), mean and 95% interval
    over clips (normal approximation, 1.96 standard errors);
  * the tokenizer's reconstruction PSNR/SSIM of the clip;
  * latent-action usage, and where the data has real actions, how well latent actions
    predict them (best latent->real mapping accuracy, normalised mutual information);
  * next-frame token accuracy of the dynamics model from the true past (its first MaskGIT
    step's argmax) with the LAM's actions, with random actions, and of copying the
    previous frame's tokens, over all tokens and over the tokens that change: a model that
    only learned to copy scores the same with either action and nothing on the changes;
  * FVD between the real clips and [x_0, x̂_1..] (LAM actions) of the first `fvd_clips`
    clips, when an extractor is given (one pass serves both counts).
"""
from __future__ import annotations

import numpy as np

from genie_jax.evals import action_metrics, fvd as fvd_lib, image_metrics


def mean_ci(values: np.ndarray) -> tuple[float, float]:
  """(mean, half-width of its normal 95% interval)."""
  values = np.asarray(values, np.float64)
  half = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
  return float(values.mean()), float(half)


def evaluate_world(genie, batches, *, num_clips: int, t: int = 4, seed: int = 0,
                   extractor: fvd_lib.FeatureExtractor | None = None, fvd_clips: int | None = None,
                   keep_examples: int = 4, action_source: str = "lam"):
  """batches: iterable of {"frames": uint8 [B, T, H, W, 3], "actions": int [B, T]}.

  action_source "true" (a model trained as the true-action control) rolls out with the
  dataset's actions where the LAM's would go: the "lam" figures then measure the
  dynamics model alone.

  Metrics use the first `num_clips` clips, FVD the first `fvd_clips` (default num_clips).
  Returns (metrics dict, examples dict of uint8 arrays for plots).
  """
  fvd_clips = num_clips if fvd_clips is None else fvd_clips
  total = max(num_clips, fvd_clips if extractor is not None else 0)
  rng = np.random.default_rng(seed)
  per_frame = {k: [] for k in ("psnr_lam", "psnr_random", "ssim_lam", "ssim_random", "recon_psnr", "recon_ssim")}
  latent, real, reals, fakes, examples = [], [], [], [], {}
  token_hits = {k: [] for k in ("lam", "random", "copy")}
  changed = []
  seen = 0
  for batch in batches:
    frames = np.asarray(batch["frames"])[: total - seen]
    if frames.shape[1] <= t:
      raise ValueError(f"ΔtPSNR at t={t} needs clips of more than {t} frames; these have {frames.shape[1]}")
    inferred = genie.infer_actions(frames)  # the LAM's reading, scored against the real actions
    lam_actions = (np.asarray(batch["actions"])[: len(frames), :-1].astype(np.int32)
                   if action_source == "true" else inferred)
    random_actions = rng.integers(0, genie.num_actions, lam_actions.shape)
    roll_seed = int(rng.integers(2**31 - 1))
    rolled_lam = genie.rollout(frames[:, :1], lam_actions, seed=roll_seed)
    rolled_random = genie.rollout(frames[:, :1], random_actions, seed=roll_seed)
    truth = frames[:, 1:].astype(np.float32) / 255.0
    for name, video in (("lam", rolled_lam), ("random", rolled_random)):
      video = video.astype(np.float32) / 255.0
      per_frame[f"psnr_{name}"].append(np.asarray(image_metrics.psnr(truth, video)))
      per_frame[f"ssim_{name}"].append(np.asarray(image_metrics.ssim(truth, video)))
    grid_tokens = genie.encode(frames)
    tokens = grid_tokens.reshape(*grid_tokens.shape[:2], -1)
    token_hits["copy"].append(tokens[:, :-1] == tokens[:, 1:])
    for name, acts in (("lam", lam_actions), ("random", random_actions)):
      token_hits[name].append(genie.next_frame_predictions(grid_tokens, acts) == tokens[:, 1:])
    changed.append(tokens[:, :-1] != tokens[:, 1:])
    recon = genie.decode(grid_tokens).astype(np.float32) / 255.0
    whole = frames.astype(np.float32) / 255.0
    per_frame["recon_psnr"].append(np.asarray(image_metrics.psnr(whole, recon)))
    per_frame["recon_ssim"].append(np.asarray(image_metrics.ssim(whole, recon)))
    latent.append(inferred)
    real.append(np.asarray(batch["actions"])[: len(frames), :-1])
    if extractor is not None:
      reals.append(frames)
      fakes.append(np.concatenate([frames[:, :1], rolled_lam], axis=1))
    if not examples:
      k = min(keep_examples, len(frames))
      examples = {"truth": frames[:k], "lam": rolled_lam[:k], "random": rolled_random[:k],
                  "lam_actions": lam_actions[:k], "random_actions": random_actions[:k]}
    seen += len(frames)
    if seen >= total:
      break
  if seen < total:
    raise ValueError(f"the evaluation split gave {seen} clips, fewer than the {total} asked for")
  cat = {k: np.concatenate(v)[:num_clips] for k, v in per_frame.items()}  # [N, frames]
  delta = cat["psnr_lam"][:, t - 1] - cat["psnr_random"][:, t - 1]  # column t-1 holds x_t
  mean, ci95 = mean_ci(delta)
  latent = np.concatenate(latent)[:num_clips]
  real = np.concatenate(real)[:num_clips]
  usage = np.bincount(latent.ravel(), minlength=genie.num_actions)
  probs = usage / usage.sum()
  metrics = {
      "action_source": action_source,
      "num_clips": int(num_clips), "clip_frames": int(frames.shape[1]), "t": t,
      "delta_psnr": {"mean": mean, "ci95": ci95, "psnr_lam": float(cat["psnr_lam"][:, t - 1].mean()),
                     "psnr_random": float(cat["psnr_random"][:, t - 1].mean())},
      "rollout": {k: cat[k].mean(0).tolist() for k in ("psnr_lam", "psnr_random", "ssim_lam", "ssim_random")},
      "rollout_psnr_lam_mean": float(cat["psnr_lam"].mean()),
      "rollout_ssim_lam_mean": float(cat["ssim_lam"].mean()),
      "recon_psnr": float(cat["recon_psnr"].mean()), "recon_ssim": float(cat["recon_ssim"].mean()),
      "latent_actions": {"usage": usage.tolist(), "used": int((usage > 0).sum()),
                         "perplexity": float(np.exp(-np.sum(probs[probs > 0] * np.log(probs[probs > 0]))))},
  }
  changed = np.concatenate(changed)[:num_clips]
  hits = {k: np.concatenate(v)[:num_clips] for k, v in token_hits.items()}
  metrics["next_frame_tokens"] = {
      "changed_fraction": float(changed.mean()),
      **{f"{k}_accuracy": float(v.mean()) for k, v in hits.items()},
      **{f"{k}_accuracy_changed": float(v[changed].mean()) if changed.any() else float("nan")
         for k, v in hits.items() if k != "copy"}}
  if np.all(real >= 0):  # videos without actions store -1
    table = action_metrics.contingency(latent, real, genie.num_actions, int(real.max()) + 1)
    metrics["real_actions"] = {"best_mapping_accuracy": action_metrics.best_mapping_accuracy(table),
                               "nmi": action_metrics.normalized_mutual_information(table)}
  if extractor is not None:
    real_clips, fake_clips = np.concatenate(reals)[:fvd_clips], np.concatenate(fakes)[:fvd_clips]
    metrics["fvd"] = {"value": fvd_lib.fvd(real_clips, fake_clips, extractor),
                      "real_clips": len(real_clips), "generated_clips": len(fake_clips),
                      "frames": int(real_clips.shape[1])}
  return metrics, examples
