"""PSNR and SSIM of frames in [0, 1], per frame, on device.

SSIM is Wang et al. (2004) as scikit-image computes it with gaussian_weights=True:
an 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma), K1 0.01, K2 0.03, population
covariances, averaged over the valid (unpadded) region and over colour channels.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SSIM_SIGMA, SSIM_TRUNCATE, K1, K2 = 1.5, 3.5, 0.01, 0.03


def psnr(a: jax.Array, b: jax.Array, *, data_range: float = 1.0) -> jax.Array:
  """[..., H, W, C] -> [...]: 10 log10(range^2 / MSE) per frame."""
  mse = jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(data_range ** 2 / jnp.maximum(mse, 1e-10))


def _gaussian_kernel() -> np.ndarray:
  radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  k = np.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
  return (k / k.sum()).astype(np.float32)


def _filter(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Separable 'valid' Gaussian filter over H, W of [N, H, W]."""
  k = kernel.shape[0]
  x = jax.lax.conv_general_dilated(x[:, None], kernel.reshape(1, 1, k, 1), (1, 1), "VALID",
                                   precision=jax.lax.Precision.HIGHEST)
  x = jax.lax.conv_general_dilated(x, kernel.reshape(1, 1, 1, k), (1, 1), "VALID",
                                   precision=jax.lax.Precision.HIGHEST)
  return x[:, 0]


def ssim(a: jax.Array, b: jax.Array, *, data_range: float = 1.0) -> jax.Array:
  """[..., H, W, C] -> [...] mean SSIM per frame."""
  lead, (h, w, c) = a.shape[:-3], a.shape[-3:]
  to_maps = lambda x: jnp.moveaxis(x.astype(jnp.float32).reshape(-1, h, w, c), -1, 1).reshape(-1, h, w)
  x, y = to_maps(a), to_maps(b)
  kernel = jnp.asarray(_gaussian_kernel())
  mx, my = _filter(x, kernel), _filter(y, kernel)
  sxx = _filter(x * x, kernel) - mx * mx
  syy = _filter(y * y, kernel) - my * my
  sxy = _filter(x * y, kernel) - mx * my
  c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
  s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
  return jnp.mean(s.reshape(-1, c, *s.shape[1:]), axis=(1, 2, 3)).reshape(lead)
