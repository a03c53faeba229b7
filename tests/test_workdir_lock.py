"""One trainer per workdir: a live holder is refused by name; a dead one (its process gone,
a zombie, or another host's stale heartbeat) is taken over; the heartbeat refreshes; a
run that loses its lock notices. No JAX: these take well under a second."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from genie_jax.train import workdir_lock


def _write_lock(workdir, **info):
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, workdir_lock.LOCK_NAME)
  holder = {"host": socket.gethostname(), "pid_namespace": workdir_lock._pid_namespace(),
            "pid": 1, "pid_start": None, "started": "2026-01-01T00:00:00+00:00",
            "command": "python -m genie_jax.train (earlier)", "token": "earlier"}
  holder.update(info)
  with open(path, "w") as f:
    json.dump(holder, f)
  return path


def test_a_live_holder_is_refused_by_name_and_released_at_the_end(tmp_path):
  first = workdir_lock.WorkdirLock(str(tmp_path))
  with first:
    with pytest.raises(workdir_lock.WorkdirLockedError) as e:
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
    assert f"host {socket.gethostname()!r}, pid {os.getpid()}, started " in str(e.value)
    assert "last heartbeat" in str(e.value) and first.path in str(e.value)
  assert not os.path.exists(first.path)
  with workdir_lock.WorkdirLock(str(tmp_path)):  # free again
    pass


def test_a_lock_whose_process_is_gone_or_a_zombie_is_taken_over(tmp_path):
  gone = subprocess.Popen([sys.executable, "-c", "pass"])
  gone.wait()  # reaped: its pid names no process (or, reused, one with another start time)
  _write_lock(str(tmp_path / "a"), pid=gone.pid, pid_start="1")
  messages = []
  with workdir_lock.WorkdirLock(str(tmp_path / "a"), log=messages.append):
    pass
  assert "took over the lock left by a dead run" in messages[0] and "no longer exists" in messages[0]

  zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  zombie.kill()
  time.sleep(0.3)  # SIGKILLed but not yet waited for: state Z, as a trainer killed under a harness
  _write_lock(str(tmp_path / "b"), pid=zombie.pid, pid_start=workdir_lock._process_start(zombie.pid))
  try:
    with workdir_lock.WorkdirLock(str(tmp_path / "b"), log=messages.append):
      pass
  finally:
    zombie.wait()
  assert len(messages) == 2 and f"pid {zombie.pid}" in messages[1]

  _write_lock(str(tmp_path / "c"), pid=os.getppid(), pid_start=workdir_lock._process_start(os.getppid()))
  with pytest.raises(workdir_lock.WorkdirLockedError, match=f"pid {os.getppid()}"):  # alive: refused
    workdir_lock.WorkdirLock(str(tmp_path / "c")).acquire()


def test_another_hosts_lock_blocks_until_its_heartbeat_is_stale(tmp_path):
  path = _write_lock(str(tmp_path), host="tpu-worker-0", pid=os.getpid())
  lock = workdir_lock.WorkdirLock(str(tmp_path), stale_after_s=60, log=lambda m: None)
  with pytest.raises(workdir_lock.WorkdirLockedError, match="host 'tpu-worker-0'"):
    lock.acquire()
  os.utime(path, (time.time() - 61, time.time() - 61))  # no heartbeat for 61 s
  with lock:
    with open(path) as f:
      assert json.load(f)["host"] == socket.gethostname()  # now this run's


def test_the_heartbeat_refreshes_and_a_lost_lock_is_noticed(tmp_path):
  lock = workdir_lock.WorkdirLock(str(tmp_path), heartbeat_s=0.05)
  with lock:
    os.utime(lock.path, (time.time() - 1000, time.time() - 1000))
    time.sleep(0.3)
    assert time.time() - os.stat(lock.path).st_mtime < 5
    lock.check()  # still ours
    _write_lock(str(tmp_path), host="other", token="someone else")  # taken over by hand
    time.sleep(0.3)
    with pytest.raises(workdir_lock.WorkdirLockLostError, match="now names another run"):
      lock.check()
  assert os.path.exists(lock.path)  # release leaves the new holder's lock alone
