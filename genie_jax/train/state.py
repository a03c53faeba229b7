"""Train state as a plain pytree, the optimizer, and shardings for both.

TrainState is a dict {params, opt_state, step, rng, code_age, nonfinite_step}: params
are NNX pure dicts (so Orbax, optax and jit see ordinary nested dicts), code_age holds
steps-since-use per VQ codebook, and nonfinite_step records the first step whose loss
was NaN/Inf (-1 if none) without a host sync every step.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from genie_jax import parallel

TrainState = dict[str, Any]


def learning_rate_schedule(optim, total_steps: int):
  """Linear warmup to `lr`, then cosine decay to `lr * end_lr_ratio` at `total_steps`."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.lr, warmup_steps=optim.warmup_steps,
      decay_steps=max(total_steps, optim.warmup_steps + 1), end_value=optim.lr * optim.end_lr_ratio)


CLIP_SCOPES = ("global", "per_model")


def clip_each_model_by_norm(max_norm: float) -> optax.GradientTransformation:
  """Clips each top-level entry of the gradient dict (in phase 2: "lam", "dynamics") by its
  own norm, so one model's large gradients do not shrink the other's steps. Its state is
  empty, like optax.clip_by_global_norm's, so checkpoints of either scope restore."""
  clip = optax.clip_by_global_norm(max_norm)

  def update(updates, state, params=None):
    del params
    if not isinstance(updates, dict):
      raise ValueError("grad_clip_scope 'per_model' needs a dict of models' gradients, "
                       f"got {type(updates).__name__}")
    return {name: clip.update(tree, clip.init(tree))[0] for name, tree in updates.items()}, state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(optim, total_steps: int, *, one_model: bool = False) -> optax.GradientTransformation:
  """AdamW (paper: beta2 0.9, wd 1e-4) with norm clipping and optional accumulation.

  `optim.grad_clip_scope`: "global" (one norm over every parameter, the usual) or
  "per_model" (each top-level model its own; README, finding 15). `one_model`: the
  gradients are one model's tree (the LAM or the dynamics model trained alone), so its
  parameters share one norm whatever the scope."""
  scope = optim.get("grad_clip_scope", "global")
  if scope not in CLIP_SCOPES:
    raise ValueError(f"optim.grad_clip_scope must be one of {CLIP_SCOPES}, got {scope!r}")
  if one_model:
    scope = "global"
  clip = optax.clip_by_global_norm(optim.grad_clip) if scope == "global" else clip_each_model_by_norm(optim.grad_clip)
  tx = optax.chain(
      clip,
      optax.adamw(learning_rate_schedule(optim, total_steps), b1=optim.b1, b2=optim.b2,
                  weight_decay=optim.weight_decay))
  if optim.grad_accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=optim.grad_accum)
  return tx


def code_age_init(config) -> dict[str, jax.Array]:
  if config.phase == "tokenizer":
    return {"tokenizer": jnp.zeros((config.tokenizer.num_codes,), jnp.int32)}
  return {"lam": jnp.zeros((config.lam.num_actions,), jnp.int32)}


def _paths(tree, is_leaf=None):
  return {tuple(str(k) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]}


def shardings_like_params(tree, param_shardings, mesh) -> Any:
  """Shardings for any tree (optimizer moments) whose leaves end with a parameter's path.

  Optax states embed copies of the param tree (mu, nu, ...) under their own prefixes, so
  each leaf takes the sharding of the parameter whose path is a suffix of its own;
  everything else (counts, scalars) is replicated.
  """
  by_path = _paths(param_shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  replicated = NamedSharding(mesh, P())

  def one(path, leaf):
    keys = tuple(str(k) for k in path)
    for start in range(len(keys)):
      if keys[start:] in by_path and by_path[keys[start:]] is not None:
        sharding = by_path[keys[start:]]
        return sharding if len(sharding.spec) <= getattr(leaf, "ndim", 0) else replicated
    return replicated
  return jax.tree_util.tree_map_with_path(one, tree)


def param_shardings(config, abstract_module, mesh) -> dict:
  """NamedShardings of the module's params pure dict, from the config's logical-axis rules."""
  return nnx.to_pure_dict(parallel.state_shardings(nnx.state(abstract_module, nnx.Param), mesh, config.rules))


def state_shardings(config, abstract_module, abstract_state: TrainState, mesh) -> TrainState:
  params = param_shardings(config, abstract_module, mesh)
  replicated = NamedSharding(mesh, P())
  return {
      "params": params,
      "opt_state": shardings_like_params(abstract_state["opt_state"], params, mesh),
      "step": replicated, "rng": replicated, "nonfinite_step": replicated,
      "code_age": jax.tree.map(lambda _: replicated, abstract_state["code_age"]),
  }


def init_state(config, make_module, tx) -> TrainState:
  """Builds a fresh state (call under jit with out_shardings to create it sharded)."""
  module = make_module(config, nnx.Rngs(config.seed))
  params = nnx.to_pure_dict(nnx.state(module, nnx.Param))
  return {"params": params, "opt_state": tx.init(params), "step": jnp.int32(0),
          "rng": jax.random.PRNGKey(config.seed + 1), "code_age": code_age_init(config),
          "nonfinite_step": jnp.int32(-1)}
