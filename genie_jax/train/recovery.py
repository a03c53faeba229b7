"""Restoring past unreadable checkpoints: newest first, falling back step by step.

A checkpoint that Orbax listed as complete can still fail to read: an array file
truncated or lost by the filesystem, a missing or garbled metadata file, a missing
iterator state. Orbax then raises from deep inside TensorStore (ValueError, KeyError,
JSONDecodeError, a bare Exception, ...), so every failure of a restore is caught here
and reported by step, path and its innermost cause.

The trainer moves such a checkpoint aside, into workdir/checkpoints_corrupt/ (kept, never
deleted), so that Orbax stops listing it and the run's next save of that step does not
collide with it. It does so only once an older checkpoint has restored into the same
target: that proves the failure belongs to the newer checkpoint, not to the target (a
changed config, a filesystem that is down). When no checkpoint restores, nothing is
moved and the error lists every step and why. Readers (evaluation, play, Genie.load,
phase 2 loading its tokenizer) never move anything, since a trainer may own the
workdir: they warn and use the newest step that reads.
"""
from __future__ import annotations

import gc
import os
import sys
import warnings

import jax
import numpy as np

CORRUPT_DIR = "checkpoints_corrupt"


class UnreadableCheckpointError(ValueError):
  """No checkpoint of a workdir can be read."""


def _warn(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, file=sys.stderr, flush=True)


def failure_reason(error: BaseException, limit: int = 400) -> str:
  """The innermost cause's first line (TensorStore's outer message is a generic 'error
  while reading array index'), e.g. 'OUT_OF_RANGE: Error reading "opt_state...kernel"...'."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = (str(error).strip().splitlines() or [""])[0]
  text = f"{type(error).__name__}: {text}" if text else type(error).__name__
  return text if len(text) <= limit else text[:limit] + " ..."


_ORBAX_READ_COROUTINE = "_read_array_index_and_device_put"


def _silence_abandoned_reads() -> None:
  """Orbax reads each array in a coroutine. When one read fails, the others are dropped,
  and later, whenever they are garbage-collected or their TensorStore callbacks find the
  event loop gone, each prints 'Exception ignored in: <coroutine ...>' with a page of
  TensorStore spec, or 'RuntimeError: Event loop is closed': the pages a user met instead
  of a message. The failure itself is reported once, by us, so after the first failed
  restore this process no longer prints those two kinds of leftovers; anything else
  still reaches the previous hook."""
  if getattr(sys.unraisablehook, "genie_jax_quiet", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and "orbax" in code.co_filename:
      return
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
      return
    previous(unraisable)

  hook.genie_jax_quiet = True
  sys.unraisablehook = hook
  warnings.filterwarnings("ignore", message=f"coroutine '{_ORBAX_READ_COROUTINE}' was never awaited",
                          category=RuntimeWarning)


def _all_processes_agree(ok: bool) -> bool:
  """On several processes a step counts as restored only if it restored everywhere
  (each process reads its own array shards, so one can fail alone)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _newest_readable(ckpt, read):
  """(step, value, failures) for the newest step where `read(step)` succeeds on every
  process, with failures [(step, reason)] of the newer ones; step None if none reads."""
  failures = []
  for step in reversed(ckpt.all_steps()):
    value, reason = None, None
    try:
      value = read(step)
    except Exception as e:  # pylint: disable=broad-except  (Orbax raises many kinds, see above)
      reason = failure_reason(e)
      _silence_abandoned_reads()
    if reason is not None:
      gc.collect()  # the abandoned reads go now, while their noise is silenced
    if _all_processes_agree(reason is None):
      return step, value, failures
    failures.append((step, reason or "it failed to restore on another process"))
    _warn(f"checkpoint step {step} cannot be read ({ckpt.step_path(step)}): {failures[-1][1]}")
  return None, None, failures


def _none_readable(ckpt, failures, advice: str) -> UnreadableCheckpointError:
  listing = "\n  ".join(f"step {s} ({ckpt.step_path(s)}): {why}" for s, why in failures)
  return UnreadableCheckpointError(f"no checkpoint in {ckpt.directory} can be read:\n  {listing}\n{advice}")


def move_aside(ckpt, step: int) -> str:
  """Moves checkpoint `step` into workdir/checkpoints_corrupt/ (as <step>, or <step>.1, ...
  if that name is taken) and returns its new path. Process 0 moves; all wait for it."""
  target_dir = os.path.join(ckpt.workdir, CORRUPT_DIR)
  target, n = os.path.join(target_dir, str(step)), 0
  while os.path.exists(target):
    n += 1
    target = os.path.join(target_dir, f"{step}.{n}")
  if jax.process_index() == 0:
    os.makedirs(target_dir, exist_ok=True)
    os.rename(ckpt.step_path(step), target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f"genie_jax_move_aside_{step}")
  return target


def restore_for_training(ckpt, abstract_state, data_iterator):
  """(step, state) of the newest checkpoint that restores (state and iterator), or None
  when the workdir has no checkpoint. Newer ones that fail are moved aside; if none
  restores, raises UnreadableCheckpointError and moves nothing."""
  if not ckpt.all_steps():
    return None
  step, state, failures = _newest_readable(ckpt, lambda s: ckpt.restore(s, abstract_state, data_iterator))
  if step is None:
    raise _none_readable(ckpt, failures, (
        "If the config changed since they were written, run with the original one. If they are "
        f"damaged, move the folder aside (mv {ckpt.directory} {ckpt.directory}.bad) to start again "
        "from step 0."))
  if failures:
    moved = [move_aside(ckpt, s) for s, _ in failures]
    ckpt.reload()
    _warn(f"resuming from step {step}, the newest checkpoint that restores; unreadable step(s) "
          f"{', '.join(str(s) for s, _ in failures)} moved to {os.path.dirname(moved[0])}")
  return step, state


def restore_params_for_reading(ckpt, abstract_params):
  """(step, params) of the newest checkpoint whose params read, warning about newer ones;
  raises UnreadableCheckpointError naming every step's path if none reads."""
  step, params, failures = _newest_readable(ckpt, lambda s: ckpt.restore_params(s, abstract_params))
  if step is None:
    raise _none_readable(ckpt, failures, (
        "They may be damaged, or written by a version of genie_jax whose model differs. Resume "
        "training in that workdir from a good copy, or point to another workdir."))
  if failures:
    _warn(f"using step {step} of {ckpt.directory}, the newest checkpoint that reads (step(s) "
          f"{', '.join(str(s) for s, _ in failures)} cannot be; training there again moves them "
          f"aside into {os.path.join(ckpt.workdir, CORRUPT_DIR)})")
  return step, params
