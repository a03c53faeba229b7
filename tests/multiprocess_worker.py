"""One of the processes of tests/test_multiprocess.py (not a test itself).

    python tests/multiprocess_worker.py PROCESS_ID PORT WORKDIR DATA_DIR STOP_AFTER

Joins a 2-process JAX cluster over gloo (4 CPU devices each, one 2x2x2 mesh across both),
trains the tiny tokenizer (resuming from WORKDIR), restores the latest checkpoint's
params on every process and prints one JSON line: step, last loss, params checksum.
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main():
  process_id, port, workdir, data_dir, stop_after = sys.argv[1:6]
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id))
  import jax.numpy as jnp
  from experiments import tiny
  from genie_jax import parallel
  from genie_jax.models import build
  from genie_jax.train import checkpoints, trainer

  c = tiny.get_config("tokenizer")
  c.data.update(name="sprites", data_dir=data_dir)
  c.mesh.update(data=2, fsdp=2, tensor=2)
  c.train.update(steps=6, batch_size=8, log_every=1, ckpt_every=3, image_every=3)
  metrics = trainer.train(c, workdir, progress=False, stop_after=int(stop_after) or None)
  mesh = parallel.mesh_from_config(c.mesh)
  _, params, _, _, step = checkpoints.load_params(workdir, build.make_trainable, mesh)
  checksum = jax.jit(lambda p: sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(p)),
                     out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))(params)
  print(json.dumps({"process": jax.process_index(), "devices": jax.device_count(),
                    "local_devices": jax.local_device_count(), "step": int(step),
                    "loss": metrics["loss"], "checksum": float(checksum)}), flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
