"""The Grain input pipeline: random T-frame windows -> global, mesh-sharded batches.

  records (one episode chunk each) --process shard--> shuffle (per epoch) --> repeat
    --> random window inside the record --> batch --> jax.make_array_from_process_local_data

A window never crosses an episode because it is drawn inside one record, and a record
never spans two episodes. Processes take disjoint records (`ds[i::n]`) before shuffling,
so two processes never see the same window in the same step. Frames stay uint8 until
they are on the device. Everything is seeded: the same seed gives the same batches, and
`get_state` / `set_state` resume exactly (the trainer stores that state with Orbax).
Every record is checked as it is read (data_pipelines/bad_records.py): a bad one stops
the run naming its file, or is skipped and counted when `data.on_bad_record="skip"`.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import grain
import jax
import numpy as np
from jax.sharding import Mesh

from data_pipelines import bad_records, records
from genie_jax import parallel


@dataclasses.dataclass(frozen=True)
class WindowSampler:
  """Draws `window` frames, `stride` apart, at a random offset inside one record."""
  window: int
  stride: int = 1

  @property
  def span(self) -> int:
    return (self.window - 1) * self.stride + 1

  def __call__(self, record: dict, rng: np.random.Generator) -> dict:
    num_frames = record["frames"].shape[0]
    if num_frames < self.span:
      raise ValueError(f"record of episode {record['episode_id']} has {num_frames} frames, "
                       f"fewer than the window span {self.span}")
    offset = int(rng.integers(0, num_frames - self.span + 1))
    idx = slice(offset, offset + self.span, self.stride)
    return {"frames": record["frames"][idx], "actions": record["actions"][idx],
            "episode_id": np.int64(record["episode_id"]),
            "start_frame": np.int32(record["start_frame"] + offset)}


def host_dataset(*, data_dir: str, name: str, split: str, local_batch_size: int, window: int,
                 stride: int = 1, seed: int = 0, process_index: int = 0, process_count: int = 1,
                 shuffle: bool = True, num_epochs: int | None = None, on_bad_record: str = "stop",
                 bad_record_counter: bad_records.BadRecordCounter | None = None,
                 ) -> tuple[grain.MapDataset, dict]:
  """This process's batches of numpy windows: one window per record per epoch, for
  `num_epochs` epochs (None: forever, for training; 1: each record once, for evaluation).
  A record that cannot be decoded stops iteration with BadRecordError naming its file, or
  with on_bad_record="skip" is replaced and counted in `bad_record_counter`."""
  source, metadata = records.open_split(data_dir, name, split)
  height, width = metadata["resolution"]
  source = bad_records.CheckedSource(
      source, name=f"dataset {name!r} split {split!r}", height=height, width=width,
      min_frames=metadata["min_frames"], on_bad_record=on_bad_record, stride=process_count,
      counter=bad_record_counter)
  sampler = WindowSampler(window=window, stride=stride)
  if sampler.span > metadata["min_frames"]:
    raise ValueError(
        f"window {window} with stride {stride} spans {sampler.span} frames, but dataset "
        f"{name!r} guarantees only {metadata['min_frames']} per record; rebuild it with "
        f"--min_frames {sampler.span} or shorten the window")
  if len(source) < process_count:
    raise ValueError(f"split {split!r} has {len(source)} records, fewer than {process_count} processes")
  ds = grain.MapDataset.source(source).seed(seed)[process_index::process_count]
  if shuffle:
    ds = ds.shuffle()
  ds = ds.repeat(num_epochs).random_map(sampler)
  return ds.batch(local_batch_size, drop_remainder=True), metadata


class DeviceIterator:
  """Iterates global batches {'frames': uint8 [B,T,H,W,3], 'actions': int32 [B,T], ...}.

  `actions[:, t]` is the action taken after `frames[:, t]` (see data_pipelines/records.py).
  """

  def __init__(self, dataset: grain.MapDataset, mesh: Mesh, rules, metadata: dict,
               num_threads: int = 2, prefetch: int = 4,
               bad_record_counter: bad_records.BadRecordCounter | None = None):
    self.metadata = metadata
    self.bad_record_counter = bad_record_counter or bad_records.BadRecordCounter()
    self._mesh, self._rules = mesh, rules
    self.grain_iterator = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)).__iter__()

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    local = next(self.grain_iterator)
    return {k: jax.make_array_from_process_local_data(
        parallel.batch_sharding(self._mesh, self._rules, np.ndim(v)), np.asarray(v))
        for k, v in local.items()}

  def get_state(self):
    return self.grain_iterator.get_state()

  def set_state(self, state) -> None:
    self.grain_iterator.set_state(state)


def make_iterator(data_config, *, mesh: Mesh, rules, global_batch_size: int, seed: int,
                  split: str | None = None, shuffle: bool = True,
                  num_epochs: int | None = None) -> DeviceIterator:
  """The training iterator from a config's `data` block (name, data_dir, window, stride, split)."""
  divisor = parallel.batch_axis_size(mesh, rules)
  if global_batch_size % divisor:
    raise ValueError(f"global batch {global_batch_size} does not divide over the "
                     f"{divisor}-way batch sharding of mesh {dict(mesh.shape)}")
  if global_batch_size % jax.process_count():
    raise ValueError(f"global batch {global_batch_size} does not divide over "
                     f"{jax.process_count()} processes")
  counter = bad_records.BadRecordCounter()
  dataset, metadata = host_dataset(
      data_dir=data_config.data_dir, name=data_config.name, split=split or data_config.split,
      local_batch_size=global_batch_size // jax.process_count(), window=data_config.window,
      stride=data_config.stride, seed=seed, process_index=jax.process_index(),
      process_count=jax.process_count(), shuffle=shuffle, num_epochs=num_epochs,
      # configs written before the switch existed have no field: they stopped, as "stop" does
      on_bad_record=data_config.get("on_bad_record", "stop"), bad_record_counter=counter)
  return DeviceIterator(dataset, mesh, rules, metadata, num_threads=data_config.get("num_threads", 2),
                        bad_record_counter=counter)
