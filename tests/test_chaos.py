"""Chaos: a tiny `python -m genie_jax.train` is SIGKILLed at random steps (a fixed seed
chooses them), its newest checkpoint is damaged once in the middle, a second trainer is
started on its workdir while it runs, it gets a SIGTERM (preemption notice), and after
every fault the same command resumes.
The result must equal an uninterrupted run's bit for bit: every step logged once, the
same loss at every step, the same parameters and optimizer state."""
import os
import re
import signal

import numpy as np
import pytest

from experiments import tiny
from genie_jax.train import chaos, recovery, trainer, workdir_lock

STEPS, CKPT_EVERY = 12, 2


def test_sigkill_at_random_steps_and_a_damaged_checkpoint_resume_bitwise(sprites_dir, tmp_path):
  env = chaos.environment(cache_dir=str(tmp_path / "jax_cache"))
  ref_dir, run_dir = str(tmp_path / "reference"), str(tmp_path / "chaos")
  command = lambda workdir: chaos.train_command(workdir, data_dir=sprites_dir, steps=STEPS, ckpt_every=CKPT_EVERY)
  reference = chaos.run(command(ref_dir), env=env, log_path=str(tmp_path / "reference.log"))
  assert reference.returncode == 0, reference.output[-2000:]

  refusals = []

  def second_trainer():  # the same workdir, while the first trainer runs: refused by name
    c = tiny.get_config("tokenizer")
    c.data.update(data_dir=sprites_dir)
    with pytest.raises(workdir_lock.WorkdirLockedError, match=r"in use by another genie_jax.train \(host") as e:
      trainer.train(c, run_dir, progress=False)
    refusals.append(str(e.value))

  rng = np.random.default_rng(0)
  corrupted = None
  for kill in range(3):
    target = max(chaos.logged_steps(run_dir), default=0) + int(rng.integers(1, 4))
    launch = chaos.run(command(run_dir), env=env, log_path=str(tmp_path / f"kill{kill}.log"),
                       kill_at_step=target, kill_delay_s=float(rng.uniform(0, 0.3)),
                       while_running=second_trainer if kill == 0 else None)
    assert launch.signalled, f"finished before step {target}:\n{launch.output[-2000:]}"
    if corrupted is None and len(chaos.checkpoint_steps(run_dir)) >= 2:
      corrupted = chaos.corrupt_newest_checkpoint(run_dir)  # the next start must fall back
      after_corruption = kill + 1
  target = max(chaos.logged_steps(run_dir)) + 1  # and a preemption notice: save, exit 0
  notice = chaos.run(command(run_dir), env=env, log_path=str(tmp_path / "sigterm.log"), kill_at_step=target,
                     sig=signal.SIGTERM)
  saved = re.search(r"SIGTERM: saved step (\d+) to .*; rerun the same command to resume", notice.output)
  assert notice.returncode == 0 and saved, notice.output[-2000:]
  assert int(saved.group(1)) in chaos.checkpoint_steps(run_dir)
  final = chaos.run(command(run_dir), env=env, log_path=str(tmp_path / "final.log"))
  assert final.returncode == 0, final.output[-2000:]

  assert len(refusals) == 1 and "pid" in refusals[0]
  with open(tmp_path / "kill1.log") as f:  # a killed run's lock does not block the next start
    assert "took over the lock left by a dead run" in f.read()
  assert corrupted is not None, "no kill left two checkpoints to fall back between"
  step, _ = corrupted
  with open(tmp_path / (f"kill{after_corruption}.log" if after_corruption < 3 else "sigterm.log")) as f:
    resumed = f.read()
  # named by step and path, with the cause, in the start that met it; and moved aside
  assert f"checkpoint step {step} cannot be read ({os.path.join(run_dir, 'checkpoints', str(step))})" in resumed
  assert "OUT_OF_RANGE" in resumed and "resuming from step" in resumed
  assert os.path.isdir(os.path.join(run_dir, recovery.CORRUPT_DIR, str(step)))
  assert chaos.differences(ref_dir, run_dir, STEPS) == []
  assert not os.path.exists(os.path.join(run_dir, workdir_lock.LOCK_NAME))  # released at the end
