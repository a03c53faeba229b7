"""The pure, jitted train step (and a preview function for image summaries)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from genie_jax.models import patching, quantizer
from genie_jax.train import losses

# where each phase's VQ codebook lives in the params pure dict
CODEBOOK_PATHS = {"tokenizer": ("quantizer", "codebook"), "lam": ("lam", "quantizer", "codebook")}


def _replace(tree: dict, path: tuple, value):
  if len(path) == 1:
    return {**tree, path[0]: value}
  return {**tree, path[0]: _replace(tree[path[0]], path[1:], value)}


def _get(tree: dict, path: tuple):
  for key in path:
    tree = tree[key]
  return tree


def _reseed_after(config, name) -> int:
  """Steps a code of `name`'s VQ may go unused before it is re-seeded; 0: never (FSQ has
  no codebook to re-seed)."""
  section = config.tokenizer if name == "tokenizer" else config.lam
  return section.dead_code_steps if section.get("quantizer", "vq") == "vq" else 0


def make_loss_fn(config, graphdef, tokenizer_graphdef=None):
  """params, batch, rng, frozen tokenizer params[, step] -> (loss, (metrics, vq_stats)).

  `step` (the state's step, traced; grad_accum of them make one update) switches the dynamics term off for the first
  `train.lam_warmup_steps` steps of phase 2; without it (held-out metrics) the term is on.
  """
  warmup = config.train.get("lam_warmup_steps", 0)

  def loss_fn(params, batch, rng, frozen, step=None):
    model = nnx.merge(graphdef, params)
    if config.phase == "tokenizer":
      return losses.tokenizer_loss(model, batch, rng, change_weight=config.tokenizer.get("change_weight", 0.0))
    return losses.lam_dynamics_loss(
        model, batch, rng, tokenizer=nnx.merge(tokenizer_graphdef, frozen),
        lam_weight=config.lam.weight, rate_min=config.dynamics.mask_rate_min,
        rate_max=config.dynamics.mask_rate_max, mask_scheme=config.dynamics.get("mask_scheme", "all_frames"),
        full_mask_prob=config.dynamics.get("full_mask_prob", 0.0),
        dynamics_actions=config.train.get("dynamics_actions", "lam"),
        lam_objective=losses.lam_objective_options(config.lam),
        change_weight=config.dynamics.get("change_weight", 0.0),
        train_dynamics=True if step is None or not warmup
        else step // max(config.optim.grad_accum, 1) >= warmup)
  return loss_fn


def make_train_step(config, graphdef, tx, schedule, tokenizer_graphdef=None):
  """(state, batch, frozen) -> (state, metrics). `frozen` is the tokenizer's params in phase 2
  (None in phase 1); it is an input, never part of the optimizer."""
  loss_fn = make_loss_fn(config, graphdef, tokenizer_graphdef)

  def train_step(state, batch, frozen):
    rng = jax.random.fold_in(state["rng"], state["step"])
    loss_rng, reseed_rng = jax.random.split(rng)
    (loss, (metrics, vq_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], batch, loss_rng, frozen, state["step"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    code_age = dict(state["code_age"])
    for name, (counts, candidates) in vq_stats.items():
      age = quantizer.update_code_age(code_age[name], counts)
      max_age = _reseed_after(config, name)
      if max_age:
        path = CODEBOOK_PATHS[name]
        codebook, age = quantizer.reseed_dead_codes(_get(params, path), age, candidates,
                                                    jax.random.fold_in(reseed_rng, len(name)), max_age)
        params = _replace(params, path, codebook)
      code_age[name] = age
      metrics[f"{name}_dead_codes"] = jnp.sum(age > 0)
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["learning_rate"] = schedule(state["step"] // max(config.optim.grad_accum, 1))
    finite = jnp.isfinite(loss) & jnp.isfinite(metrics["grad_norm"])
    nonfinite_step = jnp.where((state["nonfinite_step"] < 0) & ~finite, state["step"],
                               state["nonfinite_step"])
    new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1,
                 "rng": state["rng"], "code_age": code_age, "nonfinite_step": nonfinite_step}
    return new_state, metrics

  return train_step


def make_preview(config, graphdef, tokenizer_graphdef=None):
  """(params, frozen, frames uint8 [B, T, H, W, 3]) -> (ground truth, model output) of sample 0."""
  def preview(params, frozen, frames):
    model = nnx.merge(graphdef, params)
    video = patching.to_unit_float(frames[:1])
    if config.phase == "tokenizer":
      return video[0], jnp.clip(model(video).reconstruction[0], 0, 1)
    prediction = jnp.clip(model.lam(video).prediction[0], 0, 1)  # predicts frames 1..T-1
    return video[0, 1:], prediction
  return preview
