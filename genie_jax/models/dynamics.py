"""MaskGIT dynamics model (Genie, Sec. 2.1): a decoder-only ST-transformer over tokens.

ACTION ALIGNMENT (the one place it is decided): a_t is the latent action of the
transition x_t -> x_t+1 (LAM output index t, 0-based). The dynamics model predicts
z_t+1 from z_<=t and a_<=t, so the token frame at position t+1 is fed a_t, and
position 0 gets a learned "no action" id A. `frame_actions` builds that [B, T] array
from the [B, T-1] transition actions; nothing else shifts actions.

Token head (config `token_head`):
  "joint":      one softmax over all K codes (the paper);
  "fsq_digits": for an FSQ tokenizer, one softmax per FSQ channel over its levels; a
                code's log-probability is the sum of its digits'. Codes that share digits
                share what is learned, so a near miss is partly right: with a joint softmax
                over 1,000 FSQ codes the model never learned to predict the tokens a move
                changes, even given the true action (README, "A world that obeys its
                actions"). `_logits` returns the joint log-probabilities [.., K] either
                way, so the sampler does not know which head ran; training asks for
                `joint=False`, the per-channel logits [.., sum(levels)], and takes the
                cross-entropy channel by channel (losses.masked_token_loss): the same sum,
                without the [.., K] tensor (README, "A world that obeys its actions").

Previous frame (config `previous_frame`, off in the paper): each token also gets an
embedding of the token at its own position in the frame before (frame 0: the mask row).
With spatial-then-temporal blocks, a fully masked target frame's first spatial attention
otherwise mixes nothing but mask tokens; with it, that layer already sees the frame the
action moves (README, "A world that obeys its actions"). `step` then needs the previous
frame's tokens, which the sampler always has.

Conditioning (config `action_conditioning`):
  "additive": the action embedding is added to every token of its frame (the paper);
  "token":    it is appended as one extra token per frame, S+1 tokens attended
              spatially (Jasmine's finding: more faithful rollouts).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie_jax.models import fsq
from genie_jax.models.layers import Dense, Embed, PositionalEmbedding
from genie_jax.models.st_transformer import KVCache, STTransformer

ACTION_CONDITIONING = ("additive", "token")
TOKEN_HEADS = ("joint", "fsq_digits")


def code_digits(levels) -> np.ndarray:
  """int [K, d]: the FSQ digits of every code index, as genie_jax/models/fsq.py numbers them."""
  return fsq.digits(np.arange(int(np.prod(levels))), levels)


def split_channels(logits: jax.Array, levels) -> list[jax.Array]:
  """The fsq_digits head's logits [..., sum(levels)] -> one [..., L_i] per FSQ channel."""
  return jnp.split(logits, np.cumsum(levels)[:-1], axis=-1)


def frame_actions(transition_actions: jax.Array, num_actions: int) -> jax.Array:
  """int [B, T-1] actions a_t (x_t -> x_t+1) -> int [B, T] action fed to each token frame.

  Frame 0 gets the "no action" id `num_actions`; frame t+1 gets a_t.
  """
  start = jnp.full(transition_actions.shape[:1] + (1,), num_actions, transition_actions.dtype)
  return jnp.concatenate([start, transition_actions], axis=1)


class DynamicsModel(nnx.Module):
  def __init__(self, *, num_codes: int, tokens_per_frame: int, max_frames: int, dim: int,
               num_layers: int, num_heads: int, head_dim: int = 0, num_actions: int, action_conditioning: str,
               rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32, remat: str = "none",
               scan_layers: bool = True, attention: str = "auto", token_head: str = "joint",
               code_levels=(), previous_frame: bool = False):
    if token_head not in TOKEN_HEADS:
      raise ValueError(f"token_head must be one of {TOKEN_HEADS}, got {token_head!r}")
    if token_head == "fsq_digits" and int(np.prod(code_levels or (0,))) != num_codes:
      raise ValueError(f"token_head 'fsq_digits' needs the FSQ tokenizer's levels (product {num_codes}), "
                       f"got {tuple(code_levels)}: use it with tokenizer.quantizer='fsq'")
    if action_conditioning not in ACTION_CONDITIONING:
      raise ValueError(f"action_conditioning must be one of {ACTION_CONDITIONING}, "
                       f"got {action_conditioning!r}")
    self.num_codes, self.num_actions = num_codes, num_actions
    self.mask_id = num_codes  # the learned mask token
    self.tokens_per_frame = tokens_per_frame
    self.action_conditioning = action_conditioning
    extra = 1 if action_conditioning == "token" else 0
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    self.token_head = token_head
    self.code_levels = tuple(int(l) for l in code_levels) if token_head == "fsq_digits" else ()
    # joint: one row per code + the mask token; fsq_digits: one row per level of each FSQ
    # channel + the mask token, a code's embedding the sum of its digits'. The rows rarely
    # divide a tensor axis, so they stay whole
    rows = (sum(self.code_levels) if self.code_levels else num_codes) + 1
    self.token_embed = Embed(rows, dim, names=(None, "embed"), **kw)
    self.action_embed = Embed(num_actions + 1, dim, names=(None, "embed"), **kw)
    self.previous_frame = previous_frame
    if previous_frame:  # its own table, laid out as token_embed's
      self.previous_embed = Embed(rows, dim, names=(None, "embed"), **kw)
    self.pos = PositionalEmbedding(max_frames, tokens_per_frame + extra, dim, **kw)
    self.transformer = STTransformer(dim=dim, num_layers=num_layers, num_heads=num_heads,
                                     head_dim=head_dim, dtype=dtype, remat=remat,
                                     scan_layers=scan_layers, attention=attention, **kw)
    self.head = Dense(dim, sum(self.code_levels) if self.code_levels else num_codes,
                      names=("embed", "vocab"), dtype=dtype, **kw)
    self.dtype = dtype

  def _embed(self, tokens: jax.Array, actions: jax.Array, time_offset, previous: jax.Array | None = None) -> jax.Array:
    """tokens int [B, T, S] (mask id allowed), actions int [B, T] (frame-aligned); previous
    int [B, T, S]: the tokens of the frame before each (used with `previous_frame`; None:
    the clip's own, shifted, which is right wherever frame 0 of `tokens` is the clip's first)."""
    if tokens.ndim != 3 or tokens.shape[2] != self.tokens_per_frame:
      raise ValueError(f"dynamics expects tokens [B, T, {self.tokens_per_frame}], got {tokens.shape}")
    if actions.shape != tokens.shape[:2]:
      raise ValueError(f"actions {actions.shape} must be frame-aligned with tokens {tokens.shape[:2]}")
    x = self._embed_tokens(tokens, self.token_embed)
    if self.previous_frame:
      previous = self.shifted(tokens) if previous is None else previous
      if previous.shape != tokens.shape:
        raise ValueError(f"previous-frame tokens {previous.shape} must match tokens {tokens.shape}")
      x = x + self._embed_tokens(previous, self.previous_embed)
    act = self.action_embed(actions, self.dtype)[:, :, None, :]
    x = x + act if self.action_conditioning == "additive" else jnp.concatenate([x, act], axis=2)
    return self.pos(x, time_offset=time_offset)

  def shifted(self, tokens: jax.Array) -> jax.Array:
    """tokens int [B, T, S] -> the frame before each [B, T, S]; frame 0 gets mask ids."""
    return jnp.concatenate([jnp.full_like(tokens[:, :1], self.mask_id), tokens[:, :-1]], axis=1)

  def _embed_tokens(self, tokens: jax.Array, table: Embed) -> jax.Array:
    """tokens int [B, T, S] (mask id allowed) -> [B, T, S, D] through `table`."""
    if not self.code_levels:
      return table(tokens, self.dtype)
    offsets = np.concatenate([[0], np.cumsum(self.code_levels)[:-1]])
    rows = jnp.take(code_digits(self.code_levels) + offsets, jnp.minimum(tokens, self.num_codes - 1), axis=0)
    codes = jnp.sum(table(rows, self.dtype), axis=-2)  # [B, T, S, d, D] -> [B, T, S, D]
    mask_row = table(jnp.full(tokens.shape, sum(self.code_levels), jnp.int32), self.dtype)
    return jnp.where((tokens == self.mask_id)[..., None], mask_row, codes)

  def _logits(self, x: jax.Array, joint: bool = True) -> jax.Array:
    """x [B, T, S', D] -> float32 [B, T, S, K]: logits, or with the fsq_digits head the joint
    log-probabilities sum_i log p_i(digit_i(k)) (already normalised); with `joint=False`
    the fsq_digits head's per-channel logits [B, T, S, sum(levels)] instead."""
    out = self.head(x[:, :, :self.tokens_per_frame]).astype(jnp.float32)
    if not self.code_levels or not joint:
      return out
    digits = code_digits(self.code_levels)  # [K, d], a compile-time constant
    per_channel = split_channels(out, self.code_levels)
    return sum(jnp.take(jax.nn.log_softmax(logits, axis=-1), digits[:, i], axis=-1)
               for i, logits in enumerate(per_channel))

  def __call__(self, tokens: jax.Array, actions: jax.Array, *, joint: bool = True) -> jax.Array:
    """tokens int [B, T, S], frame-aligned actions int [B, T] -> logits float32 [B, T, S, K]
    (`joint=False`: see _logits)."""
    return self._logits(self.transformer(self._embed(tokens, actions, 0)), joint)

  def teacher_forced(self, tokens: jax.Array, masked_tokens: jax.Array, actions: jax.Array, *,
                     joint: bool = True) -> jax.Array:
    """tokens int [B, T, S] (the true clip), masked_tokens [B, T, S] (the same with mask ids),
    frame-aligned actions [B, T] -> logits float32 [B, T, S, K]: frame t predicted from the
    true frames < t and its own masked tokens, for every t at once (what sampling asks).
    `joint=False`: see _logits."""
    previous = self.shifted(tokens) if self.previous_frame else None  # both streams: the true frame before
    clean = self._embed(tokens, actions, 0, previous)
    masked = self._embed(masked_tokens, actions, 0, previous)
    return self._logits(self.transformer.forced(clean, masked), joint)

  def encode_context(self, tokens: jax.Array, actions: jax.Array) -> KVCache:
    """Temporal keys/values of fully known frames: KVCache of [L, B, T, S', N, Hd]."""
    _, cache = self.transformer(self._embed(tokens, actions, 0), return_kv=True)
    return cache

  def step(self, tokens: jax.Array, actions: jax.Array, cache: KVCache, position: jax.Array, *,
           previous: jax.Array | None = None, joint: bool = True):
    """One frame at `position` against the cache of earlier frames.

    tokens int [B, 1, S], actions int [B, 1] -> (logits float32 [B, 1, S, K], KVCache of the
    frame [L, B, 1, S', N, Hd]). Equal to __call__ on the whole context at that frame.
    previous int [B, 1, S]: the tokens at position - 1 (needed with `previous_frame`).
    `joint=False`: see _logits.
    """
    if self.previous_frame and previous is None:
      raise ValueError("this dynamics model reads the previous frame (previous_frame=True): "
                       "step needs previous=, the tokens at position - 1")
    x, frame_cache = self.transformer.step(self._embed(tokens, actions, position, previous), cache, position)
    return self._logits(x, joint), frame_cache
