r"""Train a phase of Genie.

    python -m genie_jax.train --config experiments/coinrun.py:tokenizer --workdir runs/tok
    python -m genie_jax.train --config experiments/coinrun.py:lam_dynamics --workdir runs/dyn \
        --config.train.tokenizer_workdir=runs/tok
Any config field can be overridden: --config.train.steps=1000 --config.mesh.fsdp=4.
Rerunning the same command resumes from the latest checkpoint in --workdir (or, if that
one cannot be read, from the newest that can). A second trainer on a workdir that a live
run holds is refused.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from genie_jax import allocator

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config (file.py:variant).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, TensorBoard events, config.json.")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                                 "Call jax.distributed.initialize (auto: on multi-host TPU or when "
                                 "JAX_COORDINATOR_ADDRESS is set).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  allocator.relaunch_with_tcmalloc()  # before any work: XLA's per-step buffers (allocator.py)
  logging.set_verbosity(logging.WARNING)  # Orbax logs every write at INFO
  from genie_jax import parallel
  parallel.maybe_initialize_distributed(_DISTRIBUTED.value)
  from data_pipelines import bad_records
  from genie_jax.train import recovery, trainer, workdir_lock
  try:
    metrics = trainer.train(_CONFIG.value, _WORKDIR.value)
  except (workdir_lock.WorkdirLockedError, workdir_lock.WorkdirLockLostError,
          recovery.UnreadableCheckpointError, bad_records.BadRecordError) as e:
    sys.exit(f"error: {e}")  # faults with a message that says what to do; no traceback
  print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
  app.run(main)
