"""Orbax checkpoints: params, optimizer, step, rng and the Grain iterator, saved together.

Saves are asynchronous; Orbax writes each step into a temporary folder and renames it
only when complete, so a run killed mid-save resumes from the last complete step.
Restores go into an abstract target carrying the *current* mesh's shardings, so a run
can resume on another topology. The run's config is stored beside the checkpoints
(config.json) so phase 2 can check the tokenizer it loads.
"""
from __future__ import annotations

import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from genie_jax.models import build


class _IteratorStateAt:
  """What Grain's checkpoint handler saves, for an iterator state taken earlier: the
  handler calls `get_state()` and, for objects that are not Grain iterators, decodes bytes."""

  def __init__(self, state: dict):
    self._state = state

  def get_state(self) -> bytes:
    return json.dumps(self._state, indent=4).encode()


class Checkpointer:
  def __init__(self, workdir: str, *, keep: int = 3, keep_period: int = 0, async_save: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "data_iter"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, keep_period=keep_period or None,
            enable_async_checkpointing=async_save, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    """Complete (renamed) checkpoints, oldest first."""
    return sorted(self.manager.all_steps())

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def reload(self) -> None:
    """Re-reads the list of steps from disk (after one was moved aside)."""
    self.manager.reload()

  def save(self, step: int, state, data_iterator, *, data_state: dict | None = None) -> None:
    """Saves `state` and the iterator's position; `data_state` (from `get_state()`) saves
    an earlier position instead, e.g. the batch a bad record stopped."""
    # imported here: only training saves a data iterator, and loading a model for
    # inference (Genie.load) must not need the data loader installed
    import grain  # pylint: disable=g-import-not-at-top
    item = data_iterator.grain_iterator if data_state is None else _IteratorStateAt(data_state)
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data_iter=grain.checkpoint.CheckpointSave(item)), force=True)

  def restore(self, step: int, abstract_state, data_iterator=None):
    """Restores `state` into `abstract_state` (ShapeDtypeStructs with shardings) and,
    if given, moves `data_iterator` to where it was at that step."""
    args = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      import grain  # pylint: disable=g-import-not-at-top  (see save)
      args["data_iter"] = grain.checkpoint.CheckpointRestore(data_iterator.grain_iterator)
    return self.manager.restore(step, args=ocp.args.Composite(**args))["state"]

  def restore_params(self, step: int, abstract_params):
    """Restores only state["params"] (no optimizer state is read or allocated)."""
    args = ocp.args.PyTreeRestore(
        item={"params": abstract_params}, partial_restore=True,
        restore_args={"params": jax.tree.map(
            lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape, dtype=a.dtype),
            abstract_params)})
    return self.manager.restore(step, args=ocp.args.Composite(state=args))["state"]["params"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def load_params(workdir: str, make_module, mesh, *, rules_config=None):
  """(graphdef, params, shardings, config, step) of the newest checkpoint in a workdir
  whose params read (newer unreadable ones are named in a warning line).

  Builds the module of the workdir's own config.json abstractly and restores only its
  params, sharded on `mesh` by the logical-axis rules of `rules_config` (default: the
  workdir's config). Raises FileNotFoundError naming the workdir if nothing is there, and
  recovery.UnreadableCheckpointError naming each step's path if no checkpoint reads.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from genie_jax.train import recovery, state as state_lib  # pylint: disable=g-import-not-at-top
  config = read_config(workdir)
  ckpt = Checkpointer(workdir, async_save=False)
  try:
    if ckpt.latest_step() is None:
      raise FileNotFoundError(f"{workdir!r} has no complete checkpoint: train it first")
    abstract_module = nnx.eval_shape(lambda: make_module(config, nnx.Rngs(0)))
    shardings = state_lib.param_shardings(rules_config or config, abstract_module, mesh)
    abstract = nnx.to_pure_dict(nnx.state(abstract_module, nnx.Param))
    # a reader never moves a bad checkpoint aside (a trainer may be writing there): it
    # warns and falls back to the newest step that reads
    step, params = recovery.restore_params_for_reading(ckpt, abstract_with_shardings(abstract, shardings))
  finally:
    ckpt.close()
  return nnx.graphdef(abstract_module), params, shardings, config, step


def load_frozen_tokenizer(config, mesh, workdir: str | None = None):
  """Phase 2: (graphdef, params sharded on `mesh`, shardings) of the tokenizer in `workdir`
  (default config.train.tokenizer_workdir), refused if it does not match `config`.

  Here rather than in the trainer because the trainer, validation and the Genie API all
  restore it: the inference API must not import the training loop (which imports the
  evaluation, which imports the Genie API)."""
  workdir = workdir or config.train.tokenizer_workdir
  if not workdir:
    raise ValueError("phase lam_dynamics needs --config.train.tokenizer_workdir=<phase-1 workdir>")
  check_tokenizer_matches(read_config(workdir), config)
  graphdef, params, shardings, _, _ = load_params(
      workdir, build.make_tokenizer, mesh, rules_config=config)
  return graphdef, params, shardings


def abstract_with_shardings(abstract_tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_tree, shardings)


def config_path(workdir: str) -> str:
  return os.path.join(workdir, "config.json")


def write_config(workdir: str, config) -> None:
  """Atomically (temporary file, then rename): the other processes of a multi-host run
  read config.json while process 0 writes it, and a kill mid-write must not leave a
  truncated file that no later start can read."""
  os.makedirs(workdir, exist_ok=True)
  tmp = f"{config_path(workdir)}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(config.to_json_best_effort(indent=2))
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, config_path(workdir))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = config_path(workdir)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir!r} has no config.json: is it a genie_jax workdir?")
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if "scan_layers" not in config:  # the field came with the stacked layout
    raise ValueError(
        f"{workdir!r} was written before genie_jax stacked each transformer's blocks on a "
        "'layers' axis (commit 8accea8): its checkpoints hold one parameter tree per block, "
        "which this version cannot restore. Retrain, or load it with commit 8c72daa.")
  return config


def _as_json(value):
  return [_as_json(v) for v in value] if isinstance(value, (list, tuple)) else value


def _differences(a, b, prefix="") -> list[str]:
  a, b = a.to_dict() if hasattr(a, "to_dict") else a, b.to_dict() if hasattr(b, "to_dict") else b
  out = []
  for key in sorted(set(a) | set(b)):
    va, vb = a.get(key), b.get(key)
    if isinstance(va, dict) and isinstance(vb, dict):
      out += _differences(va, vb, f"{prefix}{key}.")
    elif _as_json(va) != _as_json(vb):  # config.json stores tuples as lists
      out.append(f"{prefix}{key}: {va!r} (tokenizer run) vs {vb!r} (this run)")
  return out


def check_tokenizer_matches(tokenizer_config, config) -> None:
  """Phase 2 refuses a tokenizer whose architecture or frame size differs from its config."""
  diffs = _differences(tokenizer_config.tokenizer, config.tokenizer, "tokenizer.")
  for key in ("height", "width"):
    if tokenizer_config.data[key] != config.data[key]:
      diffs.append(f"data.{key}: {tokenizer_config.data[key]!r} (tokenizer run) vs {config.data[key]!r} (this run)")
  if config.data.window > tokenizer_config.data.window:
    diffs.append(f"data.window: {config.data.window} exceeds the tokenizer's {tokenizer_config.data.window} frames")
  if tokenizer_config.phase != "tokenizer":
    diffs.append(f"phase: {tokenizer_config.phase!r} is not a tokenizer run")
  if diffs:
    raise ValueError("the tokenizer in train.tokenizer_workdir does not match this config:\n  "
                     + "\n  ".join(diffs))
