r"""Prints parameter counts of a config's models from shapes alone (`nnx.eval_shape`:
no memory is allocated, so the 10.1B model counts on a laptop).

    python -m genie_jax.params --config experiments/platformers.py:dynamics_11b
"""
from __future__ import annotations

import math

import jax
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from genie_jax.models import build


def count_leaves(tree) -> int:
  """Elements in a tree of arrays or ShapeDtypeStructs."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


def count_params(make_fn, config) -> int:
  abstract = nnx.eval_shape(lambda: make_fn(config, nnx.Rngs(0)))
  return count_leaves(nnx.state(abstract, nnx.Param))


def all_counts(config) -> dict[str, int]:
  return {name: count_params(fn, config) for name, fn in (
      ("tokenizer", build.make_tokenizer), ("lam", build.make_lam), ("dynamics", build.make_dynamics))}


def main(argv):
  del argv
  for name, n in all_counts(flags.FLAGS.config).items():
    print(f"{name:10s} {n:>16,d}  ({n / 1e6:,.1f}M)")


if __name__ == "__main__":
  # defined here, not at import, so other commands can import this module
  config_flags.DEFINE_config_file("config", None, "Experiment config (file.py:variant).")
  app.run(main)
