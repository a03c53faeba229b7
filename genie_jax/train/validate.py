"""Held-out metrics of a trained phase: the training losses on a validation split,
averaged over fixed windows (no shuffling, same windows every call)."""
from __future__ import annotations

import jax
import numpy as np

from data_pipelines import loader
from genie_jax import parallel
from genie_jax.models import build
from genie_jax.train import checkpoints, step as step_lib


def validate(config, workdir: str, *, split: str | None = None, num_batches: int = 4) -> dict:
  """Mean of each phase metric over `num_batches` validation batches of the latest checkpoint."""
  mesh = parallel.mesh_from_config(config.mesh)
  graphdef, params, _, _, step = checkpoints.load_params(workdir, build.make_trainable, mesh,
                                                        rules_config=config)
  frozen, tok_graphdef = None, None
  if config.phase == "lam_dynamics":
    tok_graphdef, frozen, _ = checkpoints.load_frozen_tokenizer(config, mesh)
  loss_fn = jax.jit(step_lib.make_loss_fn(config, graphdef, tok_graphdef))
  data = loader.make_iterator(config.data, mesh=mesh, rules=config.rules, split=split or config.data.eval_split,
                              global_batch_size=config.train.batch_size, seed=0, shuffle=False)
  totals: dict[str, list] = {}
  with parallel.use_mesh_rules(mesh, config.rules):
    for i in range(num_batches):
      _, (metrics, _) = loss_fn(params, next(data), jax.random.PRNGKey(i), frozen)
      for k, v in jax.device_get(metrics).items():
        totals.setdefault(k, []).append(float(v))
  return {k: float(np.mean(v)) for k, v in totals.items()} | {"step": step}
