"""How latent actions relate to the real ones, where the data has real actions.

best_mapping_accuracy: map each latent action to the real action it co-occurs with most
often (many latents may map to one real action) and score that mapping.
normalized_mutual_information: I(L; R) / sqrt(H(L) H(R)) (0: independent, 1: a bijection).
"""
from __future__ import annotations

import numpy as np


def contingency(latent: np.ndarray, real: np.ndarray, num_latent: int, num_real: int) -> np.ndarray:
  latent, real = np.asarray(latent).ravel(), np.asarray(real).ravel()
  if latent.shape != real.shape:
    raise ValueError(f"latent {latent.shape} and real {real.shape} actions must pair up")
  table = np.zeros((num_latent, num_real), np.int64)
  np.add.at(table, (latent, real), 1)
  return table


def best_mapping_accuracy(table: np.ndarray) -> float:
  return float(table.max(axis=1).sum() / max(table.sum(), 1))


def normalized_mutual_information(table: np.ndarray) -> float:
  p = table / max(table.sum(), 1)
  pl, pr = p.sum(1), p.sum(0)
  nz = p > 0
  mi = float(np.sum(p[nz] * np.log(p[nz] / (pl[:, None] * pr[None, :])[nz])))
  # clamped: one label's entropy sums to -0.0 or a rounding error below it, not 0
  entropy = lambda q: max(0.0, float(-np.sum(q[q > 0] * np.log(q[q > 0]))))
  denom = np.sqrt(entropy(pl) * entropy(pr))
  return mi / denom if denom > 0 else 0.0


def accuracy_and_nmi(latent: np.ndarray, real: np.ndarray, num_latent: int, num_real: int) -> tuple[float, float]:
  """Best-mapping accuracy and NMI of latent labels against real ones."""
  table = contingency(latent, real, num_latent, num_real)
  return best_mapping_accuracy(table), normalized_mutual_information(table)
