"""Latent action model on pixels (Genie, Sec. 2.1).

Encoder: patches of x_1..x_T plus one learned "action slot" token per frame, through a
causal ST-transformer; the slot's output at frame t+1 has seen x_<=t+1, and is
quantized into the latent action a_t (A codes) of the transition x_t -> x_t+1.
Decoder: patches of x_1..x_T-1 with a_t added to every token of frame t, through a
causal ST-transformer; its output at frame t reconstructs x_t+1. So a_t is the only
path by which the decoder learns anything about x_t+1.

`predict_delta` (on in experiments/sprites.py; the paper predicts pixels): the decoder's
output is added to x_t, from a zero-initialised output layer, so it predicts the change
x_t+1 - x_t and starts at "copy x_t". Predicting pixels, the decoder's first solution is
to copy x_t, which explains almost all of the loss when little moves (97% of a sprite
world's pixels); predicting the change, copying is free and the loss is all motion.

`encoder_context`: "clip" (the paper: a_t's slot attends to every frame <= t+1) or
"transition" (a_t is read from the two frames x_t, x_t+1 alone, so earlier motion, which
says nothing about a_t when actions are independent, is not there to be ignored).
`encoder_input` (what the encoder reads; the paper: "frames"): "change" gives it x_t+1 -
x_t instead of x_t+1 (frame 0: zeros) and subtracts the latent of a clip in which nothing
changes, "frames_and_change" gives it both. Reading whole frames, the action latents of
a fresh model are almost the same vector for every clip (mean pairwise cosine 0.92 on
sprite clips): the slot's own embedding, the time position and the background carry
them, and the VQ sends every clip to one code. Reading the change, measured from
standing still, the cosine is 0.07 and what differs between latents is the motion
(README, "A world that obeys its actions").

`encoder_shift` (on in experiments/sprites.py; not in the paper): in training the encoder
reads the clip circularly shifted by a random (rows, columns) offset, one per clip, while
the decoder still predicts the clip as it is. Without it the latent is free to say
*where* the change happened (the sprite's new place, or its offset within a patch); the
decoder, which sees x_t, reads the move off that just as well, and 5 codes of "where"
follow the true actions hardly at all. A 2-d continuous latent measured on the sprite
world (README) lies on two rings, one for horizontal and one for vertical moves, with
the direction spread around each ring by position. Shifted at random, where the change
happened says nothing about the clip the decoder predicts; only what happened does.
Inference (`infer_actions`) reads the clip unshifted.

`decoder_scroll` (not in the paper; off by default): the decoder is also told how far the
whole view moved (models/view_shift.py, phase correlation, no gradient), added to every
token of frame t like the action: "previous", the move from x_t-1 to x_t (the past only,
what momentum carries on); "current", the move from x_t to x_t+1 itself. In CoinRun the
camera follows the player, and a LAM's 6 codes followed the view's vertical scroll (NMI
0.067) more than the actions (0.019), so told the scroll, they might not spend themselves
on it. Measured, they did (README, "CPU reference run"): neither setting moved their NMI
with the actions, and with "current" they followed the vertical scroll more (0.085): a
2-number input added to every token does not let a small decoder move the picture. "warp"
moves it for the decoder: it reads x_t shifted by the move x_t -> x_t+1 (view_shift.shift_frames;
with predict_delta its change is added to that shifted frame), and is told the move as with
"current", since the player, whom the camera keeps at the centre, has moved with the picture.
Measured (README, "CPU reference run"): no gain either; the codes still follow the vertical
scroll (NMI 0.072) and not the keys (0.015).

`soft=True` in training (`lam.soft_weight` > 0 in the config; on in experiments/sprites.py,
not in the paper): the decoder runs twice, once on the quantized action (as the paper) and
once on the quantizer's continuous counterpart of it (`latents`: the categorical's
probabilities, the VQ's normalised encoder output, FSQ's value before rounding), and both
predictions are trained. Through the hard code alone the encoder learns only which code to
pick, by a straight-through guess, and moves settle on a code they share (a move on the
code of "stay", two codes for one move); through the continuous one it learns as an
autoencoder does, and the measured codes follow the actions (README).

`null=True` in training (`lam.null_weight` > 0; not in the paper, off by default): the
decoder also predicts x_t+1 with no action (an all-zero code), and that error joins the
loss, so the same decoder must learn what the frames before x_t+1 predict on their own
(in CoinRun, the view carried on by the player's speed) and the codes are left what the
past does not say. Measured on CoinRun (README, "CPU reference run"): no gain.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from genie_jax.models import patching, view_shift
from genie_jax.models.layers import Dense, PositionalEmbedding, param
from genie_jax.models.quantizer import make_quantizer
from genie_jax.models.st_transformer import STTransformer


ENCODER_INPUTS = ("frames", "frames_and_change", "change")
ENCODER_CONTEXTS = ("clip", "transition")
DECODER_SCROLLS = ("none", "previous", "current", "warp")


class LAMOutput(NamedTuple):
  prediction: jax.Array  # float [B, T-1, H, W, 3]: predicted x_2..x_T
  actions: jax.Array     # int32 [B, T-1]: a_t for transitions x_t -> x_t+1
  vq_loss: jax.Array
  latents: jax.Array     # [B, T-1, C] normalised pre-quantization actions
  soft_prediction: jax.Array | None = None  # x_2..x_T predicted from `latents` (soft=True)
  null_prediction: jax.Array | None = None  # x_2..x_T predicted with no action (null=True)


def random_shift(video: jax.Array, rng: jax.Array) -> jax.Array:
  """video [B, T, H, W, C] -> each clip rolled (circularly) by its own random (rows,
  columns) offset, the same for all its frames."""
  offsets = jax.random.randint(rng, (video.shape[0], 2), 0, jnp.array(video.shape[2:4]))
  return jax.vmap(lambda clip, o: jnp.roll(clip, (o[0], o[1]), axis=(1, 2)))(video, offsets)


class LatentActionModel(nnx.Module):
  def __init__(self, *, height: int, width: int, patch: int, max_frames: int, dim: int,
               enc_layers: int, dec_layers: int, num_heads: int, num_actions: int,
               latent_dim: int, rngs: nnx.Rngs, quantizer: str = "vq", predict_delta: bool = False,
               encoder_input: str = "frames", encoder_context: str = "clip",
               dtype=jnp.float32, param_dtype=jnp.float32, remat: str = "none",
               scan_layers: bool = True, attention: str = "auto", encoder_shift: bool = False,
               decoder_scroll: str = "none", usage_weight: float = 0.01):
    self.encoder_shift = encoder_shift
    if decoder_scroll not in DECODER_SCROLLS:
      raise ValueError(f"unknown LAM decoder_scroll {decoder_scroll!r}; choose from {DECODER_SCROLLS}")
    self.decoder_scroll = decoder_scroll
    self.height, self.width, self.patch = height, width, patch
    grid = patching.token_grid(height, width, patch)
    tokens = grid[0] * grid[1]
    pixels = patch * patch * 3
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    if encoder_input not in ENCODER_INPUTS:
      raise ValueError(f"unknown LAM encoder_input {encoder_input!r}; choose from {ENCODER_INPUTS}")
    self.encoder_input = encoder_input
    if encoder_context not in ENCODER_CONTEXTS:
      raise ValueError(f"unknown LAM encoder_context {encoder_context!r}; choose from {ENCODER_CONTEXTS}")
    self.encoder_context = encoder_context
    enc_in = 2 * pixels if encoder_input == "frames_and_change" else pixels
    self.enc_patch = Dense(enc_in, dim, names=("patch", "embed"), dtype=dtype, **kw)
    self.action_slot = param(rngs, nnx.initializers.normal(0.02), (dim,), ("embed",), param_dtype)
    self.enc_pos = PositionalEmbedding(max_frames, tokens + 1, dim, **kw)
    self.encoder = STTransformer(dim=dim, num_layers=enc_layers, num_heads=num_heads, dtype=dtype,
                                 remat=remat, scan_layers=scan_layers, attention=attention, **kw)
    # FSQ: one channel of A levels (an ordered scale of A actions)
    self.quantizer = make_quantizer(kind=quantizer, num_codes=num_actions, latent_dim=latent_dim,
                                    fsq_levels=(num_actions,), usage_weight=usage_weight, **kw)
    latent_dim = self.quantizer.code_dim
    self.to_latent = Dense(dim, latent_dim, names=("embed", "latent"), dtype=dtype, **kw)
    self.action_in = Dense(latent_dim, dim, names=("latent", "embed"), dtype=dtype, **kw)
    # (rows, columns) of the view's move; from zero, so the decoder starts as without it
    self.scroll_in = (Dense(2, dim, names=(None, "embed"), dtype=dtype, zero_init=True, **kw)
                      if decoder_scroll != "none" else None)
    self.dec_patch = Dense(pixels, dim, names=("patch", "embed"), dtype=dtype, **kw)
    self.dec_pos = PositionalEmbedding(max_frames, tokens, dim, **kw)
    self.decoder = STTransformer(dim=dim, num_layers=dec_layers, num_heads=num_heads, dtype=dtype,
                                 remat=remat, scan_layers=scan_layers, attention=attention, **kw)
    # predicting the change, a zero output layer starts the decoder at "copy x_t"
    self.patch_out = Dense(dim, pixels, names=("embed", "patch"), dtype=dtype, zero_init=predict_delta, **kw)
    self.predict_delta = predict_delta
    self.dtype = dtype

  @property
  def num_actions(self) -> int:
    return self.quantizer.num_codes

  def _patches(self, video: jax.Array) -> jax.Array:
    if video.ndim != 5 or video.shape[2:] != (self.height, self.width, 3) or video.shape[1] < 2:
      raise ValueError(f"LAM expects video [B, T>=2, {self.height}, {self.width}, 3], got {video.shape}")
    return patching.patchify(patching.to_unit_float(video), self.patch)

  def _encode(self, patches: jax.Array):
    if self.encoder_context == "transition":  # each a_t from the 2-frame clip (x_t, x_t+1) alone
      b, t = patches.shape[:2]
      pairs = jnp.stack([patches[:, :-1], patches[:, 1:]], axis=2)  # [B, T-1, 2, S, P]
      q = self._encode_clip(pairs.reshape(b * (t - 1), 2, *patches.shape[2:]))
      return jax.tree.map(lambda a: a if a.ndim == 0 else a.reshape(b, t - 1, *a.shape[2:]), q)
    return self._encode_clip(patches)

  def _encode_clip(self, patches: jax.Array):
    """patches [B, T, S, P] -> the quantizer's output for a_0..a_T-2 ([B, T-1, ...])."""
    if self.encoder_input != "frames":  # frame t's change since frame t-1 (none for frame 0)
      change = jnp.concatenate([jnp.zeros_like(patches[:, :1]), patches[:, 1:] - patches[:, :-1]], axis=1)
      patches = change if self.encoder_input == "change" else jnp.concatenate([patches, change], axis=-1)
    latent = self._slot_latents(patches)
    if self.encoder_input == "change":
      # measured from standing still: the latent of a clip in which nothing changes (the same
      # for every clip) is subtracted, so what the slot's embedding, the time positions and
      # the biases put into every latent cancels, and "no change" is exactly 0
      latent = latent - self._slot_latents(jnp.zeros_like(patches[:1]))
    return self.quantizer(latent)

  def _slot_latents(self, patches: jax.Array) -> jax.Array:
    """patches [B, T, S, P] -> pre-quantization latents [B, T-1, C] of the slot at frames 1.."""
    b, t = patches.shape[:2]
    x = self.enc_patch(patches)
    slot = jnp.broadcast_to(self.action_slot[...].astype(x.dtype), (b, t, 1, x.shape[-1]))
    x = self.encoder(self.enc_pos(jnp.concatenate([x, slot], axis=2)))
    # slot output at frame t+1 (sees x_<=t+1) -> a_t
    return self.to_latent(x[:, 1:, -1])

  def scroll(self, video: jax.Array) -> jax.Array | None:
    """video [B, T, H, W, 3] -> float32 [B, T-1, 2]: what `decoder_scroll` tells the decoder
    for each transition (None when off)."""
    if self.decoder_scroll == "none":
      return None
    moves = jax.lax.stop_gradient(view_shift.frame_shift(video[:, :-1], video[:, 1:]))  # x_t -> x_t+1
    if self.decoder_scroll == "previous":  # x_t-1 -> x_t; none before the clip's first frame
      moves = jnp.concatenate([jnp.zeros_like(moves[:, :1]), moves[:, :-1]], axis=1)
    return moves

  def decode(self, patches: jax.Array, codes: jax.Array, scroll: jax.Array | None = None) -> jax.Array:
    """patches of x_1..x_T [B, T, S, P], actions [B, T-1, C] (and, with `decoder_scroll`, the
    view's moves [B, T-1, 2], `scroll`) -> predicted x_2..x_T [B, T-1, H, W, 3]."""
    if self.decoder_scroll == "warp" and scroll is not None:  # x_t moved as the view moves to x_t+1
      frames = patching.unpatchify(patches[:, :-1], patch=self.patch, height=self.height, width=self.width)
      moved = patching.patchify(view_shift.shift_frames(frames, scroll), self.patch)
      patches = jnp.concatenate([moved, patches[:, -1:]], axis=1)
    x = self.dec_pos(self.dec_patch(patches[:, :-1]))
    x = x + self.action_in(codes.astype(self.dtype))[:, :, None, :]
    if self.scroll_in is not None:
      if scroll is None:
        raise ValueError(f"this LAM's decoder reads the view's scroll (decoder_scroll={self.decoder_scroll!r}): "
                         "pass scroll=lam.scroll(video)")
      x = x + self.scroll_in(scroll)[:, :, None, :]
    pixels = self.patch_out(self.decoder(x)).astype(jnp.float32)
    if self.predict_delta:
      pixels = pixels + patches[:, :-1]
    return patching.unpatchify(pixels, patch=self.patch, height=self.height, width=self.width)

  def __call__(self, video: jax.Array, *, shift_rng: jax.Array | None = None, soft: bool = False,
               null: bool = False) -> LAMOutput:
    """video [B, T, H, W, 3] -> predictions of x_2..x_T from x_<=t and a_t. With
    `encoder_shift`, `shift_rng` draws the encoder's random shifts (training); without
    one the encoder reads the clip as it is. `soft` also decodes the continuous latents;
    `null` also decodes with no action (an all-zero code: `lam.null_weight`)."""
    patches = self._patches(video)
    if self.encoder_shift and shift_rng is not None:
      q = self._encode(self._patches(random_shift(video, shift_rng)))
    else:
      q = self._encode(patches)
    scroll = self.scroll(video)
    soft_prediction = self.decode(patches, q.normalized, scroll) if soft else None
    null_prediction = self.decode(patches, jnp.zeros_like(q.quantized), scroll) if null else None
    return LAMOutput(self.decode(patches, q.quantized, scroll), q.indices, q.loss, q.normalized, soft_prediction,
                     null_prediction)

  def predict_with(self, video: jax.Array, actions: jax.Array) -> jax.Array:
    """video [B, T, H, W, 3], actions int [B, T-1] -> predicted x_2..x_T with the decoder fed
    the code of each given action instead of the encoder's: the oracle control, which says
    what the true actions are worth to the LAM's objective (scripts/coinrun_lam_curve.py)."""
    if actions.shape != (video.shape[0], video.shape[1] - 1):
      raise ValueError(f"predict_with expects actions [B, T-1] = {(video.shape[0], video.shape[1] - 1)} for "
                       f"video {video.shape}, got {actions.shape}")
    return self.decode(self._patches(video), self.quantizer.lookup(actions), self.scroll(video))

  def infer_actions(self, video: jax.Array) -> jax.Array:
    """video [B, T, H, W, 3] -> int32 [B, T-1]: a_t for each transition x_t -> x_t+1."""
    return self._encode(self._patches(video)).indices
