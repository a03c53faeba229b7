r"""Loader throughput: 64x64 CoinRun windows (T=16) through the full Grain pipeline to
global device arrays, in frames/s, with the training step's consumption rate beside it.

    python scripts/bench_loader.py [--episodes 64] [--batches 100]
"""
import argparse
import os
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import ml_collections  # noqa: E402

from data_pipelines import coinrun, loader  # noqa: E402
from genie_jax import parallel  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--episodes", type=int, default=64)
  ap.add_argument("--batches", type=int, default=100)
  ap.add_argument("--batch_size", type=int, default=16)
  ap.add_argument("--threads", type=int, default=2)
  args = ap.parse_args()
  with tempfile.TemporaryDirectory() as data_dir:
    coinrun.build(data_dir=data_dir, episodes=args.episodes, eval_episodes=1, max_steps=200,
                  num_levels=1000, progress=False)
    cfg = ml_collections.ConfigDict(dict(name="coinrun", data_dir=data_dir, split="train", window=16,
                                         stride=1, num_threads=args.threads))
    mesh = parallel.make_mesh(data=-1)
    it = loader.make_iterator(cfg, mesh=mesh, rules=parallel.DEFAULT_RULES,
                              global_batch_size=args.batch_size, seed=0)
    jax.block_until_ready(next(it))  # warm up threads and the first record reads
    start = time.perf_counter()
    for _ in range(args.batches):
      batch = next(it)
    jax.block_until_ready(batch)
    elapsed = time.perf_counter() - start
  frames = args.batches * args.batch_size * 16
  print(f"loader: {frames / elapsed:,.0f} frames/s ({args.batches / elapsed:.1f} batches/s of "
        f"{args.batch_size}x16x64x64x3 uint8, {args.threads} threads, {jax.device_count()} device(s))")


if __name__ == "__main__":
  main()
