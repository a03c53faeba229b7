"""Writing generated frames to GIF or MP4 (imageio; MP4 through imageio-ffmpeg)."""
from __future__ import annotations

import os

import numpy as np

FORMATS = (".gif", ".mp4")


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
  """Nearest-neighbour upscaling of uint8 [..., H, W, 3] (64x64 frames are tiny on screen)."""
  if scale <= 1:
    return frames
  return np.repeat(np.repeat(frames, scale, axis=-3), scale, axis=-2)


def check_video_path(path: str) -> str:
  """The path's suffix if it is a format we write; else a ValueError naming the path."""
  suffix = os.path.splitext(path)[1].lower()
  if suffix not in FORMATS:
    raise ValueError(f"cannot write {path!r}: choose a {' or '.join(FORMATS)} file name")
  return suffix


def write_video(path: str, frames: np.ndarray, *, fps: float = 10.0, scale: int = 1) -> str:
  """uint8 [N, H, W, 3] -> a .gif or .mp4 at `path` (folders created). Returns the path."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
    raise ValueError(f"expected uint8 frames [N, H, W, 3] with N >= 1, got {frames.dtype} {frames.shape}")
  suffix = check_video_path(path)
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  frames = upscale(frames, scale)
  if suffix == ".gif":
    iio.imwrite(path, frames, duration=1000.0 / fps, loop=0)
  else:  # H.264 wants even sides
    frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
    iio.imwrite(path, frames, fps=fps, codec="libx264")
  return path

