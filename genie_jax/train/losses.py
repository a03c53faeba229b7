"""Per-phase losses. Each returns (loss, (metrics, vq_stats)) for a merged NNX model.

Phase 1 (tokenizer): pixel MSE + VQ loss.
Phase 2 (lam_dynamics): LAM pixel MSE + VQ loss, plus MaskGIT cross-entropy of the
dynamics model on tokens of the frozen tokenizer, conditioned on the LAM's actions
(discrete ids, so no gradient flows from the dynamics into the LAM).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from genie_jax.models import dynamics as dynamics_lib
from genie_jax.models import patching, quantizer


def psnr_from_mse(mse: jax.Array) -> jax.Array:
  """PSNR in dB for pixels in [0, 1]."""
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def tokenizer_loss(model, batch: dict, rng: jax.Array):
  del rng
  video = patching.to_unit_float(batch["frames"])
  out = model(video)
  mse = jnp.mean(jnp.square(out.reconstruction - video))
  counts = quantizer.code_usage(out.tokens, model.num_codes)
  metrics = {"loss": mse + out.vq_loss, "recon_mse": mse, "recon_psnr": psnr_from_mse(mse),
             "vq_loss": out.vq_loss, "codebook_perplexity": quantizer.perplexity(counts),
             "codebook_used": jnp.sum(counts > 0)}
  return metrics["loss"], (metrics, {"tokenizer": (counts, out.latents)})


def mask_tokens(rng: jax.Array, tokens: jax.Array, *, rate_min: float, rate_max: float):
  """MaskGIT training mask: one rate ~ U(rate_min, rate_max) per sample, Bernoulli per token.

  tokens int [B, T, S] -> bool mask [B, T, S]; frame 0 is never masked (it is the prompt).
  """
  rate_key, mask_key = jax.random.split(rng)
  rate = jax.random.uniform(rate_key, (tokens.shape[0], 1, 1), minval=rate_min, maxval=rate_max)
  mask = jax.random.uniform(mask_key, tokens.shape) < rate
  return mask.at[:, 0].set(False)


def masked_token_loss(logits, targets, mask):
  """Mean cross-entropy and accuracy over masked tokens only."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  weight = mask.astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(weight), 1.0)
  acc = jnp.sum((jnp.argmax(logits, -1) == targets) * weight) / denom
  return jnp.sum(ce * weight) / denom, acc


def lam_dynamics_loss(model, batch: dict, rng: jax.Array, *, tokenizer, lam_weight: float,
                      rate_min: float, rate_max: float):
  video = patching.to_unit_float(batch["frames"])
  lam_out = model.lam(video)
  lam_mse = jnp.mean(jnp.square(lam_out.prediction - video[:, 1:]))
  tokens = jax.lax.stop_gradient(tokenizer.encode(video))
  tokens = tokens.reshape(*tokens.shape[:2], -1)
  num_actions = model.dynamics.num_actions
  actions = dynamics_lib.frame_actions(jax.lax.stop_gradient(lam_out.actions), num_actions)
  mask = mask_tokens(rng, tokens, rate_min=rate_min, rate_max=rate_max)
  logits = model.dynamics(jnp.where(mask, model.dynamics.mask_id, tokens), actions)
  ce, acc = masked_token_loss(logits, tokens, mask)
  counts = quantizer.code_usage(lam_out.actions, num_actions)
  loss = ce + lam_weight * (lam_mse + lam_out.vq_loss)
  metrics = {"loss": loss, "dynamics_ce": ce, "dynamics_token_acc": acc, "lam_mse": lam_mse,
             "lam_psnr": psnr_from_mse(lam_mse), "lam_vq_loss": lam_out.vq_loss,
             "action_perplexity": quantizer.perplexity(counts), "actions_used": jnp.sum(counts > 0)}
  return loss, (metrics, {"lam": (counts, lam_out.latents)})
