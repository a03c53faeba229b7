"""Fault injection for the chaos test and soak: run `python -m genie_jax.train` as a
subprocess, SIGKILL it at chosen steps, damage its newest checkpoint, and compare the
result with an uninterrupted run.

A kill lands wherever the process happens to be (inside a step, while logging, in the
middle of an asynchronous save), which is the point: after every kill the same command
must resume, and at the end the parameters and the loss of every step must equal those
of a run that was never interrupted, bit for bit. Used by tests/test_chaos.py (a few
kills) and scripts/chaos_soak.py (many).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def train_command(workdir: str, *, data_dir: str, steps: int, ckpt_every: int, keep: int = 3,
                  config: str = "experiments/tiny.py:tokenizer", extra: tuple[str, ...] = ()) -> list[str]:
  """The tiny trainer's command line, logging every step (the kill points watch the log)."""
  return [sys.executable, "-m", "genie_jax.train", f"--config={os.path.join(REPO, config)}",
          f"--workdir={workdir}", f"--config.data.data_dir={data_dir}", f"--config.train.steps={steps}",
          f"--config.train.ckpt_every={ckpt_every}", f"--config.train.keep={keep}",
          "--config.train.log_every=1", "--config.train.image_every=0", *extra]


def environment(cache_dir: str | None = None) -> dict:
  """This process's environment for the trainer, importing genie_jax from this checkout,
  on one CPU device. A persistent compilation cache makes each relaunch load the step
  instead of compiling it again; the program is the same, so results stay bitwise equal."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
             JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  # one CPU device (the tests' conftest asks for 8): the tiny step compiles and runs faster
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if not f.startswith("--xla_force_host_platform_device_count"))
  if cache_dir:
    env.update(JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return env


def logged_steps(workdir: str) -> list[int]:
  """Steps in metrics.jsonl, in file order (a line cut short by a kill is ignored)."""
  path = os.path.join(workdir, "metrics.jsonl")
  steps = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
          pass
  return steps


def loss_curve(workdir: str) -> dict[int, float]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["loss"] for r in rows}


@dataclasses.dataclass
class Launch:
  """One trainer process: how it ended and what it printed. `signalled`: it was still
  running when the signal was sent (so a SIGKILLed one ends with returncode -9)."""
  returncode: int
  signalled: bool
  seconds: float
  output: str


def run(cmd: list[str], *, env: dict, log_path: str, kill_at_step: int | None = None,
        kill_delay_s: float = 0.0, kill_after_s: float | None = None, while_running=None,
        sig: int = signal.SIGKILL, timeout_s: float = 600.0) -> Launch:
  """Runs the trainer to its end, or sends it `sig` (SIGKILL; SIGTERM for a preemption
  notice) `kill_delay_s` after metrics.jsonl first shows step `kill_at_step`, or
  `kill_after_s` after it started (in start-up, restore or training: wherever that
  falls), then waits for it to end. `while_running()` is called once, after the first
  step this process logs, while it still runs (e.g. to try a second trainer)."""
  workdir = next(a.split("=", 1)[1] for a in cmd if a.startswith("--workdir="))
  started = time.perf_counter()
  with open(log_path, "w") as log:
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    signalled, before = False, max(logged_steps(workdir), default=0)
    try:
      while proc.poll() is None:
        elapsed = time.perf_counter() - started
        if elapsed > timeout_s:
          raise TimeoutError(f"trainer still running after {timeout_s:.0f} s; see {log_path}")
        latest = max(logged_steps(workdir), default=0)
        # a step beyond what the file held at launch can only come from this process
        if while_running is not None and latest > before:
          while_running()
          while_running = None
        if ((kill_at_step is not None and latest >= kill_at_step)
            or (kill_after_s is not None and elapsed >= kill_after_s)):
          time.sleep(kill_delay_s if kill_after_s is None else 0.0)
          if proc.poll() is None:
            proc.send_signal(sig)
            signalled = True
          break
        time.sleep(0.02)
    finally:
      if proc.poll() is None and not signalled:  # an error in this loop: leave nothing behind
        proc.kill()
      # reaped: a killed trainer must not linger as a zombie (a SIGTERMed one saves first)
      proc.wait(timeout=timeout_s)
  with open(log_path) as f:
    output = f.read()
  return Launch(returncode=proc.returncode, signalled=signalled, seconds=time.perf_counter() - started,
                output=output)


def corrupt_newest_checkpoint(workdir: str) -> tuple[int, str]:
  """Truncates the largest array file of the newest checkpoint to half its size, as a
  copy or a disk that ran out part-way would; returns (step, file)."""
  ckdir = os.path.join(workdir, "checkpoints")
  step = max(int(d) for d in os.listdir(ckdir) if d.isdigit())
  files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(ckdir, str(step), "state"))
           for name in names]
  victim = max(files, key=os.path.getsize)
  os.truncate(victim, os.path.getsize(victim) // 2)
  return step, victim


def checkpoint_steps(workdir: str) -> list[int]:
  ckdir = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(ckdir) if d.isdigit()) if os.path.isdir(ckdir) else []


def final_state(workdir: str):
  """The newest checkpoint's full state (params, optimizer, step, rng) as numpy arrays."""
  import jax  # pylint: disable=g-import-not-at-top
  from genie_jax.models import build  # pylint: disable=g-import-not-at-top
  from genie_jax.train import checkpoints, state as state_lib  # pylint: disable=g-import-not-at-top
  config = checkpoints.read_config(workdir)
  tx = state_lib.make_optimizer(config.optim, config.train.steps)
  abstract = jax.eval_shape(lambda: state_lib.init_state(config, build.make_trainable, tx))
  ckpt = checkpoints.Checkpointer(workdir, async_save=False)
  try:
    state = ckpt.restore(ckpt.latest_step(), abstract)
  finally:
    ckpt.close()
  return jax.tree.map(np.asarray, state)


def differences(reference_dir: str, chaos_dir: str, steps: int) -> list[str]:
  """What differs between an uninterrupted run and a killed-and-resumed one: each step
  logged exactly once, the same loss bit for bit at every step, the same final state."""
  import jax  # pylint: disable=g-import-not-at-top
  problems = []
  logged = logged_steps(chaos_dir)
  if logged != list(range(1, steps + 1)):
    dupes = sorted({s for s in logged if logged.count(s) > 1})
    missing = sorted(set(range(1, steps + 1)) - set(logged))
    problems.append(f"metrics.jsonl steps are not 1..{steps} once each: duplicated {dupes}, missing {missing}")
  ref, got = loss_curve(reference_dir), loss_curve(chaos_dir)
  bad = [s for s in range(1, steps + 1) if ref.get(s) != got.get(s)]
  if bad:
    problems.append(f"loss differs at steps {bad[:10]} (e.g. step {bad[0]}: {ref.get(bad[0])!r} vs {got.get(bad[0])!r})")
  a, b = final_state(reference_dir), final_state(chaos_dir)
  paths_a = jax.tree_util.tree_flatten_with_path(a)[0]
  leaves_b = jax.tree.leaves(b)
  if len(paths_a) != len(leaves_b):
    problems.append(f"final states have {len(paths_a)} vs {len(leaves_b)} arrays")
  else:
    for (path, x), y in zip(paths_a, leaves_b):
      if x.shape != y.shape or x.dtype != y.dtype or x.tobytes() != y.tobytes():
        problems.append(f"final state differs at {jax.tree_util.keystr(path)}")
  return problems
