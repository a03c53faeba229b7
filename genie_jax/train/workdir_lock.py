"""One trainer per workdir: a lock file that names its holder and is taken over once the
holder is dead.

Two trainers on one workdir would both write checkpoints 50, 100, ... into the same
folder and overwrite each other's metrics, and neither would notice. So the trainer
creates `workdir/train.lock` atomically (O_CREAT | O_EXCL) before anything else and
removes it when it ends. The file names the holder: host, pid, process start time,
start date and command.

A lock outlives its run when the run is killed (SIGKILL, OOM killer, preemption without
notice, a machine that disappears). The next start must not be blocked by it, so a lock
counts as dead when
  - its holder ran on this machine (same hostname and pid namespace) and that process no
    longer exists, is a zombie, or is another process that reused the pid (its start time
    differs); this is exact, so a killed run can be restarted at once;
  - its holder ran on another machine and its heartbeat is older than `stale_after_s`.
    The holder refreshes the file's mtime every `heartbeat_s` from a daemon thread, so a
    live run's heartbeat stays fresh even while a step or a compilation takes minutes.
The read-judge-remove-create sequence runs under flock on the workdir, so two starts on
one machine cannot both take over the same dead lock. Across machines it relies on
O_EXCL, which NFS v3+ and Cloud Storage FUSE honour for file creation.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid

LOCK_NAME = "train.lock"


class WorkdirLockedError(RuntimeError):
  """Another live trainer holds the workdir."""


class WorkdirLockLostError(RuntimeError):
  """This trainer's lock was removed or taken over while it ran."""


def _pid_namespace() -> str | None:
  try:
    return os.readlink("/proc/self/ns/pid")
  except OSError:  # not Linux
    return None


def _process_start(pid: int) -> str | None:
  """The kernel's start time of `pid` (clock ticks since boot), None when unknown. With
  the pid it identifies a process: a reused pid has another start time."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces
  except OSError:
    return None
  return fields[19]  # field 22 of proc(5); fields[0] is field 3


def _process_state(pid: int) -> str | None:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0]
  except OSError:
    return None


def _same_machine_process_alive(pid: int, start: str | None) -> bool:
  if os.path.isdir("/proc"):
    state = _process_state(pid)
    if state is None or state in ("Z", "X"):  # gone, or killed and not yet reaped
      return False
    return start is None or _process_start(pid) == start
  try:  # no /proc (macOS): existence only
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def holder_description(info: dict, heartbeat_age_s: float | None = None) -> str:
  text = (f"host {info.get('host')!r}, pid {info.get('pid')}, started {info.get('started')}, "
          f"command {info.get('command')!r}")
  if heartbeat_age_s is not None:
    text += f", last heartbeat {heartbeat_age_s:.0f} s ago"
  return text


class WorkdirLock:
  """`with WorkdirLock(workdir): ...` holds the workdir for this process, or raises
  WorkdirLockedError naming the live run that holds it."""

  def __init__(self, workdir: str, *, heartbeat_s: float = 20.0, stale_after_s: float = 120.0,
               log=None):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_NAME)
    self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
    self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    self._token = uuid.uuid4().hex
    self._held = False
    self._lost: str | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  # ---------------------------------------------------------------- the holder's facts
  def _info(self) -> dict:
    return {"host": socket.gethostname(), "pid_namespace": _pid_namespace(), "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(getattr(sys, "orig_argv", sys.argv)), "token": self._token}

  def _read(self) -> tuple[dict | None, float] | None:
    """(holder info or None if unparsable, mtime) of the lock file; None if it is absent."""
    try:
      with open(self.path) as f:
        text = f.read()
      mtime = os.stat(self.path).st_mtime
    except FileNotFoundError:
      return None
    try:
      info = json.loads(text)
    except json.JSONDecodeError:
      info = None
    return (info if isinstance(info, dict) else None), mtime

  def _dead_because(self, info: dict | None, mtime: float) -> str | None:
    """Why the lock's holder is dead, or None if it may be alive."""
    age = time.time() - mtime
    if info is None:  # half-written by a run killed while creating it, or not ours at all
      return f"the lock file is unreadable and {age:.0f} s old" if age > self.stale_after_s else None
    same_machine = (info.get("host") == socket.gethostname()
                    and info.get("pid_namespace") == _pid_namespace())
    if same_machine:
      alive = _same_machine_process_alive(int(info.get("pid", -1)), info.get("pid_start"))
      return None if alive else "its process no longer exists"
    if age > self.stale_after_s:
      return f"no heartbeat for {age:.0f} s (more than {self.stale_after_s:.0f} s)"
    return None

  # ---------------------------------------------------------------- acquire / release
  @contextlib.contextmanager
  def _machine_mutex(self):
    """flock on the workdir folder: serialises lock takeovers between processes of this
    machine (released by the kernel if the process dies)."""
    fd = os.open(self.workdir, os.O_RDONLY)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
      yield
    finally:
      os.close(fd)  # closing releases the flock

  def _create(self) -> bool:
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      json.dump(self._info(), f, indent=1)
      f.flush()
      os.fsync(f.fileno())
    return True

  def acquire(self) -> None:
    if self._held:
      return
    os.makedirs(self.workdir, exist_ok=True)
    with self._machine_mutex():
      for _ in range(50):  # a lock file that vanishes or is half-written is read again
        if self._create():
          break
        found = self._read()
        if found is None:
          continue
        info, mtime = found
        dead = self._dead_because(info, mtime)
        if dead is None:
          if info is None:  # being written right now by another start
            time.sleep(0.1)
            continue
          raise WorkdirLockedError(
              f"{self.workdir} is in use by another genie_jax.train ({holder_description(info, time.time() - mtime)}). "
              f"One trainer per workdir: wait for it or stop it, or use another --workdir. If that run is "
              f"certainly dead, delete {self.path}.")
        os.remove(self.path)
        who = holder_description(info) if info else "an unknown holder"
        self._log(f"workdir lock: took over the lock left by a dead run ({who}; {dead})")
      else:
        raise WorkdirLockedError(f"could not create {self.path}: it keeps changing; is another "
                                 "trainer starting on this workdir right now?")
    self._held = True
    self._thread = threading.Thread(target=self._heartbeat, name="workdir-lock-heartbeat", daemon=True)
    self._thread.start()

  def _heartbeat(self) -> None:
    while not self._stop.wait(self.heartbeat_s):
      found = self._read()
      if found is None or found[0] is None or found[0].get("token") != self._token:
        now = found[0] if found and found[0] else None
        self._lost = (f"{self.path} was removed" if found is None else
                      f"{self.path} now names another run ({holder_description(now) if now else 'unreadable'})")
        return
      try:
        os.utime(self.path)
      except OSError as e:  # a flaky network filesystem: try again at the next beat
        self._log(f"workdir lock: could not refresh the heartbeat of {self.path}: {e}")

  def check(self) -> None:
    """Raises WorkdirLockLostError if another run has taken this workdir over (its lock was
    deleted by hand, or this run stalled past the stale timeout): stop before writing."""
    if self._lost:
      raise WorkdirLockLostError(f"this run no longer holds {self.workdir}: {self._lost}. Stopping "
                                 "so that two runs do not write the same checkpoints.")

  def release(self) -> None:
    if not self._held:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    found = self._read()
    if found is not None and found[0] is not None and found[0].get("token") == self._token:
      os.remove(self.path)
    self._held = False

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
