"""Video tokenizer: ST-ViViT VQ-VAE (Genie, Sec. 2.1). Frames -> discrete tokens z_t -> frames.

patchify -> linear -> + positions -> ST encoder (causal in time, so z_t depends on
frames <= t only) -> linear to the latent -> VQ (K codes) -> linear -> + positions ->
ST decoder -> linear -> unpatchify. Pixels are float in [0, 1]. Optionally (`out_hidden`)
a gelu layer before the last linear, and (`refine_channels`) per-pixel features that two
3x3 convolutions turn into a correction of each pixel's colour after unpatchify.

`encoder` (config tokenizer.encoder): "video" (the paper) attends across time in the
encoder too, so z_t depends on the frames before t; "frame" encodes each frame alone, at
time position 0, so a frame's tokens are a function of that frame only, whatever its
history. On the sprite world the video encoder's tokens of frames 1+ changed in 10.6% of
places when the same frame was encoded alone (as many as the tokens a move changes),
which the dynamics model must then predict from the history as well; the decoder stays
an ST-transformer either way (README, "A world that obeys its actions"). "patch" encodes
each patch alone and without its position, so a token is a function of its own 8x8 pixels:
a patch that does not change keeps its token whatever moves elsewhere in the frame, and
the same content has the same token anywhere.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from genie_jax.models import patching
from genie_jax.models.layers import Conv, Dense, PositionalEmbedding
from genie_jax.models.quantizer import make_quantizer
from genie_jax.models.st_transformer import STTransformer

ENCODERS = ("video", "frame", "patch")


class TokenizerOutput(NamedTuple):
  reconstruction: jax.Array  # float [B, T, H, W, 3]
  tokens: jax.Array          # int32 [B, T, h, w]
  vq_loss: jax.Array
  latents: jax.Array         # [B, T, S, C] normalised encoder outputs


class VideoTokenizer(nnx.Module):
  def __init__(self, *, height: int, width: int, patch: int, max_frames: int, enc_dim: int,
               enc_layers: int, enc_heads: int, dec_dim: int, dec_layers: int, dec_heads: int,
               num_codes: int, latent_dim: int, rngs: nnx.Rngs, quantizer: str = "vq",
               fsq_levels: tuple[int, ...] = (), dtype=jnp.float32,
               param_dtype=jnp.float32, remat: str = "none", scan_layers: bool = True,
               attention: str = "auto", encoder: str = "video", out_hidden: int = 0,
               refine_channels: int = 0):
    if encoder not in ENCODERS:
      raise ValueError(f"tokenizer encoder must be one of {ENCODERS}, got {encoder!r}")
    self.encoder_kind = encoder
    self.height, self.width, self.patch = height, width, patch
    self.grid = patching.token_grid(height, width, patch)
    tokens = self.grid[0] * self.grid[1]
    pixels = patch * patch * 3
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    self.patch_in = Dense(pixels, enc_dim, names=("patch", "embed"), dtype=dtype, **kw)
    self.enc_pos = PositionalEmbedding(max_frames, tokens, enc_dim, **kw)
    self.encoder = STTransformer(dim=enc_dim, num_layers=enc_layers, num_heads=enc_heads,
                                 dtype=dtype, remat=remat, scan_layers=scan_layers, attention=attention, **kw)
    self.quantizer = make_quantizer(kind=quantizer, num_codes=num_codes, latent_dim=latent_dim,
                                    fsq_levels=fsq_levels, **kw)
    latent_dim = self.quantizer.code_dim
    self.to_latent = Dense(enc_dim, latent_dim, names=("embed", "latent"), dtype=dtype, **kw)
    self.from_latent = Dense(latent_dim, dec_dim, names=("latent", "embed"), dtype=dtype, **kw)
    self.dec_pos = PositionalEmbedding(max_frames, tokens, dec_dim, **kw)
    self.decoder = STTransformer(dim=dec_dim, num_layers=dec_layers, num_heads=dec_heads,
                                 dtype=dtype, remat=remat, scan_layers=scan_layers, attention=attention, **kw)
    # out_hidden > 0: each token's pixels come from a gelu layer of that width, not from the
    # decoder's last activations directly (README, "A world that obeys its actions")
    self.patch_hidden = (Dense(dec_dim, out_hidden, names=("embed", "mlp"), dtype=dtype, **kw)
                         if out_hidden else None)
    # refine_channels > 0: each pixel also gets that many features, and two 3x3 convolutions
    # over the whole frame correct its colour from its neighbours' (the refinement starts at
    # zero, so training starts from the plain decoder)
    self.refine_channels = refine_channels
    self.patch_out = Dense(out_hidden or dec_dim, patch * patch * (3 + refine_channels),
                           names=("mlp" if out_hidden else "embed", "patch"), dtype=dtype, **kw)
    if refine_channels:
      self.refine_in = Conv(3 + refine_channels, refine_channels, dtype=dtype, **kw)
      self.refine_out = Conv(refine_channels, 3, zero_init=True, dtype=dtype, **kw)
    self.dtype = dtype

  @property
  def num_codes(self) -> int:
    return self.quantizer.num_codes

  def _check(self, video: jax.Array) -> None:
    if video.ndim != 5 or video.shape[2:] != (self.height, self.width, 3):
      raise ValueError(f"tokenizer expects video [B, T, {self.height}, {self.width}, 3], "
                       f"got shape {video.shape}")

  def _encode(self, video: jax.Array):
    self._check(video)
    x = self.patch_in(patching.patchify(patching.to_unit_float(video), self.patch))  # [B, T, S, D]
    b, t, s, d = x.shape
    if self.encoder_kind == "patch":  # every patch its own clip of one token, with no position
      z = self.encoder(x.reshape(b * t * s, 1, 1, d))
    elif self.encoder_kind == "frame":  # every frame its own clip of one frame
      z = self.encoder(self.enc_pos(x.reshape(b * t, 1, s, d)))
    else:
      z = self.encoder(self.enc_pos(x))
    return self.quantizer(self.to_latent(z.reshape(x.shape)))

  def _decode_latents(self, latents: jax.Array) -> jax.Array:
    x = self.decoder(self.dec_pos(self.from_latent(latents)))
    if self.patch_hidden is not None:
      x = jax.nn.gelu(self.patch_hidden(x))
    pixels = self.patch_out(x).astype(jnp.float32)
    frames = patching.unpatchify(pixels, patch=self.patch, height=self.height, width=self.width,
                                 channels=3 + self.refine_channels)
    if not self.refine_channels:
      return frames
    flat = frames.reshape(-1, *frames.shape[2:])  # [B*T, H, W, 3 + F]
    delta = self.refine_out(jax.nn.gelu(self.refine_in(flat))).astype(jnp.float32)
    return frames[..., :3] + delta.reshape(*frames.shape[:4], 3)

  def __call__(self, video: jax.Array) -> TokenizerOutput:
    """video uint8 or float [B, T, H, W, 3] -> reconstruction, tokens, VQ loss."""
    q = self._encode(video)
    b, t = q.indices.shape[:2]
    return TokenizerOutput(self._decode_latents(q.quantized), q.indices.reshape(b, t, *self.grid),
                           q.loss, q.normalized)

  def encode(self, video: jax.Array) -> jax.Array:
    """video [B, T, H, W, 3] -> tokens int32 [B, T, h, w]."""
    q = self._encode(video)
    return q.indices.reshape(*q.indices.shape[:2], *self.grid)

  def decode(self, tokens: jax.Array) -> jax.Array:
    """tokens int [B, T, h, w] -> video float32 [B, T, H, W, 3] (clipped to [0, 1])."""
    b, t = tokens.shape[:2]
    latents = self.quantizer.lookup(tokens.reshape(b, t, -1)).astype(self.dtype)
    return jnp.clip(self._decode_latents(latents), 0.0, 1.0)
