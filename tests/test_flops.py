"""The analytic model FLOPs (genie_jax/flops.py) against XLA's own count of each model's
forward pass, compiled with the layers unrolled (XLA counts a scanned body once)."""
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from experiments import tiny
from genie_jax import flops, params
from genie_jax.models import build


def _xla_forward_flops(module, *inputs):
  graphdef, state = nnx.split(module)
  cost = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a)).lower(state, *inputs).compile().cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


@pytest.mark.parametrize("part", ["tokenizer", "lam", "dynamics"])
def test_analytic_forward_flops_match_xla(part):
  config = tiny.get_config("lam_dynamics")
  config.scan_layers = False
  b, t = config.train.batch_size, config.data.window
  video = jnp.zeros((b, t, config.data.height, config.data.width, 3))
  make = {"tokenizer": build.make_tokenizer, "lam": build.make_lam, "dynamics": build.make_dynamics}[part]
  model = make(config, nnx.Rngs(0))
  n = params.count_params(make, config)
  if part == "tokenizer":
    xla, analytic = _xla_forward_flops(model, video), flops.tokenizer_forward(config, n)
  elif part == "lam":
    xla, analytic = _xla_forward_flops(model, video), flops.lam_forward(config, n)
  else:
    grid = model.tokens_per_frame
    tokens = jnp.zeros((b, t, grid), jnp.int32)
    actions = jnp.zeros((b, t), jnp.int32)
    xla, analytic = _xla_forward_flops(model, tokens, actions), flops.dynamics_forward(config, n)
  # XLA also counts norms, softmax and activations, a few percent at this width
  assert 0.95 < xla / analytic < 1.15, (part, xla / analytic)


def test_peak_flops_of_known_gpus_only():
  assert flops.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4e12
  assert flops.peak_flops("NVIDIA H100 80GB HBM3", "float32") == 494.7e12
  assert flops.peak_flops("cpu", "float32") is None
