"""Mesh, logical-axis rules and sharding helpers (MaxText style).

Parameters carry logical axis names (`embed`, `mlp`, `heads`, ...) as `out_sharding`
metadata; a rules table from the config maps each logical name to mesh axes
(`data`, `fsdp`, `tensor`). Activations are constrained with `constrain(x, names)`,
which is a no-op outside `use_mesh_rules` (so models run unchanged on one device and
in tests).
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical name -> mesh axes. Weights are split over fsdp along `embed` (ZeRO-3 style)
# and over tensor along heads / mlp / vocab (Megatron style); activations are split over
# data and fsdp along the batch.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("codebook", None),
    ("latent", None),
    ("patch", None),
    ("time", None),
    ("space", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("layers", None),
)

_RULES: contextvars.ContextVar = contextvars.ContextVar("genie_rules", default=None)


def make_mesh(*, data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh; one size may be -1 (takes the remaining devices)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices cannot be split into data={data} fsdp={fsdp} "
                       f"tensor={tensor}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs "
                     f"{math.prod(sizes)} devices, but {len(devices)} are available")
  try:
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(sizes, devices=devices)
  except Exception:  # CPU / simulated devices have no physical topology to follow
    grid = np.asarray(devices).reshape(sizes)
  return Mesh(grid, MESH_AXES)


def mesh_from_config(mesh_config) -> Mesh:
  """The mesh a config's `mesh` block asks for; `num_devices` > 0 uses only the first N devices."""
  sizes = dict(mesh_config)
  num_devices = sizes.pop("num_devices", 0)
  return make_mesh(**sizes, devices=jax.devices()[:num_devices] if num_devices else None)


def logical_to_spec(names: Sequence[str | None] | None, rules) -> P:
  """Logical axis names -> PartitionSpec. A mesh axis is used at most once per array."""
  if names is None:
    return P()
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for name in names:
    target = table.get(name) if name is not None else None
    if name is not None and name not in table:
      raise KeyError(f"logical axis {name!r} has no sharding rule; known: {sorted(table)}")
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    axes = tuple(a for a in axes if a not in used)
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return P(*spec)


def state_shardings(abstract_state, mesh: Mesh, rules):
  """NamedShardings for an (abstract) nnx.State from its variables' `out_sharding` names."""
  def one(variable):
    names = variable.get_metadata().get("out_sharding") if hasattr(variable, "get_metadata") else None
    return NamedSharding(mesh, logical_to_spec(names, rules))
  return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


@contextlib.contextmanager
def use_mesh_rules(mesh: Mesh, rules):
  """Within this context (at trace time) `constrain` lays activations out on `mesh`."""
  token = _RULES.set((mesh, tuple(rules)))
  try:
    yield
  finally:
    _RULES.reset(token)


def current_mesh_rules():
  """(mesh, rules) of the enclosing `use_mesh_rules`, or None outside one."""
  return _RULES.get()


def divisible_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
  """`spec` with the mesh axes dropped from every dimension they do not divide evenly
  (such a dimension is then replicated): for kernels under shard_map, whose shards must
  be equal, on arrays whose merged leading axis may be small (batch 1 in sampling)."""
  out = []
  for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
    ways = math.prod(mesh.shape[a] for a in axes)
    out.append(entry if axes and dim % ways == 0 else None)
  return P(*out)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Sharding constraint on an activation by logical axis names; no-op without a mesh."""
  current = _RULES.get()
  if current is None:
    return x
  mesh, rules = current
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(names, rules)))


def batch_sharding(mesh: Mesh, rules, ndim: int) -> NamedSharding:
  """Sharding of a host batch: leading axis over the batch mesh axes, the rest replicated."""
  return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules))


def batch_axis_size(mesh: Mesh, rules) -> int:
  """How many ways the batch axis is split (the global batch must divide by it)."""
  spec = logical_to_spec(("batch",), rules)[0]
  axes = (spec,) if isinstance(spec, str) else tuple(spec or ())
  return math.prod(mesh.shape[a] for a in axes)


def maybe_initialize_distributed(mode: str = "auto") -> None:
  """jax.distributed.initialize() on multi-host platforms (Cloud TPU pods set the
  environment it reads; elsewhere set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
  JAX_PROCESS_ID)."""
  if mode == "off":
    return
  multi_host_tpu = len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
  if mode == "on" or multi_host_tpu or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()
