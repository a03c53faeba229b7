r"""Loader throughput: 64x64 CoinRun windows (T=16) through the full Grain pipeline to
global device arrays, in frames/s, with the training step's consumption rate beside it.

    python scripts/bench_loader.py [--episodes 64] [--batches 100] [--compare_encodings]

`--compare_encodings` writes the same episodes twice, their arrays as raw bytes (the
default, data_pipelines/records.py) and under TFDS's default encoding (how datasets were
written before), and times reading one record and the whole pipeline on each, in one run.
"""
import argparse
import os
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import ml_collections  # noqa: E402

from data_pipelines import coinrun, loader, records  # noqa: E402
from genie_jax import parallel  # noqa: E402


def measure(data_dir: str, args) -> tuple[float, float]:
  """(ms to read one record, whole pipeline batches/s) of the dataset in data_dir."""
  source, _ = records.open_split(data_dir, "coinrun", "train")
  start = time.perf_counter()
  for i in range(200):
    source[i % len(source)]
  record_ms = (time.perf_counter() - start) / 200 * 1000
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
  return record_ms, args.batches / (time.perf_counter() - start)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--episodes", type=int, default=64)
  ap.add_argument("--batches", type=int, default=100)
  ap.add_argument("--batch_size", type=int, default=16)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--compare_encodings", action="store_true")
  args = ap.parse_args()
  encodings = records.ARRAY_ENCODINGS if args.compare_encodings else ("bytes",)
  rates = {}
  with tempfile.TemporaryDirectory() as root:
    for encoding in encodings:
      data_dir = os.path.join(root, encoding)
      coinrun.build(data_dir=data_dir, episodes=args.episodes, eval_episodes=1, max_steps=200,
                    num_levels=1000, progress=False, array_encoding=encoding)
      record_ms, batches_per_s = measure(data_dir, args)
      rates[encoding] = (record_ms, batches_per_s)
      print(f"loader ({encoding!r} arrays): {batches_per_s * args.batch_size * 16:,.0f} frames/s "
            f"({batches_per_s:.1f} batches/s of {args.batch_size}x16x64x64x3 uint8, {args.threads} threads, "
            f"{jax.device_count()} device(s)); one record of up to 64 frames read in {record_ms:.2f} ms", flush=True)
  if args.compare_encodings:
    (new_ms, new_rate), (old_ms, old_rate) = rates["bytes"], rates["none"]
    print(f"raw bytes against TFDS's default encoding: a record read {old_ms / new_ms:.1f}x faster, "
          f"the pipeline {new_rate / old_rate:.2f}x")


if __name__ == "__main__":
  main()
