"""Simulates 2 CPU devices before JAX starts (the tests marked `eight_devices` run in a pytest
of their own with 8), runs the suite under tcmalloc where it is installed, and builds small
datasets once.

Why 2 and not 8 for everything: XLA's CPU client gives itself max(cores, devices) threads,
so 8 simulated devices on a 2-core machine run every compiled program on 8 threads that
share 2 cores. test_train.py and test_evals.py (28 tests, one process) took 307 s with 8
devices and 262 s with 2, back to back (README, Set-up). Only the 2 x 2 x 2 mesh tests
need 8; GENIE_JAX_TEST_DEVICES sets the count.
"""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile

_DEVICES = int(os.environ.get("GENIE_JAX_TEST_DEVICES", "2"))
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={_DEVICES}").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
import pytest  # noqa: E402


def pytest_configure(config):
  """Runs the suite under tcmalloc where it is installed, as the training commands run
  (genie_jax/allocator.py): pytest starts again with the same arguments, before it has
  collected a test. Then the compilation cache."""
  config.addinivalue_line("markers", "eight_devices: needs 8 simulated CPU devices (a 2 x 2 x 2 mesh); runs in a "
                          "pytest of its own when this one has fewer")
  # pytest has lifted its capture of fds 1 and 2 by now, so the new process writes to the terminal
  from genie_jax import allocator
  allocator.relaunch_with_tcmalloc()  # returns only where it does not relaunch
  # A compilation cache for this session only: many tests compile the same program again
  # (a resumed run, a second model of one config, the trainers they start in subprocesses),
  # which then loads instead of compiling; test_train.py took 263 s with it, 305 s without
  # (README). It starts empty, so no test sees a program compiled by an earlier session.
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    cache = tempfile.mkdtemp(prefix="genie_jax_tests_xla_cache_")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    # the environment for the trainers tests start in subprocesses; jax.config for this
    # process, whose jax (imported with genie_jax above) has already read the environment
    os.environ.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    import jax
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# The tests that take minutes, longest first (README "Set-up"). The README's command runs
# the suite on two workers (`-n 2 --dist loadgroup`: each test its own unit of work, handed
# out in this order as a worker frees up), so the two guards start at once, one on each
# worker, and the many short tests fill in behind them; in file order a worker would reach
# the guards last, one after the other, while the other sat idle.
_SLOWEST_FIRST = ("test_world_control.py::test_lam_recovers_the_true_actions",
                  "test_world_control.py::test_dynamics_trained_on_true_actions",
                  "test_multiprocess.py::", "test_chaos.py::", "test_agents.py::")


def pytest_collection_modifyitems(config, items):
  def rank(item):
    return next((i for i, prefix in enumerate(_SLOWEST_FIRST) if prefix in item.nodeid), len(_SLOWEST_FIRST))

  items.sort(key=rank)  # stable: the rest keep their order
  if _DEVICES < 8:
    for item in items:
      if item.get_closest_marker("eight_devices"):
        item.runtest = _in_an_eight_device_pytest(item.nodeid, str(config.rootpath))


def _in_an_eight_device_pytest(nodeid: str, rootdir: str):
  """A test body that runs `nodeid` in a child pytest with 8 simulated devices and fails with
  its output if it does not pass (JAX fixes the device count when it starts)."""
  def run():
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", nodeid],
                           cwd=rootdir, env={**os.environ, "GENIE_JAX_TEST_DEVICES": "8"},
                           capture_output=True, text=True, timeout=900)
    if child.returncode != 0 or " passed" not in child.stdout:
      pytest.fail(f"{nodeid} with 8 devices, in a pytest of its own (exit {child.returncode}):\n"
                  f"{child.stdout[-4000:]}\n{child.stderr[-2000:]}", pytrace=False)
  return run


@pytest.fixture(scope="session")
def sprites_dir(tmp_path_factory):
  """A small sprites dataset (train 12 episodes x 40 frames)."""
  from data_pipelines import sprites
  data_dir = str(tmp_path_factory.mktemp("data"))
  sprites.build(data_dir=data_dir, episodes=12, eval_episodes=4, max_steps=40, chunk_size=24,
                min_frames=16)
  return data_dir


@pytest.fixture(scope="session")
def coinrun_dir(tmp_path_factory):
  """A few short generated CoinRun episodes."""
  from data_pipelines import coinrun
  data_dir = str(tmp_path_factory.mktemp("coinrun"))
  coinrun.build(data_dir=data_dir, episodes=6, eval_episodes=2, max_steps=40, num_levels=50,
                chunk_size=32, min_frames=16, progress=False)
  return data_dir


@pytest.fixture(scope="session")
def tiny_world(sprites_dir, tmp_path_factory):
  """Workdirs of a tiny tokenizer and LAM + dynamics, a few steps each (for the API,
  play, the notebook and evaluation: they need real checkpoints, not good ones)."""
  from experiments import tiny
  from genie_jax.train import trainer
  root = tmp_path_factory.mktemp("world")
  dirs = {"tokenizer": str(root / "tokenizer"), "world": str(root / "lam_dynamics"), "data": sprites_dir}
  for phase, workdir in (("tokenizer", dirs["tokenizer"]), ("lam_dynamics", dirs["world"])):
    c = tiny.get_config(phase)
    c.data.update(name="sprites", data_dir=sprites_dir)
    c.train.update(steps=3, log_every=1, ckpt_every=3, image_every=0, batch_size=8,
                   tokenizer_workdir=dirs["tokenizer"])
    c.sampling.steps = 4
    trainer.train(c, workdir, progress=False)
  return dirs


@pytest.fixture(scope="session")
def bad_record_sprites_dir(sprites_dir, tmp_path_factory):
  """`sprites_dir` copied, with 64 bytes inverted inside one record of the train shard
  (rot on disk: that record's checksum fails, its neighbours still read)."""
  import glob
  import shutil
  data_dir = str(tmp_path_factory.mktemp("bad_record_data"))
  shutil.copytree(sprites_dir, data_dir, dirs_exist_ok=True)
  (shard,) = glob.glob(f"{data_dir}/sprites/*/sprites-train.array_record-*")
  with open(shard, "r+b") as f:
    f.seek(100_000)  # inside a record's chunk, far from the file's footer
    block = f.read(64)
    f.seek(100_000)
    f.write(bytes(b ^ 0xFF for b in block))
  return data_dir
