r"""Compile the real training step for a Cloud TPU slice on this machine, ahead of time.

    python -m genie_jax.aot --config experiments/platformers.py:dynamics_11b --topology v5p-256
    python -m genie_jax.aot --config experiments/platformers.py:dynamics_11b --topology v6e-256 \
        --config.mesh.fsdp=64 --config.mesh.data=4

libtpu (`pip install -e ".[tpu]"`) compiles for a TPU topology without a TPU
(jax.experimental.topologies): the step, with the config's mesh, sharding rules, remat
policy and real global batch, is lowered with abstract inputs and compiled by XLA:TPU.
Prints the parameter count, per-chip memory (arguments, temporaries, peak) against the
chip's HBM, FLOPs per step (analytic, and the compiler's count beside it when the layers
are unrolled with --config.scan_layers=false), and the step time implied at --mfu. Exits with an error naming the knobs to turn when the step does not fit.
Run it with JAX_PLATFORMS unset or "cpu": the topology is described, not attached.
"""
from __future__ import annotations

import dataclasses
import math
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags



@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  hbm_gib: float
  peak_bf16_tflops: float
  cores_per_chip: int  # how the -N of a slice name counts (TensorCores for v4/v5p)
  dims: int            # torus dimensions of the slice


# public Cloud TPU specifications, per chip
CHIPS = {
    "v4": Chip("TPU v4", 32.0, 275.0, 2, 3),
    "v5p": Chip("TPU v5p", 95.0, 459.0, 2, 3),
    "v5e": Chip("TPU v5e", 16.0, 197.0, 1, 2),
    "v6e": Chip("TPU v6e (Trillium)", 32.0, 918.0, 1, 2),
}
SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
             256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}


def parse_topology(text: str) -> tuple[Chip, str]:
  """"v5p-256" or "v5p:4x4x8" -> (chip, "4x4x8")."""
  m = re.fullmatch(r"(v4|v5p|v5e|v6e)(?:-(\d+)|:(\d+(?:x\d+){1,2}))", text.strip().lower())
  if not m:
    raise ValueError(f"unknown topology {text!r}: use e.g. v5p-256, v5e-256, v6e-64, v4-128 or v5p:4x4x8")
  gen, count, shape = m.groups()
  chip = CHIPS[gen]
  if shape:
    if len(shape.split("x")) != chip.dims:
      raise ValueError(f"{gen} slices are {chip.dims}-D, got {shape}")
    return chip, shape
  chips, rem = divmod(int(count), chip.cores_per_chip)
  shapes = SHAPES_3D if chip.dims == 3 else SHAPES_2D
  if rem or chips not in shapes:
    raise ValueError(f"no {gen} slice with {count} {'TensorCores' if chip.cores_per_chip > 1 else 'chips'};"
                     f" sizes: {', '.join(f'{gen}-{c * chip.cores_per_chip}' for c in shapes)}")
  return chip, shapes[chips]


def compile_step(config, topology_name: str):
  """Compiles the step for the topology; returns a dict of the figures to report."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  from genie_jax import flops, parallel  # pylint: disable=g-import-not-at-top
  from genie_jax.models import attention as attention_lib, build  # pylint: disable=g-import-not-at-top
  from genie_jax.params import count_leaves  # pylint: disable=g-import-not-at-top
  from genie_jax.train import checkpoints, state as state_lib, trainer  # pylint: disable=g-import-not-at-top

  chip, shape = parse_topology(topology_name)
  generation = topology_name.split("-")[0].split(":")[0].lower()
  try:
    topology = topologies.get_topology_desc(platform="tpu", topology_name=f"{generation}:{shape}")
  except Exception as e:  # libtpu missing or unable to describe the slice
    raise RuntimeError(f"cannot describe TPU topology {generation}:{shape} ({e}); is libtpu "
                       "installed? pip install -e \".[tpu]\"") from e
  devices = topology.devices
  m = config.mesh
  mesh = parallel.make_mesh(data=m.data, fsdp=m.fsdp, tensor=m.tensor, devices=devices)
  setup = trainer.TrainSetup(config, mesh)
  tok_graphdef, frozen_abstract, frozen_shardings = None, None, None
  if config.phase == "lam_dynamics":
    tok_module = nnx.eval_shape(lambda: build.make_tokenizer(config, nnx.Rngs(0)))
    tok_graphdef = nnx.graphdef(tok_module)
    frozen_shardings = state_lib.param_shardings(config, tok_module, mesh)
    frozen_abstract = checkpoints.abstract_with_shardings(
        nnx.to_pure_dict(nnx.state(tok_module, nnx.Param)), frozen_shardings)
  d, b = config.data, config.train.batch_size
  batch_abstract = {
      "frames": jax.ShapeDtypeStruct((b, d.window, d.height, d.width, 3), jnp.uint8),
      "actions": jax.ShapeDtypeStruct((b, d.window), jnp.int32),
      "episode_id": jax.ShapeDtypeStruct((b,), jnp.int64 if jax.config.jax_enable_x64 else jnp.int32),
      "start_frame": jax.ShapeDtypeStruct((b,), jnp.int32)}
  batch_abstract = checkpoints.abstract_with_shardings(batch_abstract, setup.batch_shardings)
  state_abstract = checkpoints.abstract_with_shardings(setup.abstract_state, setup.shardings)
  with parallel.use_mesh_rules(mesh, config.rules):
    lowered = setup.jitted_step(tok_graphdef, frozen_shardings).lower(state_abstract, batch_abstract, frozen_abstract)
    try:
      compiled = lowered.compile()
    except Exception as e:  # XLA:TPU rematerialises to fit HBM and fails when it cannot
      if "RESOURCE_EXHAUSTED" not in str(e) and "memory" not in str(e).lower():
        raise
      raise DoesNotFit(f"XLA:TPU could not fit the step in {chip.hbm_gib:.0f} GiB per {chip.name} chip "
                       f"({str(e).splitlines()[0][:300]}). Turn: " + "; ".join(_knobs(config, dict(mesh.shape)))) from e

  # the splash kernel lowers to a Mosaic custom call; XLA's attention to plain dots
  pallas_calls = compiled.as_text().count('custom_call_target="tpu_custom_call"')
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  counts = {"trainable": count_leaves(setup.abstract_state["params"])}
  if config.phase == "lam_dynamics":
    counts["dynamics"] = count_leaves(setup.abstract_state["params"]["dynamics"])
    counts["lam"] = count_leaves(setup.abstract_state["params"]["lam"])
    tok_params = nnx.to_pure_dict(nnx.state(tok_module, nnx.Param))
    counts["tokenizer"] = count_leaves(tok_params)
    counts["tokenizer_encoder"] = count_leaves({k: v for k, v in tok_params.items()
                                                if k in ("patch_in", "enc_pos", "encoder", "to_latent")})
  else:
    counts["tokenizer"] = counts["trainable"]
  gib = 1024 ** 3
  peak = memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes + memory.temp_size_in_bytes
  model_flops = flops.step_flops(config, counts)
  return {
      "chip": chip, "topology": f"{generation}:{shape}", "num_devices": len(devices),
      "mesh": dict(mesh.shape), "counts": counts,
      "argument_gib": memory.argument_size_in_bytes / gib, "temp_gib": memory.temp_size_in_bytes / gib,
      "output_gib": memory.output_size_in_bytes / gib, "alias_gib": memory.alias_size_in_bytes / gib,
      "peak_gib": peak / gib, "hbm_gib": chip.hbm_gib,
      "compiler_flops_per_device": float(cost.get("flops", float("nan"))),
      "analytic_flops": model_flops,
      "attention": attention_lib.describe(config.get("attention", "auto"), device=devices[0]),
      "pallas_calls": pallas_calls,
      # what a host-offloading remat policy keeps in the host's pinned memory
      "host_temp_gib": getattr(memory, "host_temp_size_in_bytes", 0) / gib,
  }


def _human(n: int) -> str:
  return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def report(config, r: dict, mfu: float) -> str:
  n = r["num_devices"]
  compiler_total = r["compiler_flops_per_device"] * n
  step_s = r["analytic_flops"] / (n * r["chip"].peak_bf16_tflops * 1e12 * mfu)
  d = config.data
  lines = [
      f"config: phase {config.phase}, dtype {config.dtype}, remat {config.remat}, global batch "
      f"{config.train.batch_size} x {d.window} frames at {d.width}x{d.height}",
      f"topology: {r['topology']} = {n} x {r['chip'].name}, mesh {r['mesh']}",
      f"attention: {r['attention']}; Pallas kernel calls in the compiled step: {r['pallas_calls']}",
      "parameters: " + ", ".join(f"{k} {_human(v)}" for k, v in r["counts"].items()),
      f"per-chip memory: arguments {r['argument_gib']:.2f} GiB, temporaries {r['temp_gib']:.2f} GiB, "
      f"outputs {r['output_gib']:.2f} GiB (aliased {r['alias_gib']:.2f}), peak {r['peak_gib']:.2f} GiB "
      f"of {r['hbm_gib']:.0f} GiB HBM ({100 * r['peak_gib'] / r['hbm_gib']:.0f}%)"
      + (f"; host memory: temporaries {r['host_temp_gib']:.2f} GiB" if r.get("host_temp_gib") else ""),
      (f"FLOPs per step: compiler {compiler_total:.3e} ({r['compiler_flops_per_device']:.3e} per chip), "
       f"analytic model FLOPs {r['analytic_flops']:.3e}, ratio {compiler_total / r['analytic_flops']:.2f}"
       + (" (remat recomputes the forward)" if config.remat != "none" else ""))
      if not config.scan_layers else
      (f"FLOPs per step: analytic model FLOPs {r['analytic_flops']:.3e} (XLA counts a scanned layer "
       "stack's body once; --config.scan_layers=false compiles the loop unrolled and shows its count)"),
      f"step time at {mfu:.0%} MFU: {step_s:.2f} s ({config.train.batch_size * d.window / step_s:,.0f} frames/s)",
  ]
  return "\n".join(lines)


class DoesNotFit(RuntimeError):
  """The compiler could not fit the step in the chip's memory."""


def _knobs(config, mesh_shape: dict) -> list[str]:
  knobs = []
  if config.remat == "none":
    knobs.append("--config.remat=full (or dots) to keep fewer activations")
  elif config.remat != "full":
    knobs.append(f"--config.remat=full (now {config.remat}) to keep only each block's input")
  devices = math.prod(mesh_shape.values())
  fsdp = mesh_shape.get("fsdp")
  knobs.append(f"a larger FSDP axis (--config.mesh.fsdp, now {fsdp}) to split params and optimizer state "
               "further" + (" (it already spans the slice: use a larger one)" if fsdp == devices else ""))
  knobs.append(f"a smaller per-chip batch: --config.train.batch_size (now {config.train.batch_size}) with "
               "--config.optim.grad_accum to keep the global batch")
  return knobs


def fits_or_advice(config, r: dict) -> str | None:
  """None when the step fits in HBM, else an error naming the knobs to turn."""
  if r["peak_gib"] <= r["hbm_gib"]:
    return None
  knobs = _knobs(config, r["mesh"])
  return (f"does not fit: peak {r['peak_gib']:.1f} GiB per chip > {r['hbm_gib']:.0f} GiB HBM of "
          f"{r['chip'].name}. Turn: " + "; ".join(knobs))


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  config, topology, mfu = flags.FLAGS.config, flags.FLAGS.topology, flags.FLAGS.mfu
  try:
    r = compile_step(config, topology)
  except (ValueError, RuntimeError) as e:
    sys.exit(f"error: {e}")
  print(report(config, r, mfu))
  advice = fits_or_advice(config, r)
  if advice:
    sys.exit(f"error: {advice}")
  print("fits: yes")


def define_flags():
  """Flags of the command line only, so that importing this module (tests) defines none."""
  config_flags.DEFINE_config_file("config", None, "Experiment config (file.py:variant).", lock_config=True)
  flags.DEFINE_string("topology", "v5p-256", "TPU slice: v5p-N / v4-N (N TensorCores), v5e-N / v6e-N "
                      "(N chips), or generation:AxBxC, e.g. v5p:4x4x8.")
  flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation at which to quote the step time.")
  flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
  define_flags()
  app.run(main)
