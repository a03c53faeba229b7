"""The few-shot step (Genie, App. E): latent actions -> real actions from N labelled
transitions, and nothing else. Each latent code maps to the real action most often taken
where the LAM gave that code (ties: the smaller action id); a code the N transitions never
show maps to the real action most common among them."""
from __future__ import annotations

import numpy as np

from genie_jax.evals.action_metrics import contingency


def fit_mapping(latent: np.ndarray, real: np.ndarray, *, num_latent: int, num_real: int) -> np.ndarray:
  """latent int [N], real int [N] (the same N transitions) -> int [num_latent]: the real
  action each latent code stands for."""
  latent, real = np.asarray(latent), np.asarray(real)
  if latent.shape != real.shape or latent.ndim != 1 or len(latent) == 0:
    raise ValueError(f"the mapping needs N >= 1 transitions, latent and real of one shape [N]; "
                     f"got {latent.shape} and {real.shape}")
  if latent.min() < 0 or latent.max() >= num_latent:
    raise ValueError(f"latent actions must lie in [0, {num_latent}), got {latent.min()}..{latent.max()}")
  if real.min() < 0 or real.max() >= num_real:
    raise ValueError(f"real actions must lie in [0, {num_real}), got {real.min()}..{real.max()}")
  counts = contingency(latent, real, num_latent, num_real)
  overall = int(np.argmax(counts.sum(axis=0)))
  return np.where(counts.sum(axis=1) > 0, np.argmax(counts, axis=1), overall)
