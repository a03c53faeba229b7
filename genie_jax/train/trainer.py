"""The training loop: mesh, sharded state, data, jitted step, logging, checkpoints, resume.

Split once, jit a pure step with explicit in/out shardings and donated state, fold the
step into the rng, fetch metrics only on logging steps, stop with an error naming the
first non-finite step, save on SIGTERM (preemption) before exiting.

Faults it survives (README "Reliability"): a second trainer on the same workdir is
refused (workdir_lock.py); an unreadable newest checkpoint is moved aside and the run
resumes from the newest one that restores (recovery.py); a bad data record stops the
run after a checkpoint, or is skipped and counted (data_pipelines/bad_records.py); a
resumed run's logs keep each step once (logging.py).
"""
from __future__ import annotations

import contextlib
import os
import signal
import time

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from data_pipelines import bad_records, loader
from genie_jax import parallel
from genie_jax.models import build
from genie_jax.train import checkpoints, logging, recovery, state as state_lib, step as step_lib, workdir_lock


class NonFiniteLossError(FloatingPointError):
  pass


class _SigtermFlag:
  """Remembers a SIGTERM so the loop can checkpoint and exit between steps."""

  def __init__(self):
    self.received = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. a notebook executor): no preemption hook
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class TrainSetup:
  """What the step needs before any array exists: optimizer, abstract module and state, and
  their shardings on `mesh`. Shared by training and ahead-of-time compilation (aot.py)."""

  BATCH_NDIM = (("frames", 5), ("actions", 2), ("episode_id", 1), ("start_frame", 1))

  def __init__(self, config, mesh):
    self.config, self.mesh = config, mesh
    self.tx = state_lib.make_optimizer(config.optim, config.train.steps)
    self.schedule = state_lib.learning_rate_schedule(config.optim, config.train.steps)
    self.abstract_module = nnx.eval_shape(lambda: build.make_trainable(config, nnx.Rngs(0)))
    self.graphdef = nnx.graphdef(self.abstract_module)
    self.abstract_state = jax.eval_shape(lambda: state_lib.init_state(config, build.make_trainable, self.tx))
    self.shardings = state_lib.state_shardings(config, self.abstract_module, self.abstract_state, mesh)
    self.batch_shardings = {k: parallel.batch_sharding(mesh, config.rules, nd) for k, nd in self.BATCH_NDIM}

  def init_state(self):
    """A fresh state, created already sharded."""
    return jax.jit(lambda: state_lib.init_state(self.config, build.make_trainable, self.tx),
                   out_shardings=self.shardings)()

  def jitted_step(self, tokenizer_graphdef=None, frozen_shardings=None):
    """The train step, jitted with explicit in/out shardings and the state donated."""
    return jax.jit(
        step_lib.make_train_step(self.config, self.graphdef, self.tx, self.schedule, tokenizer_graphdef),
        in_shardings=(self.shardings, self.batch_shardings, frozen_shardings),
        out_shardings=(self.shardings, NamedSharding(self.mesh, P())), donate_argnums=(0,))


def _process0_says(flag: bool) -> bool:
  """Process 0's `flag`, on every process (the others must stop when it stops)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _lock_workdir(workdir: str):
  """Process 0 holds workdir/train.lock for the whole run (one lock per run, not per
  process); every process raises WorkdirLockedError if it could not."""
  lock, refusal = None, ""
  if jax.process_index() == 0:
    lock = workdir_lock.WorkdirLock(workdir)
    try:
      lock.acquire()
    except workdir_lock.WorkdirLockedError as e:
      refusal = str(e)
  if _process0_says(bool(refusal)):
    raise workdir_lock.WorkdirLockedError(refusal or f"process 0 could not lock {workdir}; see its log")
  return lock


def _check_lock(lock) -> None:
  """Before each save: stop every process if process 0 lost the workdir to another run."""
  lost = ""
  if lock is not None:
    try:
      lock.check()
    except workdir_lock.WorkdirLockLostError as e:
      lost = str(e)
  if _process0_says(bool(lost)):
    raise workdir_lock.WorkdirLockLostError(lost or "process 0 lost the workdir lock; see its log")


def train(config, workdir: str, *, progress: bool = True, stop_after: int | None = None) -> dict:
  """Trains config.phase to config.train.steps; resumes from workdir. Returns last metrics.

  `stop_after` ends the run (with a checkpoint) after that many steps of this call, as an
  interruption would; the schedule still follows config.train.steps. Raises
  WorkdirLockedError, before touching the workdir, if another live trainer holds it.
  """
  os.makedirs(workdir, exist_ok=True)
  lock = _lock_workdir(workdir)
  try:
    return _train(config, workdir, lock=lock, progress=progress, stop_after=stop_after)
  finally:
    if lock is not None:
      lock.release()


def _train(config, workdir: str, *, lock, progress: bool, stop_after: int | None) -> dict:
  if os.path.exists(checkpoints.config_path(workdir)):
    checkpoints.read_config(workdir)  # refuses, before overwriting it, a workdir it cannot resume
  mesh = parallel.mesh_from_config(config.mesh)
  if jax.process_index() == 0:
    checkpoints.write_config(workdir, config)
  total = config.train.steps
  setup = TrainSetup(config, mesh)
  frozen, frozen_shardings, tok_graphdef = None, None, None
  if config.phase == "lam_dynamics":
    tok_graphdef, frozen, frozen_shardings = checkpoints.load_frozen_tokenizer(config, mesh)

  data = loader.make_iterator(config.data, mesh=mesh, rules=config.rules,
                              global_batch_size=config.train.batch_size, seed=config.seed)
  ckpt = checkpoints.Checkpointer(workdir, keep=config.train.keep, keep_period=config.train.keep_period)
  with parallel.use_mesh_rules(mesh, config.rules):
    restored = recovery.restore_for_training(
        ckpt, checkpoints.abstract_with_shardings(setup.abstract_state, setup.shardings), data)
    if restored is None:
      state, start = setup.init_state(), 0
    else:
      start, state = restored

    train_step = setup.jitted_step(tok_graphdef, frozen_shardings)
    # replicated output: every process can fetch the grid (process 0 writes it)
    preview = jax.jit(step_lib.make_preview(config, setup.graphdef, tok_graphdef),
                      out_shardings=NamedSharding(mesh, P()))

    writer = logging.MetricWriter(workdir, start_step=start)
    skip_bad_records = config.data.get("on_bad_record", "stop") == "skip"
    evaluator = None
    if config.train.eval_every:
      from genie_jax.evals import periodic  # pylint: disable=g-import-not-at-top
      evaluator = periodic.PeriodicEvaluator(config, graphdef=setup.graphdef, tokenizer_graphdef=tok_graphdef,
                                             mesh=mesh)
    frames_per_step = config.train.batch_size * config.data.window
    last = {}
    bar = tqdm(total=total, initial=start, desc=f"train {config.phase}", unit="step",
               disable=not progress or jax.process_index() != 0, dynamic_ncols=True)
    window_start, window_steps = time.perf_counter(), 0
    # closing the bar on any exit puts an error message on a line of its own
    with _SigtermFlag() as sigterm, contextlib.closing(bar):
      last_saved = start
      for step in range(start, total):
        data_state = data.get_state()  # where this batch starts, should a record in it be bad
        try:
          batch = next(data)
        except bad_records.BadRecordError as e:
          saved = "nothing new to save"
          if jax.process_count() > 1:  # a save is collective, and the others are in the next step
            saved = f"not saved (one of {jax.process_count()} processes); resume is from step {last_saved}"
          elif step > last_saved:
            _check_finite(state)
            _check_lock(lock)
            ckpt.save(step, state, data, data_state=data_state)
            ckpt.wait()
            saved = f"saved step {step} to {ckpt.directory}"
          raise bad_records.BadRecordError(
              f"{e}\nStopped before step {step + 1}; {saved}. Once the data is fixed (or with "
              "on_bad_record=skip), rerun the same command to resume from there.") from e
        state, metrics = train_step(state, batch, frozen)
        window_steps += 1
        done = step + 1
        log_now = done % config.train.log_every == 0 or done == total
        if log_now:
          last = {k: float(v) for k, v in jax.device_get(metrics).items()}
          _check_finite(state)
          elapsed = time.perf_counter() - window_start
          last["steps_per_sec"] = window_steps / elapsed
          last["frames_per_sec"] = window_steps * frames_per_step / elapsed
          if skip_bad_records:  # counted as read, so it includes the few batches read ahead
            last["data_bad_records_skipped"] = _sum_over_processes(data.bad_record_counter.skipped)
          writer.scalars(done, last)
          bar.set_postfix(loss=f"{last['loss']:.4f}", fps=f"{last['frames_per_sec']:.1f}")
          window_start, window_steps = time.perf_counter(), 0
        if config.train.image_every and done % config.train.image_every == 0:
          truth, output = jax.device_get(preview(state["params"], frozen, batch["frames"]))
          writer.image(done, "preview/truth_vs_model", logging.video_grid([truth[:8], output[:8]]))
        if evaluator is not None and done % config.train.eval_every == 0:
          writer.scalars(done, evaluator(state["params"], frozen))
        bar.update(1)
        interrupted = stop_after is not None and done - start >= stop_after
        if done % config.train.ckpt_every == 0 or done == total or sigterm.received or interrupted:
          _check_finite(state)
          _check_lock(lock)
          ckpt.save(done, state, data)
          last_saved = done
        if sigterm.received:
          ckpt.wait()
          bar.close()
          print(f"SIGTERM: saved step {done} to {ckpt.directory}; rerun the same command to resume")
          break
        if interrupted:
          break
      # still under the SIGTERM hook: a notice that arrives while the last save completes
      # lets it complete instead of killing it part-way
      bar.close()
      ckpt.wait()
      ckpt.close()
      writer.close()
  last["step"] = int(jax.device_get(state["step"]))
  return last


def _sum_over_processes(count: int) -> int:
  if jax.process_count() == 1:
    return count
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return int(np.sum(multihost_utils.process_allgather(np.int64(count))))


def _check_finite(state) -> None:
  bad = int(jax.device_get(state["nonfinite_step"]))
  if bad >= 0:
    raise NonFiniteLossError(f"loss or gradient became NaN/Inf at step {bad + 1}; "
                             "nothing after the last checkpoint was saved")
