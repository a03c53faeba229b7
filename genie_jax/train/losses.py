"""Per-phase losses. Each returns (loss, (metrics, vq_stats)) for a merged NNX model.

Phase 1 (tokenizer): pixel MSE + VQ loss.
Phase 2 (lam_dynamics): LAM pixel MSE + VQ loss, plus MaskGIT cross-entropy of the
dynamics model on tokens of the frozen tokenizer, conditioned on the LAM's actions
(discrete ids, so no gradient flows from the dynamics into the LAM), or, as a control
(`dynamics_actions="true"`), on the dataset's true actions: that separates the dynamics
model's faults from the LAM's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from genie_jax.models import dynamics as dynamics_lib
from genie_jax.models import fsq, patching, quantizer


def psnr_from_mse(mse: jax.Array) -> jax.Array:
  """PSNR in dB for pixels in [0, 1]."""
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def moving_pixels(video: jax.Array, threshold: float = 0.02) -> jax.Array:
  """video [B, T, H, W, C] in [0, 1] -> bool [B, T, H, W]: pixels that differ (by more than
  `threshold` in some channel) from the same pixel in the frame before or after."""
  step = jnp.max(jnp.abs(jnp.diff(video, axis=1)), axis=-1) > threshold  # [B, T-1, H, W]
  none = jnp.zeros_like(step[:, :1])
  return jnp.concatenate([none, step], axis=1) | jnp.concatenate([step, none], axis=1)


def centre_box(height: int, width: int, size: int) -> jax.Array:
  """bool [height, width]: the size x size pixels at the frame's centre."""
  top, left = (height - size) // 2, (width - size) // 2
  rows = (jnp.arange(height) >= top) & (jnp.arange(height) < top + size)
  cols = (jnp.arange(width) >= left) & (jnp.arange(width) < left + size)
  return rows[:, None] & cols[None, :]


def reconstruction_loss(reconstruction: jax.Array, video: jax.Array, *, change_weight: float = 0.0,
                        focus_weight: float = 0.0, focus_size: int = 0):
  """Mean squared error, each pixel weighted 1 + change_weight where it moves (moving_pixels)
  and + focus_weight inside the focus_size x focus_size box at the frame's centre,
  normalised by the weights' sum: plain MSE at 0. What moves (a sprite, a player) is a few
  percent of the pixels, and under plain MSE a tokenizer learns the background and smears it
  (README, "A world that obeys its actions"). The centre is where a game that follows its
  player with the camera (CoinRun) keeps it: there a key changes the player's pose and facing
  at once, where elsewhere the view scrolls with a speed that past keys set (`lam.focus_weight`;
  on CoinRun's LAM it did not move the codes' NMI with the keys: README, "CPU reference run")."""
  squared = jnp.mean(jnp.square(reconstruction - video), axis=-1)
  if not change_weight and not focus_weight:
    return jnp.mean(squared)
  weight = jnp.ones_like(squared)
  if change_weight:
    weight = weight + change_weight * moving_pixels(video).astype(squared.dtype)
  if focus_weight:
    if not 0 < focus_size <= min(squared.shape[-2:]):
      raise ValueError(f"focus_size {focus_size} must be in 1..{min(squared.shape[-2:])} (the frame's "
                       f"{squared.shape[-2]}x{squared.shape[-1]} pixels) when focus_weight is set")
    box = centre_box(*squared.shape[-2:], focus_size).astype(squared.dtype)
    weight = weight + focus_weight * jnp.broadcast_to(box, squared.shape)
  return jnp.sum(weight * squared) / jnp.sum(weight)


def tokenizer_loss(model, batch: dict, rng: jax.Array, *, change_weight: float = 0.0):
  del rng
  video = patching.to_unit_float(batch["frames"])
  out = model(video)
  mse = jnp.mean(jnp.square(out.reconstruction - video))
  objective = reconstruction_loss(out.reconstruction, video, change_weight=change_weight)
  counts = quantizer.code_usage(out.tokens, model.num_codes)
  metrics = {"loss": objective + out.vq_loss, "recon_mse": mse, "recon_psnr": psnr_from_mse(mse),
             "vq_loss": out.vq_loss, "codebook_perplexity": quantizer.perplexity(counts),
             "codebook_used": jnp.sum(counts > 0)}
  return metrics["loss"], (metrics, {"tokenizer": (counts, out.latents)})


MASK_SCHEMES = ("all_frames", "one_frame", "teacher_forced")
DYNAMICS_ACTIONS = ("lam", "true")


def mask_tokens(rng: jax.Array, tokens: jax.Array, *, rate_min: float, rate_max: float,
                scheme: str = "all_frames", full_mask_prob: float = 0.0):
  """MaskGIT training mask: one rate ~ U(rate_min, rate_max) per sample, Bernoulli per token;
  with probability `full_mask_prob` the rate is 1 (the whole frame is masked).

  tokens int [B, T, S] -> bool mask [B, T, S]; frame 0 is never masked (it is the prompt).
  "all_frames" (the paper, Jasmine): the rate applies to frames 1..T-1 alike, so most of
  the context of a masked frame is masked too. "one_frame": one frame k in 1..T-1 per
  sample is masked and every other frame is whole, which is exactly what sampling asks
  of the model (a clean past, a masked next frame), but one frame in T is a target.
  "teacher_forced": every frame 1..T-1 gets its own rate and is predicted from the clean
  frames before it (DynamicsModel.teacher_forced): what sampling asks, T-1 targets per
  clip, for twice the compute.

  Why whole frames: a frame partly visible shows where the sprite went, so the model can
  copy that from its neighbours and never needs the action; sampling's first step, which
  lays the frame out, sees nothing of it (README, "A world that obeys its actions").
  """
  if scheme not in MASK_SCHEMES:
    raise ValueError(f"unknown mask scheme {scheme!r}; choose from {MASK_SCHEMES}")
  rate_key, mask_key, frame_key, full_key = jax.random.split(rng, 4)
  b, t = tokens.shape[:2]
  rate_shape = (b, t, 1) if scheme == "teacher_forced" else (b, 1, 1)
  rate = jax.random.uniform(rate_key, rate_shape, minval=rate_min, maxval=rate_max)
  rate = jnp.where(jax.random.uniform(full_key, rate_shape) < full_mask_prob, 1.0, rate)
  mask = jax.random.uniform(mask_key, tokens.shape) < rate
  if scheme == "one_frame":
    target = jax.random.randint(frame_key, (b, 1, 1), 1, t)
    mask = mask & (jnp.arange(t)[None, :, None] == target)
  return mask.at[:, 0].set(False)


def dynamics_logits(dynamics, tokens: jax.Array, mask: jax.Array, actions: jax.Array, *, scheme: str,
                    joint: bool = True):
  """Logits [B, T, S, K] of the dynamics model for the tokens under `mask` (mask_tokens);
  `joint=False`: the fsq_digits head's per-channel logits (DynamicsModel._logits)."""
  masked = jnp.where(mask, dynamics.mask_id, tokens)
  if scheme == "teacher_forced":
    return dynamics.teacher_forced(tokens, masked, actions, joint=joint)
  return dynamics(masked, actions, joint=joint)


def changed_tokens(tokens: jax.Array) -> jax.Array:
  """tokens int [B, T, S] -> bool [B, T, S]: tokens that differ from the same position's token
  in the frame before (frame 0: none)."""
  changed = tokens[:, 1:] != tokens[:, :-1]
  return jnp.concatenate([jnp.zeros_like(changed[:, :1]), changed], axis=1)


def dynamics_token_loss(dynamics, tokens: jax.Array, mask: jax.Array, actions: jax.Array, *,
                        scheme: str, change_weight: float = 0.0):
  """(cross-entropy, accuracy) of the dynamics model on the tokens under `mask`, the fsq_digits
  head's taken channel by channel. With `change_weight` a token that differs from the frame
  before's (changed_tokens) weighs 1 + change_weight in the cross-entropy: what an action moves
  is a few percent of the tokens, and copying the previous frame gets the rest right
  (README, "A world that obeys its actions"); the accuracy stays unweighted."""
  logits = dynamics_logits(dynamics, tokens, mask, actions, scheme=scheme, joint=False)
  weight = 1.0 + change_weight * changed_tokens(tokens).astype(jnp.float32) if change_weight else None
  return masked_token_loss(logits, tokens, mask, code_levels=dynamics.code_levels, weight=weight)


def integer_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """-log softmax(logits)[label] per row, in float32: logits [..., V], int labels [...].

  The label's logit is read through a one-hot product, not a gather (optax's
  take_along_axis), so the backward is softmax - one_hot, elementwise, instead of a
  scatter into [..., V] (scatters are slow on GPUs: see models/layers.take_rows)."""
  logits = logits.astype(jnp.float32)
  picked = jnp.sum(logits * jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype), axis=-1)
  return jax.nn.logsumexp(logits, axis=-1) - picked


def masked_token_loss(logits, targets, mask, *, code_levels=(), weight=None):
  """Mean cross-entropy and accuracy over masked tokens only.

  With `code_levels` (an FSQ tokenizer's, for the fsq_digits head) the logits are per
  channel, [.., sum(levels)]: the cross-entropy is the sum of the channels' (the head's
  joint probability is their product, so this is the joint cross-entropy) and a token is
  right when every digit is (the joint argmax is the argmax of each channel). `weight`
  (float, the shape of `targets`) weighs each masked token's cross-entropy, normalised by
  the weights' sum; the accuracy counts every masked token once.
  """
  counted = mask.astype(jnp.float32)
  ce_weight = counted if weight is None else counted * weight
  if code_levels:
    digits = fsq.digits(targets, code_levels)
    channels = dynamics_lib.split_channels(logits, code_levels)
    ce = sum(integer_cross_entropy(c, digits[..., i]) for i, c in enumerate(channels))
    right = jnp.all(jnp.stack([jnp.argmax(c, -1) == digits[..., i] for i, c in enumerate(channels)]), axis=0)
  else:
    ce = integer_cross_entropy(logits, targets)
    right = jnp.argmax(logits, -1) == targets
  # with no token masked both sums are 0 and so is each mean
  return (jnp.sum(ce * ce_weight) / jnp.maximum(jnp.sum(ce_weight), 1e-6),
          jnp.sum(right * counted) / jnp.maximum(jnp.sum(counted), 1.0))


def lam_loss(lam_out, video: jax.Array, *, soft_weight: float = 0.0, focus_weight: float = 0.0,
             focus_size: int = 0, null_weight: float = 0.0):
  """The LAM's objective for video [B, T, H, W, 3] in [0, 1] -> (loss, prediction MSE, MSE of
  the prediction from the continuous latents): the error, plus `soft_weight` times the soft
  error where the LAM made that prediction (soft=True; 0 otherwise), plus `null_weight` times
  the error of its prediction with no action (null=True), plus its quantizer's loss.
  With `focus_weight` the error weighs the centre box more (reconstruction_loss); the MSEs it
  returns stay plain."""
  target = video[:, 1:]
  mse = jnp.mean(jnp.square(lam_out.prediction - target))
  focus = dict(focus_weight=focus_weight, focus_size=focus_size)
  objective = reconstruction_loss(lam_out.prediction, target, **focus) if focus_weight else mse
  soft_mse = soft_objective = jnp.zeros(())
  if lam_out.soft_prediction is not None:
    soft_mse = jnp.mean(jnp.square(lam_out.soft_prediction - target))
    soft_objective = reconstruction_loss(lam_out.soft_prediction, target, **focus) if focus_weight else soft_mse
  total = objective + soft_weight * soft_objective + lam_out.vq_loss
  if null_weight:  # only then: with it off, the program is the one it was before the switch
    if lam_out.null_prediction is None:
      raise ValueError("lam_loss: null_weight > 0 needs the LAM's prediction with no action (call it with null=True)")
    total = total + null_weight * reconstruction_loss(lam_out.null_prediction, target, **focus)
  return total, mse, soft_mse


def lam_objective_options(lam_config) -> dict:
  """A config's `lam` block -> the switches of the LAM's objective, lam_loss's keyword
  arguments (the trainer's step and lam_control's LAM-alone step read them here)."""
  return dict(soft_weight=lam_config.get("soft_weight", 0.0), focus_weight=lam_config.get("focus_weight", 0.0),
              focus_size=lam_config.get("focus_size", 0), null_weight=lam_config.get("null_weight", 0.0))


def run_lam_objective(lam, video: jax.Array, *, shift_rng: jax.Array | None, soft_weight: float = 0.0,
                      focus_weight: float = 0.0, focus_size: int = 0, null_weight: float = 0.0):
  """-> (the LAM's output, lam_loss's (loss, MSE, soft MSE)): the LAM run with the extra
  predictions its objective's switches need (soft, null), then scored."""
  out = lam(video, shift_rng=shift_rng, soft=soft_weight > 0, null=null_weight > 0)
  return out, lam_loss(out, video, soft_weight=soft_weight, focus_weight=focus_weight, focus_size=focus_size,
                       null_weight=null_weight)


def lam_dynamics_loss(model, batch: dict, rng: jax.Array, *, tokenizer, lam_weight: float,
                      rate_min: float, rate_max: float, mask_scheme: str = "all_frames",
                      full_mask_prob: float = 0.0, dynamics_actions: str = "lam", lam_objective: dict | None = None,
                      change_weight: float = 0.0, train_dynamics: bool | jax.Array = True):
  """Phase 2: the LAM's objective, its switches `lam_objective` (lam_objective_options of the
  config's lam block; None: the paper's plain MSE), weighed by `lam_weight`, plus the
  dynamics model's masked-token loss on the frozen tokenizer's tokens."""
  video = patching.to_unit_float(batch["frames"])
  rng, shift_rng = jax.random.split(rng)
  lam_out, (lam_total, lam_mse, lam_soft_mse) = run_lam_objective(model.lam, video, shift_rng=shift_rng,
                                                                   **(lam_objective or {}))
  num_actions = model.dynamics.num_actions
  if dynamics_actions == "true":  # the control: the dataset's actions (a_t for x_t -> x_t+1)
    transition_actions = batch["actions"][:, :-1].astype(jnp.int32)
  elif dynamics_actions == "lam":
    transition_actions = jax.lax.stop_gradient(lam_out.actions)
  else:
    raise ValueError(f"unknown dynamics_actions {dynamics_actions!r}; choose from {DYNAMICS_ACTIONS}")
  actions = dynamics_lib.frame_actions(transition_actions, num_actions)

  def dynamics_term():
    tokens = jax.lax.stop_gradient(tokenizer.encode(video))
    tokens = tokens.reshape(*tokens.shape[:2], -1)
    mask = mask_tokens(rng, tokens, rate_min=rate_min, rate_max=rate_max, scheme=mask_scheme,
                       full_mask_prob=full_mask_prob)
    return dynamics_token_loss(model.dynamics, tokens, mask, actions, scheme=mask_scheme,
                               change_weight=change_weight)

  if train_dynamics is True:
    ce, acc = dynamics_term()
  else:  # lax.cond runs one branch, so a warm-up step does not pay for the dynamics model
    ce, acc = jax.lax.cond(train_dynamics, dynamics_term, lambda: (jnp.zeros(()), jnp.zeros(())))
  counts = quantizer.code_usage(lam_out.actions, num_actions)
  loss = ce + lam_weight * lam_total
  metrics = {"loss": loss, "dynamics_ce": ce, "dynamics_token_acc": acc, "lam_mse": lam_mse,
             "lam_soft_mse": lam_soft_mse,
             "lam_psnr": psnr_from_mse(lam_mse), "lam_vq_loss": lam_out.vq_loss,
             "action_perplexity": quantizer.perplexity(counts), "actions_used": jnp.sum(counts > 0)}
  return loss, (metrics, {"lam": (counts, lam_out.latents)})
