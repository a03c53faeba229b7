"""Config -> model. The only place a ConfigDict meets a module constructor."""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from genie_jax.models import attention as attention_lib, patching
from genie_jax.models.dynamics import DynamicsModel
from genie_jax.models.lam import LatentActionModel
from genie_jax.models.tokenizer import VideoTokenizer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(config):
  if config.dtype not in DTYPES:
    raise ValueError(f"config.dtype must be one of {sorted(DTYPES)}, got {config.dtype!r}")
  return DTYPES[config.dtype]


def attention(config) -> str:
  """config.attention (auto | xla | cudnn | pallas_tpu). Workdirs written before the field
  existed ran XLA's path, which "auto" still picks on CPU and never changes the maths of."""
  return attention_lib.check_implementation(config.get("attention", "auto"))


def make_tokenizer(config, rngs: nnx.Rngs) -> VideoTokenizer:
  t = config.tokenizer
  return VideoTokenizer(
      height=config.data.height, width=config.data.width, patch=t.patch,
      max_frames=config.data.window, enc_dim=t.enc_dim, enc_layers=t.enc_blocks,
      enc_heads=t.enc_heads, dec_dim=t.dec_dim, dec_layers=t.dec_blocks, dec_heads=t.dec_heads,
      num_codes=t.num_codes, latent_dim=t.latent_dim, quantizer=t.get("quantizer", "vq"),
      fsq_levels=tuple(t.get("fsq_levels", ())), rngs=rngs, dtype=compute_dtype(config),
      remat=config.remat, scan_layers=config.scan_layers, attention=attention(config),
      encoder=t.get("encoder", "video"), out_hidden=t.get("out_hidden", 0),
      refine_channels=t.get("refine_channels", 0))


def make_lam(config, rngs: nnx.Rngs) -> LatentActionModel:
  l = config.lam
  return LatentActionModel(
      height=config.data.height, width=config.data.width, patch=l.patch,
      max_frames=config.data.window, dim=l.dim, enc_layers=l.enc_blocks, dec_layers=l.dec_blocks,
      num_heads=l.num_heads, num_actions=l.num_actions, latent_dim=l.latent_dim,
      # .get: workdirs written before these switches existed used the paper's choices
      quantizer=l.get("quantizer", "vq"), predict_delta=l.get("predict_delta", False),
      encoder_input=l.get("encoder_input", "frames"), encoder_context=l.get("encoder_context", "clip"),
      encoder_shift=l.get("encoder_shift", False), decoder_scroll=l.get("decoder_scroll", "none"),
      usage_weight=l.get("usage_weight", 0.01), rngs=rngs,
      dtype=compute_dtype(config), remat=config.remat,
      scan_layers=config.scan_layers, attention=attention(config))


def make_dynamics(config, rngs: nnx.Rngs) -> DynamicsModel:
  d = config.dynamics
  h, w = patching.token_grid(config.data.height, config.data.width, config.tokenizer.patch)
  return DynamicsModel(
      num_codes=config.tokenizer.num_codes, tokens_per_frame=h * w, max_frames=config.data.window,
      dim=d.dim, num_layers=d.num_blocks, num_heads=d.num_heads, head_dim=d.head_dim, num_actions=config.lam.num_actions,
      action_conditioning=d.action_conditioning, rngs=rngs, dtype=compute_dtype(config),
      remat=config.remat, scan_layers=config.scan_layers, attention=attention(config),
      token_head=d.get("token_head", "joint"), previous_frame=d.get("previous_frame", False),
      code_levels=tuple(config.tokenizer.fsq_levels) if config.tokenizer.quantizer == "fsq" else ())


class LatentWorldModel(nnx.Module):
  """What phase 2 trains: the LAM and the dynamics model (the tokenizer stays frozen outside)."""

  def __init__(self, config, rngs: nnx.Rngs):
    self.lam = make_lam(config, rngs)
    self.dynamics = make_dynamics(config, rngs)


def make_trainable(config, rngs: nnx.Rngs):
  """The module the config's phase trains."""
  if config.phase == "tokenizer":
    return make_tokenizer(config, rngs)
  if config.phase == "lam_dynamics":
    return LatentWorldModel(config, rngs)
  raise ValueError(f"config.phase must be 'tokenizer' or 'lam_dynamics', got {config.phase!r}")
