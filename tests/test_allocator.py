"""genie_jax/allocator.py: a command relaunches itself under tcmalloc when it is installed,
and otherwise runs as it is."""
import os
import subprocess
import sys

import pytest

from genie_jax import allocator


def _relaunch(environ, *, found="libtcmalloc_minimal.so.4", loaded=False):
  calls = []
  why = allocator.relaunch_with_tcmalloc(environ=environ, execve=lambda *a: calls.append(a),
                                         find=lambda: found, loaded=lambda: loaded)
  return why, calls


def test_relaunch_runs_the_same_command_with_tcmalloc_preloaded_once():
  why, calls = _relaunch({"LD_PRELOAD": "libother.so", "HOME": "/h"})
  assert why == "relaunched" and len(calls) == 1
  path, argv, env = calls[0]
  assert path == sys.executable and argv == list(sys.orig_argv)  # the same command, the same arguments
  assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4 libother.so" and env["HOME"] == "/h"
  # the relaunched process, should the preload not take, does not relaunch again
  assert _relaunch(env) == ("relaunched", [])


@pytest.mark.parametrize("environ, found, loaded, why", [
    ({allocator.ENV_SWITCH: "0"}, "libtcmalloc_minimal.so.4", False, "disabled"),
    ({}, "libtcmalloc_minimal.so.4", True, "loaded"),
    ({}, None, False, "not installed"),
])
def test_no_relaunch_when_off_loaded_or_missing(environ, found, loaded, why):
  assert _relaunch(environ, found=found, loaded=loaded) == (why, [])


def test_find_looks_in_the_known_places(tmp_path, monkeypatch):
  monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: None)
  assert allocator.find_tcmalloc(known_paths=(str(tmp_path / "absent.so"),)) is None
  library = tmp_path / "libtcmalloc_minimal.so.4"
  library.write_bytes(b"")
  assert allocator.find_tcmalloc(known_paths=(str(tmp_path / "absent.so"), str(library))) == str(library)


@pytest.mark.skipif(allocator.find_tcmalloc() is None or not sys.platform.startswith("linux"),
                    reason="tcmalloc is not installed (apt-get install libtcmalloc-minimal4)")
def test_a_real_relaunch_runs_under_tcmalloc_with_its_arguments():
  code = ("import sys; from genie_jax import allocator; allocator.relaunch_with_tcmalloc(); "
          "print(allocator.tcmalloc_loaded(), sys.argv[1:])")
  # as a fresh shell would start it, whatever this suite runs under
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", "GENIE_JAX_TCMALLOC_RELAUNCHED", allocator.ENV_SWITCH)}
  out = subprocess.run([sys.executable, "-c", code, "a", "b c"], env=env, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "True ['a', 'b c']", out
  env[allocator.ENV_SWITCH] = "0"
  out = subprocess.run([sys.executable, "-c", code, "a"], env=env, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False ['a']", out
