"""Records that cannot be decoded: named by file and position, then stopped on or skipped.

A shard can be truncated by a copy that ran out of disk, a byte range can rot, and a
record can hold frames of another size than the dataset declares. Reading such a record
raises deep inside ArrayRecord or TFDS ("Corrupted Riegeli/records file: chunk data hash
mismatch ...") without saying which file or record, or, for a wrong shape, fails later
when the batch is stacked. `CheckedSource` wraps a split's random-access source, checks
every record it returns against the dataset's declared layout, and on a failure either

  - stop: raises BadRecordError naming the file, the record's position in that file and
    its index in the split (the trainer saves a checkpoint first), or
  - skip: warns once per record, counts it, and returns the next readable record of this
    process's share instead. Substituting keeps every batch full and the iterator's saved
    position meaning the same thing, so a resumed run still reproduces the same batches.
"""
from __future__ import annotations

import sys
import threading

import numpy as np

ON_BAD_RECORD = ("stop", "skip")


class BadRecordError(ValueError):
  """A record that cannot be decoded, or does not have the dataset's layout."""


class BadRecordCounter:
  """Records skipped so far by this process (each skipped read counts: a bad record
  drawn again in a later epoch counts again). Thread-safe: Grain reads in threads."""

  def __init__(self):
    self._lock = threading.Lock()
    self.skipped = 0
    self.distinct: set[int] = set()

  def add(self, index: int) -> bool:
    """Counts one skip of record `index`; True the first time that record is seen."""
    with self._lock:
      self.skipped += 1
      first = index not in self.distinct
      self.distinct.add(index)
      return first


def record_location(source, index: int) -> str:
  """'record 7 of <file> (index 7 of the split)' for TFDS ArrayRecord sources, which
  spread a split over shard files; 'record 7' for any other source."""
  inner = getattr(source, "data_source", None)  # TFDS wraps array_record's source
  try:
    reader, position = inner._reader_idx_and_position(index)  # pylint: disable=protected-access
    filename = inner._read_instructions[reader].filename  # pylint: disable=protected-access
  except (AttributeError, IndexError, TypeError, ValueError):
    return f"record {index}"
  return f"record {position} of {filename} (index {index} of the split)"


def layout_problem(record, *, height: int, width: int, min_frames: int) -> str | None:
  """What is wrong with a decoded record (see data_pipelines/records.py), or None."""
  if not isinstance(record, dict) or not {"frames", "actions", "episode_id", "start_frame"} <= set(record):
    return f"it is not a record of this layout (keys {sorted(record) if isinstance(record, dict) else type(record)})"
  frames, actions = np.asarray(record["frames"]), np.asarray(record["actions"])
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (height, width, 3):
    return f"frames are {frames.dtype} {list(frames.shape)}, expected uint8 [N, {height}, {width}, 3]"
  if frames.shape[0] < min_frames:
    return f"it has {frames.shape[0]} frames, fewer than the dataset's min_frames {min_frames}"
  if actions.shape != (frames.shape[0],) or not np.issubdtype(actions.dtype, np.integer):
    return f"actions are {actions.dtype} {list(actions.shape)}, expected int [{frames.shape[0]}]"
  return None


class CheckedSource:
  """A random-access source (len, [i]) whose records are checked; see the module doc.

  `stride`: replacements for skipped records are drawn `stride` records on (the number of
  processes, which take records i::stride), so a process stays within its own share.
  """

  def __init__(self, source, *, name: str, height: int, width: int, min_frames: int,
               on_bad_record: str = "stop", stride: int = 1, counter: BadRecordCounter | None = None):
    if on_bad_record not in ON_BAD_RECORD:
      raise ValueError(f"data.on_bad_record must be one of {ON_BAD_RECORD}, not {on_bad_record!r}")
    self._source, self._name = source, name
    self._layout = dict(height=height, width=width, min_frames=min_frames)
    self._skip = on_bad_record == "skip"
    self._stride = max(1, stride)
    self.counter = counter or BadRecordCounter()

  def __len__(self) -> int:
    return len(self._source)

  def _problem(self, index: int):
    """(record, None) or (None, what is wrong)."""
    try:
      record = self._source[index]
    except Exception as e:  # pylint: disable=broad-except  (ArrayRecord raises RuntimeError, TFDS others)
      return None, f"it cannot be decoded: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    problem = layout_problem(record, **self._layout)
    return (record, None) if problem is None else (None, problem)

  def __getitem__(self, index):
    index = int(index)
    n = len(self._source)
    for attempt in range(n):
      i = (index + attempt * self._stride) % n
      record, problem = self._problem(i)
      if problem is None:
        return record
      where = f"{self._name}: {record_location(self._source, i)}"
      if not self._skip:
        raise BadRecordError(
            f"bad record in {where}: {problem}. Rebuild or remove that file, or set "
            "--config.data.on_bad_record=skip to skip such records (they are counted in the logs).")
      if self.counter.add(i):
        print(f"warning: skipping bad record in {where}: {problem}", file=sys.stderr, flush=True)
    raise BadRecordError(f"{self._name}: no readable record found to replace record {index} "
                         f"({n} tried; the last: {problem})")

  def __repr__(self) -> str:
    return f"CheckedSource({self._name}, {len(self)} records)"
