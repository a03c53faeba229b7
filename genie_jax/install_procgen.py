"""Installs Procgen (CoinRun) without letting pip downgrade numpy.

procgen-mirror's dependency gym3 declares numpy<2 (and an old imageio-ffmpeg that
breaks mp4 writing), yet runs with numpy 2. So the four packages go in with --no-deps;
their real runtime needs (cffi, cloudpickle, imageio) come from `pip install -e .[coinrun]`.

    python -m genie_jax.install_procgen
"""
import importlib.util
import subprocess
import sys

PACKAGES = ["procgen-mirror==0.10.7", "gym3==0.3.3", "gym==0.26.2", "gym_notices"]


def main() -> int:
  if importlib.util.find_spec("procgen") and importlib.util.find_spec("gym3"):
    print("procgen already installed")
    return 0
  return subprocess.call([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *PACKAGES])


if __name__ == "__main__":
  sys.exit(main())
