"""Prompt frames from whatever a user has: an image or video file, or an array of any size.

Everything becomes uint8 [B, P, H, W, 3] at the model's resolution. A frame of another
size is resized (bilinear, with a warning, since the model only saw its own size).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")


def read_prompt_file(path: str) -> np.ndarray:
  """An image (one frame) or a video/GIF (all its frames) -> uint8 [P, H, W, 3]."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"prompt {path!r} does not exist")
  try:
    if path.lower().endswith(VIDEO_SUFFIXES):
      import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
      frames = np.asarray(iio.imread(path, index=None))
      if frames.ndim == 3:  # a one-frame GIF
        frames = frames[None]
    else:
      with Image.open(path) as image:
        frames = np.asarray(image.convert("RGB"))[None]
  except Exception as e:  # PIL, imageio and ffmpeg each raise their own types
    raise ValueError(f"cannot read prompt {path!r} as an image or video: {e}") from e
  return _to_rgb_uint8(frames, what=path)


def _to_rgb_uint8(frames: np.ndarray, *, what: str) -> np.ndarray:
  """[..., H, W] or [..., H, W, 1|3|4], uint8 or float in [0, 1] -> uint8 [..., H, W, 3]."""
  frames = np.asarray(frames)
  if frames.dtype != np.uint8:
    if not np.issubdtype(frames.dtype, np.floating):
      raise ValueError(f"prompt {what} has dtype {frames.dtype}; give uint8 or float in [0, 1]")
    frames = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
  if frames.shape[-1] not in (1, 3, 4):  # no channel axis: grayscale
    frames = frames[..., None]
  if frames.shape[-1] == 1:
    frames = np.repeat(frames, 3, axis=-1)
  return frames[..., :3]


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 [..., h, w, 3] -> uint8 [..., height, width, 3], bilinear."""
  lead = frames.shape[:-3]
  flat = frames.reshape(-1, *frames.shape[-3:])
  out = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR)) for f in flat])
  return out.reshape(*lead, height, width, 3)


def prepare_prompt(prompt, *, height: int, width: int) -> np.ndarray:
  """A path, or an array [H, W, C], [P, H, W, C] or [B, P, H, W, C] -> uint8 [B, P, H, W, 3]."""
  if isinstance(prompt, (str, os.PathLike)):
    frames = read_prompt_file(os.fspath(prompt))
    what = repr(os.fspath(prompt))
  else:
    frames = np.asarray(prompt)
    what = f"array {frames.shape}"
    if frames.ndim < 2 or frames.size == 0:
      raise ValueError(f"prompt {what} is not an image: give [H, W, 3], [P, H, W, 3] or [B, P, H, W, 3]")
    has_channels = frames.shape[-1] in (1, 3, 4) and frames.ndim >= 3
    if frames.ndim - (1 if has_channels else 0) > 4:
      raise ValueError(f"prompt {what} has too many axes: give [H, W, 3], [P, H, W, 3] or [B, P, H, W, 3]")
    frames = _to_rgb_uint8(frames, what=what)
  while frames.ndim < 5:
    frames = frames[None]
  if frames.shape[2:4] != (height, width):
    warnings.warn(f"prompt {what} is {frames.shape[3]}x{frames.shape[2]} (WxH); resizing to the "
                  f"model's {width}x{height}", stacklevel=2)
    frames = resize_frames(frames, height, width)
  return frames
