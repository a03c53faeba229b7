"""What the benchmarks (scripts/bench_train.py, scripts/bench_sampler.py) measure besides
time: the compute rate against the device's peak (MFU) and peak memory.

Peak memory comes from the device's allocator where it keeps one (GPUs and TPUs:
memory_stats()["peak_bytes_in_use"], the process's high-water mark so far), else from
the compiled program's own memory analysis (arguments + outputs - aliased + temporaries:
what XLA plans to allocate for one call; the CPU allocator keeps no statistics).
"""
from __future__ import annotations

import statistics
import time

import jax

from genie_jax import flops

GIB = 1024 ** 3


def compiled_bytes(compiled) -> int | None:
  """Bytes one call of a compiled program allocates, by XLA's memory analysis."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  return (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
          + m.temp_size_in_bytes)


def peak_memory(compiled, device=None) -> str:
  """'peak X GiB (source)': the device allocator's high-water mark where it has one, with
  the compiled program's own figure beside it."""
  device = device or jax.devices()[0]
  planned = compiled_bytes(compiled)
  planned_text = f"compiled step {planned / GIB:.2f} GiB" if planned is not None else "no memory analysis"
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and "peak_bytes_in_use" in stats:
    return f"device peak {stats['peak_bytes_in_use'] / GIB:.2f} GiB so far in this process ({planned_text})"
  return planned_text


def rate_text(flop_count: float, seconds: float, dtype: str, device=None) -> str:
  """'X TFLOP/s, MFU Y% of <device>' (MFU only where the device's peak is known)."""
  device = device or jax.devices()[0]
  rate = flop_count / seconds
  peak = flops.peak_flops(device.device_kind, dtype)
  text = f"{rate / 1e12:.3f} TFLOP/s"
  return text + (f", MFU {rate / peak:.1%} of {device.device_kind} {dtype} peak" if peak else "")


def median_seconds(run, steps: int) -> float:
  """Median seconds of `run()` over `steps` calls after two warm-up calls, each call waited
  for on its own (a warm-up that returned while still executing would bill the first
  timed call)."""
  jax.block_until_ready(run())
  jax.block_until_ready(run())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(run())
    times.append(time.perf_counter() - start)
  return statistics.median(times)
