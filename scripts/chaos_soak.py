r"""Chaos soak: many kill/resume cycles of a tiny trainer, each round checked bitwise
against an uninterrupted run.

    python scripts/chaos_soak.py --cycles 40 --root /tmp/chaos_soak [--seed 0] [--steps 60]

Each cycle launches `python -m genie_jax.train` on the chaos workdir and injects one
fault, drawn by a seeded generator:
  kill_step   SIGKILL 0-0.3 s after the run logs a step 1-4 steps ahead
  kill_time   SIGKILL 0.5-9 s after launch: in start-up, lock, restore, compile or training
  sigterm     SIGTERM after a step ahead (preemption notice): must save and exit 0
  corrupt     a kill_step, then the newest checkpoint's largest array file is cut in half
              (when an older checkpoint exists): the next start must fall back past it
  double      a kill_step run during which a second holder tries to lock the same
              workdir (genie_jax.train's own WorkdirLock, in this process so that it
              asks while the run surely holds it): it must be refused, naming the run
A run that reaches its last step ends a round: the chaos workdir must then equal the
reference bit for bit (each step logged once, every loss, the whole final state), and
the next round starts in a fresh workdir. Prints and writes a JSON report to
<root>/soak_report.json; exits 1 on the first failure, naming its log.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from genie_jax.train import chaos, workdir_lock  # noqa: E402  pylint: disable=g-import-not-at-top

FAULTS = ("kill_step", "kill_time", "sigterm", "corrupt", "double")
WEIGHTS = (0.45, 0.2, 0.1, 0.15, 0.1)


def _fail(report: dict, path: str, why: str) -> None:
  report["failure"] = why
  with open(path, "w") as f:
    json.dump(report, f, indent=2)
  sys.exit(f"FAILED: {why}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cycles", type=int, default=40, help="fault injections (launches) in all")
  parser.add_argument("--root", default="/tmp/chaos_soak", help="data, workdirs, logs, report")
  parser.add_argument("--seed", type=int, default=0, help="chooses the faults and their moments")
  parser.add_argument("--steps", type=int, default=60, help="steps of one round")
  parser.add_argument("--ckpt_every", type=int, default=3)
  args = parser.parse_args()

  os.makedirs(args.root, exist_ok=True)
  data_dir = os.path.join(args.root, "data")
  if not os.path.isdir(os.path.join(data_dir, "sprites")):
    from data_pipelines import sprites  # pylint: disable=g-import-not-at-top
    sprites.build(data_dir=data_dir, episodes=12, eval_episodes=4, max_steps=40, chunk_size=24, min_frames=16)
  logs = os.path.join(args.root, "logs")
  shutil.rmtree(logs, ignore_errors=True)
  os.makedirs(logs)
  env = chaos.environment(cache_dir=os.path.join(args.root, "jax_cache"))
  command = lambda workdir: chaos.train_command(workdir, data_dir=data_dir, steps=args.steps,
                                                ckpt_every=args.ckpt_every)
  report_path = os.path.join(args.root, "soak_report.json")
  started = time.perf_counter()

  ref_dir = os.path.join(args.root, "reference")
  shutil.rmtree(ref_dir, ignore_errors=True)
  reference = chaos.run(command(ref_dir), env=env, log_path=os.path.join(logs, "reference.log"))
  report = {"command": " ".join(sys.argv), "cycles": args.cycles, "seed": args.seed, "steps": args.steps,
            "ckpt_every": args.ckpt_every, "reference_seconds": round(reference.seconds, 1),
            "faults": collections.Counter(), "checkpoints_damaged": 0, "fallbacks": 0, "lock_takeovers": 0,
            "double_launches_refused": 0, "sigterm_clean_exits": 0, "rounds_verified": 0,
            "launches": 1, "launch_seconds": []}
  if reference.returncode != 0:
    _fail(report, report_path, f"the reference run failed; see {logs}/reference.log")

  rng = np.random.default_rng(args.seed)
  round_index, expect_fallback = 0, None
  run_dir = os.path.join(args.root, f"chaos{round_index}")
  shutil.rmtree(run_dir, ignore_errors=True)

  def finish_round() -> None:
    nonlocal round_index, run_dir
    if expect_fallback is not None:
      _fail(report, report_path, f"round {round_index}: damaged step {expect_fallback} was never fallen back from")
    problems = chaos.differences(ref_dir, run_dir, args.steps)
    if problems:
      _fail(report, report_path, f"round {round_index} differs from the reference: {problems}")
    report["rounds_verified"] += 1
    print(f"round {round_index}: bitwise equal to the uninterrupted run", flush=True)
    round_index += 1
    run_dir = os.path.join(args.root, f"chaos{round_index}")
    shutil.rmtree(run_dir, ignore_errors=True)

  for cycle in range(args.cycles):
    fault = str(rng.choice(FAULTS, p=WEIGHTS))
    log_path = os.path.join(logs, f"cycle{cycle:04d}_{fault}.log")
    target = max(chaos.logged_steps(run_dir), default=0) + int(rng.integers(1, 5))
    refusals = []

    def second_trainer():
      try:
        workdir_lock.WorkdirLock(run_dir).acquire()
        refusals.append("the lock was granted")
      except workdir_lock.WorkdirLockedError as e:
        refusals.append(str(e))

    if fault == "sigterm":
      launch = chaos.run(command(run_dir), env=env, log_path=log_path, kill_at_step=target, sig=signal.SIGTERM)
    elif fault == "kill_time":
      launch = chaos.run(command(run_dir), env=env, log_path=log_path, kill_after_s=float(rng.uniform(0.5, 9)))
    else:
      launch = chaos.run(command(run_dir), env=env, log_path=log_path, kill_at_step=target,
                         kill_delay_s=float(rng.uniform(0, 0.3)),
                         while_running=second_trainer if fault == "double" else None)
    report["faults"][fault] += 1
    report["launches"] += 1
    report["launch_seconds"].append(launch.seconds)
    out = launch.output
    report["lock_takeovers"] += "took over the lock left by a dead run" in out
    if expect_fallback is not None and expect_fallback not in chaos.checkpoint_steps(run_dir):
      # moved aside by this launch (which a kill may have cut short before it said so)
      if not os.path.isdir(os.path.join(run_dir, "checkpoints_corrupt", str(expect_fallback))):
        _fail(report, report_path, f"cycle {cycle}: damaged step {expect_fallback} vanished; see {log_path}")
      if "resuming from step" in out and f"checkpoint step {expect_fallback} cannot be read" not in out:
        _fail(report, report_path, f"cycle {cycle}: fell back without naming step {expect_fallback}; see {log_path}")
      report["fallbacks"] += 1
      expect_fallback = None
    killed = launch.signalled and fault != "sigterm"
    if not killed and launch.returncode != 0:
      _fail(report, report_path, f"cycle {cycle} ({fault}): exit {launch.returncode}; see {log_path}")
    if fault == "sigterm" and "SIGTERM: saved step" in out:
      report["sigterm_clean_exits"] += 1
    for text in refusals:
      if "is in use by another genie_jax.train" not in text:
        _fail(report, report_path, f"cycle {cycle}: a second holder was not refused: {text[-500:]}")
      report["double_launches_refused"] += 1
    if fault == "corrupt" and killed and len(chaos.checkpoint_steps(run_dir)) >= 2 and expect_fallback is None:
      expect_fallback, _ = chaos.corrupt_newest_checkpoint(run_dir)
      report["checkpoints_damaged"] += 1
    print(f"cycle {cycle:4d} {fault:9s} {'killed' if killed else f'exit {launch.returncode}':8s} "
          f"{launch.seconds:5.1f} s  logged up to step {max(chaos.logged_steps(run_dir), default=0)}", flush=True)
    if not killed and launch.returncode == 0 and chaos.checkpoint_steps(run_dir)[-1:] == [args.steps]:
      finish_round()

  if os.path.isdir(run_dir):  # a round is under way: resume it to the end and check it
    final = chaos.run(command(run_dir), env=env, log_path=os.path.join(logs, "final.log"))
    report["launches"] += 1
    if final.returncode != 0:
      _fail(report, report_path, f"the final resume failed; see {logs}/final.log")
    if expect_fallback is not None and expect_fallback not in chaos.checkpoint_steps(run_dir):
      report["fallbacks"] += 1
      expect_fallback = None
    finish_round()
  seconds = report.pop("launch_seconds")
  report.update(faults=dict(report["faults"]), mean_launch_seconds=round(float(np.mean(seconds)), 1),
                total_minutes=round((time.perf_counter() - started) / 60, 1), failure=None)
  with open(report_path, "w") as f:
    json.dump(report, f, indent=2)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()
