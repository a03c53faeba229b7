"""Model FLOPs of a training step, counted from the shapes, and MFU against a device's peak.

Dense matmuls cost 2 FLOPs per parameter per token; attention adds its scores and values
(spatial over the S tokens of a frame, temporal over the T frames at a position). A
training step is 3x the forward (forward + backward), with no remat recomputation: these
are *model* FLOPs, what MFU divides by. Used by genie_jax.aot (TPU slices) and
scripts/bench_train.py (each model alone).
"""
from __future__ import annotations

from genie_jax.models import patching

# dense peak TFLOP/s by compute dtype (public specifications, SXM parts); float32 matmuls
# run as TF32 on these GPUs under XLA's default precision
GPU_PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.4, "float32": 494.7},
    "H100": {"bfloat16": 989.4, "float32": 494.7},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
}


def transformer_flops(*, params: int, tokens: int, blocks: int, width: int, batch: int,
                      frames: int) -> float:
  """Forward FLOPs of an ST-transformer model: matmuls + spatial + temporal attention."""
  matmul = 2.0 * params * batch * frames * tokens
  spatial = 4.0 * tokens ** 2 * width * batch * frames * blocks
  temporal = 4.0 * frames ** 2 * width * batch * tokens * blocks
  return matmul + spatial + temporal


def _shape(config):
  return dict(batch=config.train.batch_size, frames=config.data.window)


def tokenizer_forward(config, params: int, *, encoder_only: bool = False) -> float:
  t, d = config.tokenizer, config.data
  h, w = patching.token_grid(d.height, d.width, t.patch)
  blocks = t.enc_blocks if encoder_only else t.enc_blocks + t.dec_blocks
  width = t.enc_dim if encoder_only else max(t.enc_dim, t.dec_dim)
  return transformer_flops(params=params, tokens=h * w, blocks=blocks, width=width, **_shape(config))


def lam_forward(config, params: int) -> float:
  """The encoder sees T frames of S patches + the action slot; the decoder reconstructs
  T-1 frames of S patches. Parameters split between them in proportion to their blocks."""
  l, d = config.lam, config.data
  h, w = patching.token_grid(d.height, d.width, l.patch)
  shape = _shape(config)
  enc_params = params * l.enc_blocks / (l.enc_blocks + l.dec_blocks)
  return (transformer_flops(params=enc_params, tokens=h * w + 1, blocks=l.enc_blocks, width=l.dim, **shape)
          + transformer_flops(params=params - enc_params, tokens=h * w, blocks=l.dec_blocks, width=l.dim,
                              **dict(shape, frames=shape["frames"] - 1)))


def dynamics_forward(config, params: int) -> float:
  dyn, d = config.dynamics, config.data
  h, w = patching.token_grid(d.height, d.width, config.tokenizer.patch)
  extra = 1 if dyn.action_conditioning == "token" else 0
  width = dyn.num_heads * (dyn.head_dim or dyn.dim // dyn.num_heads)
  return transformer_flops(params=params, tokens=h * w + extra, blocks=dyn.num_blocks, width=width,
                           **_shape(config))


def step_flops(config, param_counts: dict) -> float:
  """Model FLOPs of one training step of the config's phase. Phase 2 trains the LAM and the
  dynamics model (3x forward) and runs the frozen tokenizer's encoder forward only."""
  if config.phase == "tokenizer":
    return 3 * tokenizer_forward(config, param_counts["tokenizer"])
  return (3 * dynamics_forward(config, param_counts["dynamics"])
          + 3 * lam_forward(config, param_counts["lam"])
          + tokenizer_forward(config, param_counts["tokenizer_encoder"], encoder_only=True))


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """Dense peak FLOP/s of a known GPU (by its jax device_kind), else None."""
  for name, peaks in GPU_PEAK_TFLOPS.items():
    if name in device_kind:
      return peaks[dtype] * 1e12
  return None
