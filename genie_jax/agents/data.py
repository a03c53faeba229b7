"""Expert episodes for behaviour cloning: read whole, labelled by a frozen LAM, batched.

`read_episodes` puts an episode's records back together (a dataset stores it as chunks of
consecutive frames, data_pipelines/records.py). A transition t of an episode is frame t,
the action taken after it, and frame t+1; the policy reads the `context` frames up to and
including t (the first frame repeated before the episode starts). An episode of T frames
gives T-1 transitions: the last action's result is not recorded, so the LAM cannot label
it.
"""
from __future__ import annotations

from typing import NamedTuple

import grain
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipelines import bad_records, records


class Episodes(NamedTuple):
  """Every frame of a split in one array, episode by episode."""
  frames: np.ndarray   # uint8 [F, H, W, 3]
  actions: np.ndarray  # int32 [F]: the action taken after each frame (-1: unknown)
  starts: np.ndarray   # int64 [E + 1]: episode e is frames[starts[e]:starts[e + 1]]


def read_episodes(data_dir: str, name: str, split: str, *, max_episodes: int | None = None) -> Episodes:
  """A split's episodes, whole, in episode order (records checked as the loader checks them)."""
  source, metadata = records.open_split(data_dir, name, split)
  height, width = metadata["resolution"]
  checked = bad_records.CheckedSource(source, name=f"dataset {name!r} split {split!r}", height=height,
                                      width=width, min_frames=metadata["min_frames"], on_bad_record="stop")
  pieces: dict[int, list] = {}
  for record in grain.MapDataset.source(checked):
    pieces.setdefault(int(record["episode_id"]), []).append(
        (int(record["start_frame"]), np.asarray(record["frames"]), np.asarray(record["actions"])))
  ids = sorted(pieces)[:max_episodes]
  if not ids:
    raise ValueError(f"dataset {name!r} split {split!r} in {data_dir!r} holds no episodes")
  frames, actions, starts = [], [], [0]
  for episode_id in ids:
    length = max(start + len(f) for start, f, _ in pieces[episode_id])
    ep_frames = np.zeros((length, height, width, 3), np.uint8)
    ep_actions = np.full((length,), records.UNKNOWN_ACTION, np.int32)
    covered = np.zeros(length, bool)
    for start, f, a in pieces[episode_id]:  # tail chunks overlap their neighbour: same frames
      ep_frames[start:start + len(f)] = f
      ep_actions[start:start + len(a)] = a
      covered[start:start + len(f)] = True
    if not covered.all():
      raise ValueError(f"episode {episode_id} of {name!r} split {split!r} is missing frames "
                       f"{np.flatnonzero(~covered)[:5].tolist()}...")
    frames.append(ep_frames)
    actions.append(ep_actions)
    starts.append(starts[-1] + length)
  return Episodes(np.concatenate(frames), np.concatenate(actions), np.asarray(starts, np.int64))


def window_starts(episodes: Episodes, window: int) -> np.ndarray:
  """int64 [N]: every index (into episodes.frames) at which `window` frames fit inside one
  episode, in order."""
  return np.concatenate([np.arange(a, b - window + 1, dtype=np.int64)
                         for a, b in zip(episodes.starts[:-1], episodes.starts[1:]) if b - a >= window])


def transition_frames(episodes: Episodes) -> np.ndarray:
  """int64 [N]: the index (into episodes.frames) of frame t of every transition, in order."""
  return window_starts(episodes, 2)


def context_indices(episodes: Episodes, frame_index: np.ndarray, context: int) -> np.ndarray:
  """int64 [N, context]: the frames a policy reads at each of `frame_index` [N], oldest
  first; before its episode's first frame, that frame repeats."""
  episode = np.searchsorted(episodes.starts, frame_index, side="right") - 1
  offsets = np.arange(-context + 1, 1)
  return np.maximum(frame_index[:, None] + offsets[None, :], episodes.starts[episode][:, None])


def real_actions(episodes: Episodes, frame_index: np.ndarray) -> np.ndarray:
  actions = episodes.actions[frame_index]
  if np.any(actions < 0):
    raise ValueError("these episodes have no real actions (a video without actions?): the oracle and "
                     "the mapping need them")
  return actions


# one compiled function for every call: a jit made inside latent_actions compiled anew each
# time (scripts/coinrun_lam_curve.py labels the held-out split after every report)
_infer_actions = nnx.jit(lambda model, frames: model.infer_actions(frames))


def latent_actions(lam, episodes: Episodes, *, window: int, batch_size: int = 16) -> np.ndarray:
  """The frozen LAM's code for every transition, int32 [N] in transition_frames order.

  Each episode is read in windows of `window` frames (the LAM's training clip length),
  each window's first frame the last frame of the one before, so every transition is
  labelled once and with as much past as the LAM was trained with; the last window ends
  at the episode's end and labels only the transitions not yet labelled."""
  clips, keep = [], []  # keep: (clip index, first transition of the clip to use, count)
  for a, b in zip(episodes.starts[:-1], episodes.starts[1:]):
    length = int(b - a)
    if length < window:
      raise ValueError(f"an episode of {length} frames is shorter than the LAM's window {window}")
    start = 0
    while start < length - 1:
      clip_start = min(start, length - window)
      clips.append(a + clip_start)
      keep.append((start - clip_start, min(length - 1, clip_start + window - 1) - start))
      start = clip_start + window - 1
  labels = []
  for i in range(0, len(clips), batch_size):
    starts = np.asarray(clips[i:i + batch_size])
    pad = batch_size - len(starts)  # one compiled shape: the last batch is padded
    starts = np.concatenate([starts, np.repeat(starts[-1:], pad)])
    frames = episodes.frames[starts[:, None] + np.arange(window)[None, :]]
    codes = np.asarray(_infer_actions(lam, jnp.asarray(frames)))[:len(starts) - pad]
    labels.extend(codes[j, first:first + count] for j, (first, count) in enumerate(keep[i:i + batch_size]))
  out = np.concatenate(labels).astype(np.int32)
  expected = int(np.sum(np.diff(episodes.starts) - 1))
  if out.shape != (expected,):
    raise AssertionError(f"labelled {out.shape[0]} transitions, expected {expected}")
  return out


def batches(episodes: Episodes, frame_index: np.ndarray, labels: np.ndarray, *, context: int,
            batch_size: int, seed: int):
  """An endless, shuffled Grain stream of (frames uint8 [B, context, H, W, 3], labels int32 [B])."""
  if len(frame_index) != len(labels):
    raise ValueError(f"{len(frame_index)} transitions but {len(labels)} labels")
  contexts = context_indices(episodes, frame_index, context)
  ds = (grain.MapDataset.range(len(labels)).seed(seed).shuffle().repeat(None)
        .map(lambda i: (episodes.frames[contexts[i]], labels[i])).batch(batch_size, drop_remainder=True))
  return iter(ds)

