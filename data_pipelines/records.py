"""The one record layout every dataset shares, and the TFDS builder that writes it.

A record is a chunk of consecutive frames from ONE episode (so a window drawn inside
a record can never cross an episode boundary):

  frames       uint8 [N, H, W, 3]
  actions      int32 [N]   actions[i] is the action taken AFTER frames[i], i.e. the
                           cause of frames[i] -> frames[i+1]; -1 where unknown
                           (videos without actions).
  episode_id   int64       unique within the split
  start_frame  int32       index of frames[0] inside its episode

Episodes are cut into chunks of at most `chunk_size` frames; a short tail chunk is
moved back so it still holds `min_frames` frames (overlapping its neighbour), and
episodes shorter than `min_frames` are dropped and counted. `min_frames` is stored in
the dataset metadata so the loader can refuse a window that does not fit.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from typing import Callable, Iterable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging

from data_pipelines import tfds_spill

UNKNOWN_ACTION = -1
ARRAY_ENCODINGS = ("bytes", "none")  # how frames and actions are serialised (EpisodeChunkBuilder)


@dataclasses.dataclass(frozen=True)
class Episode:
  """One episode: frames uint8 [N, H, W, 3], actions int32 [N] (see module doc)."""
  frames: np.ndarray
  actions: np.ndarray


@dataclasses.dataclass
class WriteSummary:
  episodes_written: int = 0
  episodes_dropped_short: int = 0
  records: int = 0
  frames: int = 0


def chunk_starts(num_frames: int, chunk_size: int, min_frames: int) -> list[int]:
  """Start indices of the chunks an episode of `num_frames` frames is cut into.

  Every chunk is frames[start : min(start + chunk_size, num_frames)] and holds at least
  `min_frames` frames; returns [] when the episode itself is shorter than `min_frames`.
  """
  if min_frames > chunk_size:
    raise ValueError(f"min_frames ({min_frames}) must be <= chunk_size ({chunk_size})")
  if num_frames < min_frames:
    return []
  starts = list(range(0, num_frames, chunk_size))
  if num_frames - starts[-1] < min_frames:
    starts[-1] = num_frames - min_frames  # overlap the previous chunk rather than drop frames
  return starts


class EpisodeChunkBuilder(tfds.core.GeneratorBasedBuilder):
  """Writes `Episode`s from a callable as chunk records. Subclassed once per dataset name."""

  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, split_episodes: dict[str, Callable[[], Iterable[Episode]]] | None = None,
               resolution: tuple[int, int] = (64, 64), chunk_size: int = 64, min_frames: int = 16,
               extra_metadata: dict | None = None, array_encoding: str = "bytes", **kwargs):
    # These are only needed when writing; reading goes through `open_split`.
    self._split_episodes = split_episodes or {}
    self._resolution = tuple(resolution)
    self._chunk_size = chunk_size
    self._min_frames = min_frames
    self._extra_metadata = dict(extra_metadata or {})
    if array_encoding not in ARRAY_ENCODINGS:
      raise ValueError(f"array_encoding must be one of {ARRAY_ENCODINGS}, got {array_encoding!r}")
    self._array_encoding = array_encoding
    self.summaries: dict[str, WriteSummary] = {}
    super().__init__(file_format="array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    height, width = self._resolution
    metadata = tfds.core.MetadataDict(
        resolution=[height, width], chunk_size=self._chunk_size, min_frames=self._min_frames,
        **self._extra_metadata)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            # raw bytes ("bytes"): a record reads 20x faster than under TFDS's default
            # encoding ("none"), which the loader paid on every window it drew
            # (scripts/bench_loader.py --compare_encodings; README, "Data"). A dataset keeps
            # the encoding it was written with: TFDS reads it from its features.json.
            "frames": tfds.features.Tensor(shape=(None, height, width, 3), dtype=np.uint8,
                                           encoding=self._array_encoding),
            "actions": tfds.features.Tensor(shape=(None,), dtype=np.int32, encoding=self._array_encoding),
            "episode_id": tfds.features.Scalar(dtype=np.int64),
            "start_frame": tfds.features.Scalar(dtype=np.int32),
        }),
        metadata=metadata,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {name: self._generate_examples(name) for name in self._split_episodes}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict]]:
    summary = self.summaries.setdefault(split, WriteSummary())
    height, width = self._resolution
    for episode_id, episode in enumerate(self._split_episodes[split]()):
      frames = np.asarray(episode.frames, dtype=np.uint8)
      actions = np.asarray(episode.actions, dtype=np.int32)
      if frames.ndim != 4 or frames.shape[1:] != (height, width, 3):
        raise ValueError(f"episode {episode_id} of split {split!r}: frames have shape "
                         f"{frames.shape}, expected [N, {height}, {width}, 3]")
      if actions.shape != (frames.shape[0],):
        raise ValueError(f"episode {episode_id} of split {split!r}: actions have shape "
                         f"{actions.shape}, expected [{frames.shape[0]}]")
      starts = chunk_starts(frames.shape[0], self._chunk_size, self._min_frames)
      if not starts:
        summary.episodes_dropped_short += 1
        continue
      summary.episodes_written += 1
      summary.frames += frames.shape[0]
      for start in starts:
        stop = min(start + self._chunk_size, frames.shape[0])
        summary.records += 1
        yield f"{episode_id}_{start}", {
            "frames": frames[start:stop], "actions": actions[start:stop],
            "episode_id": episode_id, "start_frame": start,
        }


def write_dataset(builder_cls: type[EpisodeChunkBuilder], *, data_dir: str,
                  split_episodes: dict[str, Callable[[], Iterable[Episode]]],
                  **builder_kwargs) -> dict[str, WriteSummary]:
  """Builds one dataset version under data_dir/<name>/<version>; returns per-split summaries.

  TFDS writes into a temporary folder and renames it when every split is complete, so
  an error part-way (a corrupt video, Ctrl-C) leaves no half-written dataset behind.
  """
  builder = builder_cls(split_episodes=split_episodes, data_dir=data_dir, **builder_kwargs)
  if builder.data_path.exists():
    raise FileExistsError(
        f"{builder.data_path} already holds a prepared dataset; choose another --data_dir "
        "or delete it first (nothing was overwritten)")
  with tfds_spill.spill_without_tensorflow(), _quiet_tfds():  # splits over 1 GB spill to disk
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(verify_ssl=False))
  return builder.summaries


@contextlib.contextmanager
def _quiet_tfds():
  """TFDS's own chatter ("Downloading and preparing dataset Unknown size...", absl INFO
  lines, its split progress bar) says nothing true about a generated dataset: the
  commands print their own progress and summary instead."""
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.WARNING)
  tfds.disable_progress_bar()
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    tfds.enable_progress_bar()
    absl_logging.set_verbosity(verbosity)


def dataset_dir(data_dir: str, name: str) -> str:
  """The newest prepared version folder of dataset `name` under `data_dir`."""
  root = os.path.join(data_dir, name)
  if not os.path.isdir(root):
    raise FileNotFoundError(f"no dataset {name!r} under {data_dir!r} (expected folder {root}); "
                            f"build it with `python -m data_pipelines.{name} --data_dir {data_dir}`")
  versions = sorted((v for v in os.listdir(root)
                     if os.path.isfile(os.path.join(root, v, "dataset_info.json"))),
                    key=lambda v: tuple(int(p) for p in v.split(".")))
  if not versions:
    raise FileNotFoundError(f"dataset folder {root} holds no complete version "
                            "(was its build interrupted?)")
  return os.path.join(root, versions[-1])


def open_split(data_dir: str, name: str, split: str):
  """Returns (random-access data source, metadata dict) for one split of a prepared dataset."""
  builder = tfds.builder_from_directory(dataset_dir(data_dir, name))
  if split not in builder.info.splits:
    raise ValueError(f"dataset {name!r} has no split {split!r}; it has {sorted(builder.info.splits)}")
  return builder.as_data_source(split=split), dict(builder.info.metadata)
