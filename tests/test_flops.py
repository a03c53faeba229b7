"""The analytic model FLOPs (genie_jax/flops.py) against XLA's own count of each model's
forward pass, compiled with the layers unrolled (XLA counts a scanned body once)."""
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from experiments import tiny
from genie_jax import flops, params, trace_summary
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


def test_trace_summary_reads_a_real_trace_and_sorts_its_kernels(tmp_path):
  """A jitted step traced here (CPU: the host's XLA threads) is summed per op, longest
  first, with the step's op names among them; kernel families by name."""
  step = jax.jit(lambda x: jnp.tanh(x @ x).sum())
  x = jnp.ones((256, 256))
  step(x).block_until_ready()
  with jax.profiler.trace(str(tmp_path)):
    for _ in range(2):
      step(x).block_until_ready()
  path = trace_summary.latest_trace(str(tmp_path))
  kernels, source = trace_summary.kernel_times(path)
  assert source == "host XLA threads" and kernels
  totals = [k.total_ns for k in kernels]
  assert totals == sorted(totals, reverse=True) and totals[0] > 0
  assert not any(word in k.name for k in kernels for word in trace_summary.HOST_WRAPPERS)
  text = trace_summary.summary(path, steps=2, top=3)
  assert "ms of host XLA threads time per step" in text and kernels[0].name[:60] in text
  assert trace_summary.family("cudnn_generated_fort_native_sdpa_sm90_flash_bprop") == "attention (cuDNN/flash)"
  assert trace_summary.family("nvjet_sm90_tst_128x128_64x6_2x1_v_bz_TNT") == "matmul"
  assert trace_summary.family("input_scatter_fusion") == "scatter / gather"
  assert trace_summary.family("loop_add_fusion") == "elementwise fusion"
  assert trace_summary.family("ynn_fusion.168") == "XNNPACK fusion (CPU matmuls)"  # not an elementwise one
  with pytest.raises(FileNotFoundError, match="no \\*.xplane.pb"):
    trace_summary.latest_trace(str(tmp_path / "empty"))
