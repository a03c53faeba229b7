"""MaskGIT dynamics model (Genie, Sec. 2.1): a decoder-only ST-transformer over tokens.

ACTION ALIGNMENT (the one place it is decided): a_t is the latent action of the
transition x_t -> x_t+1 (LAM output index t, 0-based). The dynamics model predicts
z_t+1 from z_<=t and a_<=t, so the token frame at position t+1 is fed a_t, and
position 0 gets a learned "no action" id A. `frame_actions` builds that [B, T] array
from the [B, T-1] transition actions; nothing else shifts actions.

Conditioning (config `action_conditioning`):
  "additive": the action embedding is added to every token of its frame (the paper);
  "token":    it is appended as one extra token per frame, S+1 tokens attended
              spatially (Jasmine's finding: more faithful rollouts).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from genie_jax.models.layers import Dense, Embed, PositionalEmbedding
from genie_jax.models.st_transformer import KVCache, STTransformer

ACTION_CONDITIONING = ("additive", "token")


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
               scan_layers: bool = True, attention: str = "auto"):
    if action_conditioning not in ACTION_CONDITIONING:
      raise ValueError(f"action_conditioning must be one of {ACTION_CONDITIONING}, "
                       f"got {action_conditioning!r}")
    self.num_codes, self.num_actions = num_codes, num_actions
    self.mask_id = num_codes  # the learned mask token
    self.tokens_per_frame = tokens_per_frame
    self.action_conditioning = action_conditioning
    extra = 1 if action_conditioning == "token" else 0
    kw = dict(rngs=rngs, param_dtype=param_dtype)
    # K codes + the mask token: K+1 rows rarely divide a tensor axis, so rows stay whole
    self.token_embed = Embed(num_codes + 1, dim, names=(None, "embed"), **kw)
    self.action_embed = Embed(num_actions + 1, dim, names=(None, "embed"), **kw)
    self.pos = PositionalEmbedding(max_frames, tokens_per_frame + extra, dim, **kw)
    self.transformer = STTransformer(dim=dim, num_layers=num_layers, num_heads=num_heads,
                                     head_dim=head_dim, dtype=dtype, remat=remat,
                                     scan_layers=scan_layers, attention=attention, **kw)
    self.head = Dense(dim, num_codes, names=("embed", "vocab"), dtype=dtype, **kw)
    self.dtype = dtype

  def _embed(self, tokens: jax.Array, actions: jax.Array, time_offset) -> jax.Array:
    """tokens int [B, T, S] (mask id allowed), actions int [B, T] (frame-aligned)."""
    if tokens.ndim != 3 or tokens.shape[2] != self.tokens_per_frame:
      raise ValueError(f"dynamics expects tokens [B, T, {self.tokens_per_frame}], got {tokens.shape}")
    if actions.shape != tokens.shape[:2]:
      raise ValueError(f"actions {actions.shape} must be frame-aligned with tokens {tokens.shape[:2]}")
    x = self.token_embed(tokens, self.dtype)
    act = self.action_embed(actions, self.dtype)[:, :, None, :]
    x = x + act if self.action_conditioning == "additive" else jnp.concatenate([x, act], axis=2)
    return self.pos(x, time_offset=time_offset)

  def _logits(self, x: jax.Array) -> jax.Array:
    return self.head(x[:, :, :self.tokens_per_frame]).astype(jnp.float32)

  def __call__(self, tokens: jax.Array, actions: jax.Array) -> jax.Array:
    """tokens int [B, T, S], frame-aligned actions int [B, T] -> logits float32 [B, T, S, K]."""
    return self._logits(self.transformer(self._embed(tokens, actions, 0)))

  def encode_context(self, tokens: jax.Array, actions: jax.Array) -> KVCache:
    """Temporal keys/values of fully known frames: KVCache of [L, B, T, S', N, Hd]."""
    _, cache = self.transformer(self._embed(tokens, actions, 0), return_kv=True)
    return cache

  def step(self, tokens: jax.Array, actions: jax.Array, cache: KVCache, position: jax.Array):
    """One frame at `position` against the cache of earlier frames.

    tokens int [B, 1, S], actions int [B, 1] -> (logits float32 [B, 1, S, K], KVCache of the
    frame [L, B, 1, S', N, Hd]). Equal to __call__ on the whole context at that frame.
    """
    x, frame_cache = self.transformer.step(self._embed(tokens, actions, position), cache, position)
    return self._logits(x), frame_cache
