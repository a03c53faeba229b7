r"""Your own videos -> the shared record layout (no actions: stored as -1).

    python -m data_pipelines.video_folder --src my_videos --data_dir data --resolution 64x64

Reads .mp4 .webm .mov .avi .mkv .gif (through imageio/ffmpeg) and .npy arrays
(uint8 [N, H, W, 3]). Frames are resized (area-averaged, Pillow) to --resolution
(WIDTHxHEIGHT, e.g. 160x90 for the paper's Platformers) and, with --fps, resampled in
time. A file that cannot be decoded is reported by name and skipped, or, with
--on_error=stop, the run stops before anything is written.
Each video is one episode; the first --validation_fraction of the decodable videos (at
least one when there are several) go to `validation`, the rest to `train`.
"""
from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags
from PIL import Image

from data_pipelines import builders, records

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".gif", ".npy")


class VideoDecodeError(RuntimeError):
  """A video file could not be turned into frames; the message names the file."""


def parse_resolution(text: str) -> tuple[int, int]:
  """'160x90' (width x height) -> (height, width) = (90, 160)."""
  try:
    width, height = (int(v) for v in text.lower().split("x"))
  except ValueError as e:
    raise ValueError(f"--resolution must look like WIDTHxHEIGHT (e.g. 64x64), got {text!r}") from e
  if width <= 0 or height <= 0:
    raise ValueError(f"--resolution must be positive, got {text!r}")
  return height, width


def _read_frames(path: str) -> tuple[np.ndarray, float | None]:
  """Decodes a file to uint8 [N, H, W, 3] and its frame rate (None if unknown)."""
  if path.endswith(".npy"):
    frames = np.load(path, allow_pickle=False)
    fps = None
  else:
    import imageio.v3 as iio
    frames = np.asarray(iio.imread(path, index=None))
    try:
      meta = iio.immeta(path)
      fps = meta.get("fps") or (1000.0 / meta["duration"] if meta.get("duration") else None)
    except Exception:  # metadata is optional; the frames are what matter
      fps = None
  if frames.ndim == 3:  # single image or grayscale video
    frames = frames[None] if frames.shape[-1] in (3, 4) else frames[..., None]
  if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4) or frames.shape[0] == 0:
    raise ValueError(f"decoded array has shape {frames.shape}, expected [N, H, W, 1|3|4]")
  if frames.shape[-1] == 1:
    frames = np.repeat(frames, 3, axis=-1)
  return frames[..., :3].astype(np.uint8), fps


def load_video(path: str, *, resolution: tuple[int, int], fps: float | None = None) -> np.ndarray:
  """Reads, time-resamples and resizes one video to uint8 [N, height, width, 3].

  Raises VideoDecodeError naming the file when it cannot be decoded.
  """
  try:
    frames, source_fps = _read_frames(path)
  except Exception as e:
    raise VideoDecodeError(f"cannot decode video {path}: {type(e).__name__}: {e}") from e
  if fps and source_fps and abs(source_fps - fps) > 1e-3:
    times = np.arange(0, frames.shape[0] / source_fps, 1.0 / fps)
    frames = frames[np.minimum((times * source_fps).astype(int), frames.shape[0] - 1)]
  height, width = resolution
  if frames.shape[1:3] != (height, width):
    frames = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BOX))
                       for f in frames])
  return frames


def list_videos(src: str) -> list[str]:
  if not os.path.isdir(src):
    raise FileNotFoundError(f"--src {src!r} is not a folder")
  paths = sorted(os.path.join(root, name) for root, _, names in os.walk(src) for name in names
                 if name.lower().endswith(VIDEO_EXTENSIONS))
  if not paths:
    raise FileNotFoundError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) under {src!r}")
  return paths


def build(*, src: str, data_dir: str, resolution: tuple[int, int], fps: float | None = None,
          on_error: str = "skip", validation_fraction: float = 0.1, chunk_size: int = 64,
          min_frames: int = 16, log=print):
  """Writes the dataset; returns (summaries per split, list of (path, error) skipped)."""
  if on_error not in ("skip", "stop"):
    raise ValueError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
  paths = list_videos(src)
  num_val = int(round(len(paths) * validation_fraction))
  if len(paths) > 1:
    num_val = min(max(num_val, 1), len(paths) - 1)
  failures: list[tuple[str, str]] = []
  # One queue feeds both splits: validation (written first) takes the first `num_val`
  # videos that decode, training the rest, so a corrupt file never empties a split.
  queue = iter(paths)

  def decoded():
    for path in queue:
      try:
        frames = load_video(path, resolution=resolution, fps=fps)
      except VideoDecodeError as e:
        if on_error == "stop":
          raise
        failures.append((path, str(e)))
        log(f"skipped: {e}")
        continue
      yield records.Episode(frames=frames,
                            actions=np.full(frames.shape[0], records.UNKNOWN_ACTION, np.int32))

  def validation():
    for count, episode in enumerate(decoded(), start=1):
      yield episode
      if count == num_val:
        return

  split_episodes = {"validation": validation} if num_val else {}
  split_episodes["train"] = decoded
  summaries = records.write_dataset(
      builders.VideoFolder, data_dir=data_dir, resolution=resolution, chunk_size=chunk_size,
      min_frames=min_frames,
      split_episodes=split_episodes,
      extra_metadata={"num_actions": 0, "has_actions": False, "source": os.path.abspath(src),
                      "fps": fps})
  return summaries, failures


def main(argv):
  del argv
  f = flags.FLAGS
  try:
    summaries, failures = build(
        src=f.src, data_dir=f.data_dir, resolution=parse_resolution(f.resolution), fps=f.fps,
        on_error=f.on_error, validation_fraction=f.validation_fraction, chunk_size=f.chunk_size,
        min_frames=f.min_frames)
  except (VideoDecodeError, FileNotFoundError, FileExistsError, ValueError) as e:
    sys.exit(f"error: {e}\nnothing was written.")
  videos = sum(s.episodes_written for s in summaries.values())
  frames = sum(s.frames for s in summaries.values())
  short = sum(s.episodes_dropped_short for s in summaries.values())
  print(f"wrote {videos} videos, {frames} frames "
        f"({', '.join(f'{k}: {v.episodes_written}' for k, v in summaries.items())}); "
        f"{short} shorter than {f.min_frames} frames dropped; {len(failures)} undecodable skipped"
        + "".join(f"\n  {path}" for path, _ in failures))


if __name__ == "__main__":
  flags.DEFINE_string("src", None, "Folder of videos (searched recursively).", required=True)
  flags.DEFINE_string("data_dir", None, "Where the TFDS dataset is written.", required=True)
  flags.DEFINE_string("resolution", "64x64", "WIDTHxHEIGHT, e.g. 64x64 or 160x90.")
  flags.DEFINE_float("fps", None, "Resample videos to this frame rate (default: keep every frame).")
  flags.DEFINE_enum("on_error", "skip", ["skip", "stop"], "Undecodable file: skip it, or stop.")
  flags.DEFINE_float("validation_fraction", 0.1, "Share of videos held out for validation.")
  flags.DEFINE_integer("chunk_size", 64, "Most frames per record.")
  flags.DEFINE_integer("min_frames", 16, "Fewest frames per record; shorter videos are dropped.")
  app.run(main)
