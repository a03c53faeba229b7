"""Where a step's device time goes: a `jax.profiler.trace` read back and summed per kernel.

The benchmarks (scripts/bench_train.py --profile) trace a few steps and print the kernels
that took the most device time, so a slow step can be explained from its own run rather
than guessed at. The trace is the XSpace protobuf jax writes (`*.xplane.pb`), read with
`jax.profiler.ProfileData`; nothing beyond jax is needed.

On a GPU each kernel is an event on a "Stream #..." line of the "/device:GPU:N" plane,
with the XLA op that launched it in its `hlo_op` stat. The CPU has no device plane: its
XLA ops run as events on the host's "tf_XLA..." threads, which are summed instead, so the
same code runs (and is tested) here; the executor's own events, which enclose the ops, are
left out there so no time counts twice.
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import os

from jax.profiler import ProfileData

# Kernel families by name, checked in this order; the first whose words appear wins.
FAMILIES = (
    ("attention (cuDNN/flash)", ("flash", "fmha", "sdpa")),
    ("matmul", ("gemm", "xmma", "cutlass", "matmul", "dot", "wgmma", "cublas", "nvjet")),
    # XLA:CPU hands matmuls (and some reductions fused with them) to XNNPACK as "ynn_fusion"s
    ("XNNPACK fusion (CPU matmuls)", ("ynn_fusion",)),
    ("scatter / gather", ("scatter", "gather")),
    ("reduction", ("reduce", "argmin", "argmax", "topk", "sort")),
    ("copy / layout", ("copy", "transpose", "memcpy", "memset", "dynamic-update-slice", "dynamic_update_slice",
                       "concatenate", "pad")),
    ("elementwise fusion", ("fusion", "loop_", "input_")),
)
# CPU runtime events that enclose the XLA ops they run (counting them would count twice).
HOST_WRAPPERS = ("ThunkExecutor", "ThreadPool", "Threadpool", "end: ")


@dataclasses.dataclass(frozen=True)
class KernelTime:
  name: str
  op: str          # the XLA op that launched it, where the trace says
  total_ns: float
  count: int


def family(name: str) -> str:
  lowered = name.lower()
  for label, words in FAMILIES:
    if any(word in lowered for word in words):
      return label
  return "other"


def latest_trace(directory: str) -> str:
  """The newest *.xplane.pb under `directory` (jax.profiler.trace nests it in dated folders)."""
  paths = glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True)
  if not paths:
    raise FileNotFoundError(f"no *.xplane.pb under {directory}: was jax.profiler.trace run there?")
  return max(paths, key=os.path.getmtime)


def _stat(event, name: str) -> str:
  for key, value in event.stats:
    if key == name:
      return str(value)
  return ""


def kernel_times(path: str) -> tuple[list[KernelTime], str]:
  """(kernels by total device time, longest first; where they came from).

  GPU/TPU: events of the device planes' stream lines. CPU: events of the host's XLA
  threads. Raises ValueError naming the planes when neither is in the trace."""
  data = ProfileData.from_file(path)
  planes = list(data.planes)
  device_planes = [p for p in planes if p.name.startswith("/device:") and "CUSTOM" not in p.name]
  sums: dict[tuple[str, str], list] = collections.defaultdict(lambda: [0.0, 0])

  def add(line_filter, plane_list, skip=()):
    found = False
    for plane in plane_list:
      for line in plane.lines:
        if not line_filter(line.name):
          continue
        for event in line.events:
          if any(word in event.name for word in skip):
            continue
          found = True
          entry = sums[(event.name, _stat(event, "hlo_op"))]
          entry[0] += event.duration_ns
          entry[1] += 1
    return found

  # GPU streams are "Stream #13(...)"; TPU ops sit on "XLA Ops". Derived summary lines
  # ("XLA Modules", "Steps") would count the same time twice.
  source = "device"
  if not add(lambda name: name.startswith("Stream") or name == "XLA Ops", device_planes):
    source = "host XLA threads"
    host = [p for p in planes if p.name == "/host:CPU"]
    if not add(lambda name: name.startswith("tf_XLA"), host, skip=HOST_WRAPPERS):
      raise ValueError(f"no device kernels or host XLA ops in {path}; planes: "
                       f"{[(p.name, [l.name for l in p.lines]) for p in planes]}")
  kernels = [KernelTime(name=name, op=op, total_ns=ns, count=count) for (name, op), (ns, count) in sums.items()]
  return sorted(kernels, key=lambda k: -k.total_ns), source


def summary(path: str, *, steps: int, top: int = 15) -> str:
  """Text: device time per step, by kernel family and for the `top` kernels."""
  kernels, source = kernel_times(path)
  total = sum(k.total_ns for k in kernels)
  by_family: dict[str, float] = collections.defaultdict(float)
  for k in kernels:
    by_family[family(k.name)] += k.total_ns
  lines = [f"{total / steps / 1e6:.2f} ms of {source} time per step in {sum(k.count for k in kernels) // steps} "
           f"kernels ({os.path.basename(path)}):"]
  for label, ns in sorted(by_family.items(), key=lambda item: -item[1]):
    lines.append(f"  {label:24s} {ns / steps / 1e6:8.2f} ms/step  {ns / total:6.1%}")
  lines.append(f"  top {top} kernels:")
  for k in kernels[:top]:
    name = k.name if len(k.name) <= 70 else k.name[:67] + "..."
    lines.append(f"    {k.total_ns / steps / 1e6:8.3f} ms/step {k.total_ns / total:6.1%}  x{k.count // steps:<4d} "
                 f"{name}" + (f"  [{k.op}]" if k.op and k.op != k.name else ""))
  return "\n".join(lines)
