"""Fréchet Video Distance (Unterthiner et al. 2018) with the Kinetics-400 I3D logits.

Clips uint8 [N, T, H, W, 3] are resized to 224x224 (bilinear), mapped to [-1, 1] and
embedded by I3D in device-sharded batches; FVD is the Fréchet distance between Gaussians
fitted to the two feature sets, in float64:
    ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)).
Report the number of real and generated clips with every figure: FVD is biased upward
for small sets.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from genie_jax.evals import i3d as i3d_lib

I3D_SIZE = 224
MIN_FRAMES = 9


def preprocess(clips: jax.Array) -> jax.Array:
  """uint8 [B, T, H, W, 3] -> float32 [B, T, 224, 224, 3] in [-1, 1]."""
  x = clips.astype(jnp.float32) / 127.5 - 1.0
  b, t = x.shape[:2]
  return jax.image.resize(x, (b, t, I3D_SIZE, I3D_SIZE, 3), method="bilinear")


class FeatureExtractor:
  """I3D logits of clips, in fixed-size batches sharded over `devices` (default: all)."""

  def __init__(self, *, batch_size: int = 8, devices=None, model: i3d_lib.I3D | None = None):
    devices = list(devices or jax.devices())
    self.mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
    self.batch_size = max(batch_size // len(devices), 1) * len(devices)  # divisible by devices
    graphdef, weights = nnx.split(model or i3d_lib.load_pretrained())
    replicated = NamedSharding(self.mesh, P())
    self._weights = jax.device_put(weights, replicated)
    self._sharding = NamedSharding(self.mesh, P("batch"))
    self._embed = jax.jit(lambda w, clips: nnx.merge(graphdef, w)(preprocess(clips)),
                          in_shardings=(replicated, self._sharding), out_shardings=self._sharding)

  def __call__(self, clips: np.ndarray) -> np.ndarray:
    """uint8 [N, T, H, W, 3] -> float64 [N, 400]."""
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.shape[-1] != 3:
      raise ValueError(f"FVD expects clips [N, T, H, W, 3], got {clips.shape}")
    if clips.shape[1] < MIN_FRAMES:  # I3D halves time 3 times, then pools 2 frames
      raise ValueError(f"I3D needs clips of at least {MIN_FRAMES} frames (FVD is usually "
                       f"reported at 16); these have {clips.shape[1]}")
    feats = []
    for start in range(0, len(clips), self.batch_size):
      batch = clips[start:start + self.batch_size]
      pad = self.batch_size - len(batch)
      if pad:  # a fixed batch shape compiles once; padded rows are dropped below
        batch = np.concatenate([batch, np.repeat(batch[-1:], pad, axis=0)])
      out = self._embed(self._weights, jax.device_put(batch, self._sharding))
      feats.append(np.asarray(out, np.float64)[:len(batch) - pad])
    return np.concatenate(feats)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh(matrix)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
  """Fréchet distance between Gaussians fitted to two feature sets [N, D], float64.

  Tr((S_a S_b)^(1/2)) = sum of sqrt(eig(S_a^(1/2) S_b S_a^(1/2))): symmetric PSD, so it is
  stable even when N < D makes the covariances singular.
  """
  a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
  if a.ndim != 2 or a.shape[1:] != b.shape[1:] or min(len(a), len(b)) < 2:
    raise ValueError(f"need two feature sets [N>=2, D] of equal D, got {a.shape} and {b.shape}")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
    raise ValueError("features hold NaN or Inf")
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root_a = _sqrt_psd(cov_a)
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0.0, None)).sum()
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)


def fvd(real: np.ndarray, generated: np.ndarray, extractor: FeatureExtractor) -> float:
  """FVD between two sets of uint8 clips [N, T, H, W, 3]."""
  return frechet_distance(extractor(real), extractor(generated))
