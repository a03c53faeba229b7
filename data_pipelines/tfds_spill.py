"""Lets TFDS write splits larger than its 1 GB in-memory shuffle buffer without TensorFlow.

TFDS's shuffler (tensorflow_datasets/core/shuffle.py) keeps a split in memory up to
MAX_MEM_BUFFER_SIZE and then spills it to temporary bucket files through `tf.io.gfile`,
which fails with "No module named 'tensorflow'" on a TensorFlow-free install (CoinRun
at 400 episodes x 200 frames is already past 1 GB). The shuffler only needs
gfile.GFile/exists/remove and errors.ResourceExhaustedError, so while a dataset is written we give it
those through plain local files. With TensorFlow installed nothing is changed.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import types


class _ResourceExhaustedError(OSError):
  """Stands in for tf.errors.ResourceExhaustedError, which the shuffler catches."""

  message = ""


def _local_gfile_module() -> types.SimpleNamespace:
  gfile = types.SimpleNamespace(GFile=open, exists=os.path.exists, remove=os.remove)
  return types.SimpleNamespace(io=types.SimpleNamespace(gfile=gfile),
                               errors=types.SimpleNamespace(ResourceExhaustedError=_ResourceExhaustedError))


@contextlib.contextmanager
def spill_without_tensorflow():
  """Context in which TFDS's shuffle buffer spills to local files without TensorFlow."""
  if importlib.util.find_spec("tensorflow") is not None:
    yield
    return
  from tensorflow_datasets.core import shuffle  # pylint: disable=g-import-not-at-top
  original = shuffle.tf
  shuffle.tf = _local_gfile_module()
  try:
    yield
  finally:
    shuffle.tf = original
