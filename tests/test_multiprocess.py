"""Real multi-process training on this machine: 2 JAX processes (4 CPU devices each, gloo
collectives) train on one 8-device mesh, checkpoint from every process, are restarted,
resume, and agree with each other."""
import json
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "multiprocess_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_cluster(workdir, data_dir, stop_after):
  port = _free_port()
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)
  procs = [subprocess.Popen([sys.executable, WORKER, str(i), str(port), workdir, data_dir, str(stop_after)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outputs = [p.communicate(timeout=900) for p in procs]
  # every process's stderr: the first to fail is often not the one that reports an error
  assert all(p.returncode == 0 for p in procs), "\n".join(
      f"process {i} (exit {p.returncode}):\n{err[-3000:]}" for i, (p, (_, err)) in enumerate(zip(procs, outputs)))
  results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
  return sorted(results, key=lambda r: r["process"])


def test_two_processes_train_checkpoint_restart_and_agree(sprites_dir, tmp_path):
  workdir = str(tmp_path / "run")
  first = _run_cluster(workdir, sprites_dir, stop_after=3)  # "preempted" after 3 steps
  assert [r["step"] for r in first] == [3, 3]
  assert all(r["devices"] == 8 and r["local_devices"] == 4 for r in first)
  second = _run_cluster(workdir, sprites_dir, stop_after=0)  # restarted: resumes to 6
  assert [r["step"] for r in second] == [6, 6]
  for runs in (first, second):  # both processes hold the same global params and loss
    assert runs[0]["checksum"] == runs[1]["checksum"] and runs[0]["loss"] == runs[1]["loss"]
  assert second[0]["checksum"] != first[0]["checksum"]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:  # process 0 logged each step once
    steps = [json.loads(line)["step"] for line in f]
  assert steps == [1, 2, 3, 4, 5, 6]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert not os.path.exists(os.path.join(workdir, "train.lock"))  # one lock (process 0's), released
