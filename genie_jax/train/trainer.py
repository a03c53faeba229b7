"""The training loop: mesh, sharded state, data, jitted step, logging, checkpoints, resume.

Split once, jit a pure step with explicit in/out shardings and donated state, fold the
step into the rng, fetch metrics only on logging steps, stop with an error naming the
first non-finite step, save on SIGTERM (preemption) before exiting.
"""
from __future__ import annotations

import os
import signal
import time

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from data_pipelines import loader
from genie_jax import parallel
from genie_jax.models import build
from genie_jax.train import checkpoints, logging, state as state_lib, step as step_lib


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


def train(config, workdir: str, *, progress: bool = True, stop_after: int | None = None) -> dict:
  """Trains config.phase to config.train.steps; resumes from workdir. Returns last metrics.

  `stop_after` ends the run (with a checkpoint) after that many steps of this call, as an
  interruption would; the schedule still follows config.train.steps.
  """
  os.makedirs(workdir, exist_ok=True)
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
  start = ckpt.latest_step()
  with parallel.use_mesh_rules(mesh, config.rules):
    if start is None:
      state = setup.init_state()
      start = 0
    else:
      state = ckpt.restore(start, checkpoints.abstract_with_shardings(setup.abstract_state, setup.shardings),
                           data)

    train_step = setup.jitted_step(tok_graphdef, frozen_shardings)
    # replicated output: every process can fetch the grid (process 0 writes it)
    preview = jax.jit(step_lib.make_preview(config, setup.graphdef, tok_graphdef),
                      out_shardings=NamedSharding(mesh, P()))

    writer = logging.MetricWriter(workdir)
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
    with _SigtermFlag() as sigterm:
      for step in range(start, total):
        batch = next(data)
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
          ckpt.save(done, state, data)
        if sigterm.received:
          ckpt.wait()
          bar.close()
          print(f"SIGTERM: saved step {done} to {ckpt.directory}; rerun the same command to resume")
          break
        if interrupted:
          break
    bar.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
  last["step"] = int(jax.device_get(state["step"]))
  return last


def _check_finite(state) -> None:
  bad = int(jax.device_get(state["nonfinite_step"]))
  if bad >= 0:
    raise NonFiniteLossError(f"loss or gradient became NaN/Inf at step {bad + 1}; "
                             "nothing after the last checkpoint was saved")
