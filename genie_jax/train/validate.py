"""Held-out metrics of a trained phase: the training losses on a validation split,
averaged over fixed windows (no shuffling, same windows every call)."""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from data_pipelines import loader
from genie_jax import parallel
from genie_jax.models import build
from genie_jax.train import checkpoints, state as state_lib, step as step_lib, trainer


def validate(config, workdir: str, *, split: str | None = None, num_batches: int = 4) -> dict:
  """Mean of each phase metric over `num_batches` validation batches of the latest checkpoint."""
  mesh = parallel.mesh_from_config(config.mesh)
  rules = tuple(tuple(r) for r in config.rules)
  tx = state_lib.make_optimizer(config.optim, config.train.steps)
  abstract_module = nnx.eval_shape(lambda: build.make_trainable(config, nnx.Rngs(0)))
  abstract_state = jax.eval_shape(lambda: state_lib.init_state(config, build.make_trainable, tx))
  shardings = state_lib.state_shardings(config, abstract_module, abstract_state, mesh)
  ckpt = checkpoints.Checkpointer(workdir, async_save=False)
  step = ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {workdir!r}: train it first")
  params = ckpt.restore(step, checkpoints.abstract_with_shardings(abstract_state, shardings))["params"]
  ckpt.close()
  frozen, tok_graphdef = None, None
  if config.phase == "lam_dynamics":
    tok_graphdef, frozen, _ = trainer.load_frozen_tokenizer(config, mesh)
  loss_fn = jax.jit(step_lib.make_loss_fn(config, nnx.graphdef(abstract_module), tok_graphdef))
  data = loader.make_iterator(config.data, mesh=mesh, rules=rules, split=split or config.data.eval_split,
                              global_batch_size=config.train.batch_size, seed=0, shuffle=False)
  totals: dict[str, list] = {}
  with parallel.use_mesh_rules(mesh, rules):
    for i in range(num_batches):
      _, (metrics, _) = loss_fn(params, next(data), jax.random.PRNGKey(i), frozen)
      for k, v in jax.device_get(metrics).items():
        totals.setdefault(k, []).append(float(v))
  return {k: float(np.mean(v)) for k, v in totals.items()} | {"step": step}
