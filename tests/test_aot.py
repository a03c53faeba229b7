"""Ahead-of-time compilation for TPU slices on this CPU machine (libtpu), and the topology
parser. Skipped, with the reason, only where libtpu cannot describe a TPU topology."""
import pytest

from genie_jax import aot


def _libtpu_or_skip():
  try:
    from jax.experimental import topologies
    topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x4")  # the slice the tests compile for
  except Exception as e:  # not installed, or no libtpu for this platform
    pytest.skip(f"libtpu cannot describe a TPU topology here ({str(e).splitlines()[0][:200]}); "
                "install it with pip install -e '.[tpu]'")


def test_topology_names():
  assert aot.parse_topology("v5p-256")[1] == "4x4x8"  # 256 TensorCores = 128 chips
  assert aot.parse_topology("v5e-256")[1] == "16x16"
  assert aot.parse_topology("v6e-8")[1] == "2x4"
  assert aot.parse_topology("v5p:4x4x4")[1] == "4x4x4"
  with pytest.raises(ValueError, match="no v5p slice with 6"):
    aot.parse_topology("v5p-6")
  with pytest.raises(ValueError, match="unknown topology"):
    aot.parse_topology("h100-8")


def _tiny(**mesh):
  from experiments import tiny
  c = tiny.get_config("lam_dynamics")
  c.mesh.update(**mesh)
  return c


def test_small_config_compiles_for_a_tpu_slice_and_reports():
  _libtpu_or_skip()
  config = _tiny(data=2, fsdp=2, tensor=2)
  config.scan_layers = False  # XLA counts a scanned stack's body once; unrolled, it counts all
  r = aot.compile_step(config, "v5e-8")
  assert r["num_devices"] == 8 and r["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  assert 0 < r["peak_gib"] < r["hbm_gib"] and r["temp_gib"] > 0
  # the compiler's FLOPs agree with the analytic model count (no remat here)
  ratio = r["compiler_flops_per_device"] * r["num_devices"] / r["analytic_flops"]
  assert 0.7 < ratio < 1.4, ratio
  assert aot.fits_or_advice(config, r) is None
  assert "step time at 40% MFU" in aot.report(config, r, 0.4)
  # every sequence here is under 128 tokens, so "auto" keeps XLA's attention on TPU
  assert r["pallas_calls"] == 0 and "auto" in r["attention"]
  config.scan_layers = True  # the default compiles one block per stack; same memory budget
  config.attention = "pallas_tpu"  # and the splash kernel (padded, under shard_map) lowers for TPU
  scanned = aot.compile_step(config, "v5e-8")
  assert 0 < scanned["peak_gib"] < scanned["hbm_gib"] and scanned["analytic_flops"] == r["analytic_flops"]
  assert scanned["pallas_calls"] > 0
  flops_line = next(l for l in aot.report(config, scanned, 0.4).splitlines() if l.startswith("FLOPs"))
  assert "analytic model FLOPs" in flops_line and "ratio" not in flops_line


def test_a_step_that_does_not_fit_names_the_knobs():
  _libtpu_or_skip()
  config = _tiny(data=-1)
  config.train.batch_size = 131072  # XLA:TPU rematerialises up to 16 GiB, then gives up
  with pytest.raises(aot.DoesNotFit) as error:
    aot.compile_step(config, "v5e-8")
  advice = str(error.value)
  assert "could not fit" in advice and "--config.remat" in advice and "--config.mesh.fsdp" in advice
  assert "--config.train.batch_size" in advice
