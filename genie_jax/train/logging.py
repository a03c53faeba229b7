"""TensorBoard scalars and images (tensorboardX: no TensorFlow needed) and metrics.jsonl,
written by process 0 only."""
from __future__ import annotations

import json
import os

import jax
import numpy as np


class MetricWriter:
  def __init__(self, workdir: str):
    self._writer = None
    self._jsonl = os.path.join(workdir, "metrics.jsonl")
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter
      self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

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
