"""The host's memory allocator: tcmalloc, where it is installed, for every command that trains.

On CPU, XLA allocates a step's large temporary buffers afresh on every step. glibc's malloc
hands allocations above 32 MiB to mmap and gives them back to the kernel when they are
freed, so the next step takes a page fault for every 4 KiB of them again: one sprite
quickstart on a 2-core machine took 328 million page faults and 782 s of kernel time.
tcmalloc keeps freed memory for reuse: the sprite recipe's steps run 1.46x (tokenizer)
and 1.61x (LAM + dynamics) faster under it (scripts/bench_allocator.py; README "The
host's memory allocator"). glibc's own knobs (no mmap, one arena, no trimming; `mallopt`)
remove the faults too, but in one arena the threads queue for its lock, and a one-off
check found the LAM + dynamics step slower than under plain glibc.

A native library that is opened with RTLD_DEEPBIND (gym3 opens Procgen's that way) binds
its malloc to glibc's, not to the preloaded tcmalloc, so memory crosses the two allocators
and free() aborts the process. `load_ahead_of_deepbind` loads such a library first, without
DEEPBIND; the later dlopen finds it loaded and keeps that binding.

A preload cannot be installed in a running process, so `relaunch_with_tcmalloc` runs the
same command again, with the same arguments, with tcmalloc in LD_PRELOAD. It does nothing
where tcmalloc is not installed (Debian / Ubuntu: `apt-get install libtcmalloc-minimal4`),
already loaded, or turned off with GENIE_JAX_TCMALLOC=0.
"""
from __future__ import annotations

import ctypes.util
import os
import sys
from typing import Callable, Mapping

ENV_SWITCH = "GENIE_JAX_TCMALLOC"
_RELAUNCHED = "GENIE_JAX_TCMALLOC_RELAUNCHED"  # set in the relaunched process: never twice
# where Debian, Ubuntu and Fedora put it, for a machine whose linker cache does not list it
_KNOWN_PATHS = tuple(f"/usr/{lib}/libtcmalloc_minimal.so.4" for lib in
                     ("lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu", "lib64", "lib"))


def find_tcmalloc(known_paths=_KNOWN_PATHS) -> str | None:
  """The tcmalloc library to preload (a soname the linker finds, or a path), or None."""
  for name in ("tcmalloc_minimal", "tcmalloc"):
    found = ctypes.util.find_library(name)
    if found:
      return found
  return next((path for path in known_paths if os.path.exists(path)), None)


def tcmalloc_loaded(maps_path: str = "/proc/self/maps") -> bool:
  """Whether this process runs with tcmalloc (mapped into its memory)."""
  try:
    with open(maps_path) as maps:
      return any("tcmalloc" in line for line in maps)
  except OSError:
    return False


def relaunch_with_tcmalloc(*, environ: Mapping[str, str] | None = None,
                           execve: Callable = os.execve, find: Callable[[], str | None] = find_tcmalloc,
                           loaded: Callable[[], bool] = tcmalloc_loaded) -> str:
  """Runs this command again under tcmalloc when it is installed and not yet in use; returns
  (when it does not relaunch) why not: "disabled", "loaded", "relaunched", "unsupported"
  or "not installed". Call it first thing in a command's main, before any work."""
  environ = os.environ if environ is None else environ
  if environ.get(ENV_SWITCH, "1").lower() in ("0", "false", "no", "off"):
    return "disabled"
  if not sys.platform.startswith("linux"):
    return "unsupported"
  if loaded():
    return "loaded"
  if environ.get(_RELAUNCHED):  # preloaded once and still absent: never loop
    return "relaunched"
  library = find()
  if library is None:
    return "not installed"
  env = dict(environ)
  env["LD_PRELOAD"] = " ".join(p for p in (library, environ.get("LD_PRELOAD", "")) if p)
  env[_RELAUNCHED] = "1"
  sys.stdout.flush()
  sys.stderr.flush()
  execve(sys.executable, list(sys.orig_argv), env)
  return "relaunched"  # only reached when `execve` is a stand-in (tests)


def load_ahead_of_deepbind(path: str) -> bool:
  """Under tcmalloc, loads the shared library at `path` now, without RTLD_DEEPBIND, so that a
  later RTLD_DEEPBIND open of it (gym3's) uses tcmalloc too; True if it did. Under glibc's
  malloc there is nothing to mend, and it does nothing."""
  if not tcmalloc_loaded():
    return False
  ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
  return True
