"""TensorBoard scalars and images (tensorboardX: no TensorFlow needed) and metrics.jsonl,
written by process 0 only.

A resumed run logs again every step after its checkpoint, which the killed run may
already have logged. So each step is kept once and the later run wins: on a start from
step s, metrics.jsonl is rewritten without its lines for steps after s (and without a
line cut short by the kill), and the new TensorBoard event file (a fresh one per run)
opens with purge_step s + 1, which TensorBoard honours by hiding the earlier files'
events from step s + 1 on.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np


def drop_steps_after(path: str, step: int) -> int:
  """Rewrites metrics.jsonl at `path` keeping only lines whose step is <= `step`; lines
  that do not parse (a write cut short by a kill) go too. Returns how many were dropped.
  Atomic: a kill during the rewrite leaves the old file or the new one."""
  if not os.path.exists(path):
    return 0
  kept, dropped, changed = [], 0, False
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
        keep = isinstance(row, dict) and int(row["step"]) <= step
      except (ValueError, KeyError, TypeError):
        keep = False
      if not keep:
        dropped += 1
      elif not line.endswith("\n"):  # complete but unterminated: the next append would join it
        kept.append(line + "\n")
        changed = True
      else:
        kept.append(line)
  if dropped or changed:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
      f.writelines(kept)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  return dropped


class MetricWriter:
  def __init__(self, workdir: str, *, start_step: int):
    """`start_step`: the step this run starts from (0, or the restored checkpoint's);
    required, because the logs after it are dropped."""
    self._writer = None
    self._jsonl = os.path.join(workdir, "metrics.jsonl")
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter
      drop_steps_after(self._jsonl, start_step)
      # the suffix makes the event file new even if a killed run started in the same second
      # (tensorboardX names files by the second and would overwrite it)
      self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1,
                                   filename_suffix=f".pid{os.getpid()}.from{start_step}")

  def scalars(self, step: int, metrics: dict) -> None:
    """To TensorBoard and as one {"step": ..., **metrics} line of metrics.jsonl."""
    if self._writer:
      for k, v in metrics.items():
        self._writer.add_scalar(k, float(v), step)
      with open(self._jsonl, "a") as f:
        f.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    """image float [H, W, 3] in [0, 1]."""
    if self._writer:
      self._writer.add_image(name, np.clip(image, 0, 1), step, dataformats="HWC")

  def close(self) -> None:
    if self._writer:
      self._writer.close()


def video_grid(rows: list[np.ndarray]) -> np.ndarray:
  """rows of frames [T, H, W, 3] -> one image [rows*H, T*W, 3]."""
  return np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
