"""MaskGIT generation of new frames with the dynamics model, and the frame cache.

One new frame (Genie, Sec. 2.2; MaskGIT, Chang et al. 2022): start with every token
masked; at each of `steps` steps sample all masked tokens, score each by its log
probability plus Gumbel noise annealed to zero over the steps, keep the most confident
and re-mask the rest, so that cos(pi/2 * (i+1)/steps) of the frame is still masked after
step i (none after the last).

The frame cache: tokens of past frames never change, so their per-layer temporal keys and
values are computed once (when the frame is finished) and kept in a fixed-size buffer of
the training window's length. A MaskGIT step then runs the model on one frame only, and a
new frame costs the same whatever the context. Positions are absolute learned embeddings,
so when the buffer is full the context slides by one frame: the last T-1 frames are
re-encoded at positions 0..T-2 (frame 0 gets the "no action" id, as in training). The
result equals recomputing the whole context at every step (`cached=False`, kept as the
reference and for the benchmark).

Everything here is a pure function of (dynamics module, WorldState, ...), jitted once by
the caller: the number of context frames is a traced value, never a shape.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from flax import nnx

from genie_jax.models import fsq, layers
from genie_jax.models.dynamics import DynamicsModel, split_channels
from genie_jax.models.st_transformer import KVCache, STTransformer


class WorldState(NamedTuple):
  """What generation carries from frame to frame (B: batch, T: window, S: tokens per frame)."""
  tokens: jax.Array          # int32 [B, T, S]: context frames in slots 0..length-1
  actions: jax.Array         # int32 [B, T]: frame-aligned actions (slot 0: "no action")
  cache: KVCache | None      # temporal k/v [L, B, T, S', N, Hd] of the context, or None
  length: jax.Array          # int32 []: how many slots hold frames


def num_masked_after(step, *, num_steps: int, num_tokens: int):
  """MaskGIT's cosine schedule: tokens still masked after step `step` (0-based)."""
  ratio = (step + 1) / num_steps
  return jnp.floor(num_tokens * jnp.cos(0.5 * math.pi * ratio)).astype(jnp.int32)


def sample_codes(logits: jax.Array, rng: jax.Array, *, temperature: float, code_levels=()):
  """logits [..., K] -> (codes int32 [...], their log-probabilities [...]) at `temperature`
  (0: greedy). With `code_levels` (the fsq_digits head) the logits are per FSQ channel
  [..., sum(levels)]: the joint distribution is the product of the channels', so each digit
  is drawn from its own channel and the log-probabilities add; the same draw as from the
  joint over prod(levels) codes, without ever building it."""
  logits = logits.astype(jnp.float32)
  if temperature > 0:
    logits = logits / temperature
  if not code_levels:
    groups, basis = [logits], [1]
  else:
    groups = split_channels(logits, code_levels)
    basis = fsq.radix_basis(code_levels)
  keys = jax.random.split(rng, len(groups))
  codes = jnp.zeros(logits.shape[:-1], jnp.int32)
  log_prob = jnp.zeros(logits.shape[:-1], jnp.float32)
  for key, group, b in zip(keys, groups, basis):
    choice = (jax.random.categorical(key, group, axis=-1) if temperature > 0
              else jnp.argmax(group, axis=-1))
    log_prob += jnp.take_along_axis(jax.nn.log_softmax(group, axis=-1), choice[..., None], axis=-1)[..., 0]
    codes += choice.astype(jnp.int32) * b
  return codes, log_prob


def maskgit_decode(logits_fn, rng: jax.Array, *, batch: int, num_tokens: int, mask_id: int,
                   steps: int, temperature: float, gumbel_scale: float, code_levels=(),
                   unroll: bool = False) -> jax.Array:
  """Decodes one frame. logits_fn(tokens int [B, S] with mask_id) -> logits [B, S, K]
  (with `code_levels`, per FSQ channel [B, S, sum(levels)]; see sample_codes).

  Returns int32 [B, S] with no mask left. temperature 0 samples greedily. unroll=True
  writes the `steps` iterations out as straight-line code instead of a device-side loop:
  the same values, a program `steps` times longer, and on a GPU no per-iteration loop
  control between the small kernels of a batch-1 frame (scripts/bench_sampler.py
  --variants measures it).
  """
  def body(i, carry):
    tokens, num_masked = carry
    masked = tokens == mask_id
    sample_key, noise_key = jax.random.split(jax.random.fold_in(rng, i))
    sampled, confidence = sample_codes(logits_fn(tokens), sample_key, temperature=temperature,
                                       code_levels=code_levels)
    anneal = gumbel_scale * (1.0 - (i + 1) / steps)
    confidence = confidence + anneal * jax.random.gumbel(noise_key, confidence.shape)
    confidence = jnp.where(masked, confidence, jnp.inf)  # decided tokens stay decided
    # at least one more token is decided per step, so none is left after the last step
    keep_masked = jnp.clip(num_masked_after(i, num_steps=steps, num_tokens=num_tokens),
                           0, jnp.maximum(num_masked - 1, 0))
    rank = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)  # 0 = least confident
    remask = rank < keep_masked
    tokens = jnp.where(masked, jnp.where(remask, mask_id, sampled), tokens)
    return tokens.astype(jnp.int32), keep_masked

  start = jnp.full((batch, num_tokens), mask_id, jnp.int32)
  tokens, _ = jax.lax.fori_loop(0, steps, body, (start, jnp.int32(num_tokens)), unroll=bool(unroll))
  return tokens


# the layers whose kernel and bias are cast to their compute dtype at every call
_CAST_AT_CALL = (layers.Dense, layers.DenseIn, layers.Conv)
# config.sampling's speed switches and their defaults: how a frame is computed, never its
# values. unroll: maskgit_decode's steps as straight-line code; cast_weights, unroll_layers:
# inference_view's. On an H100 (README, "On a GPU") cast_weights + unroll_layers took one
# world's step from 40.1 to 49.8 frames/s; cast_weights is a no-op in float32, so it is on.
SPEED_DEFAULTS = {"unroll": False, "cast_weights": True, "unroll_layers": False}


def inference_view(dynamics: DynamicsModel, *, cast_weights: bool = False,
                   unroll_layers: bool = False) -> DynamicsModel:
  """A copy of `dynamics` that computes the same values faster inside a MaskGIT loop.

  cast_weights: every Dense / DenseIn / Conv kernel and bias arrives already in the
  layer's compute dtype, so the cast these layers do at each call is a no-op: in bf16 the
  weights are converted once per frame instead of at every MaskGIT step (on an H100 the
  per-step converts were 900 kernels a frame). Exact: astype to the same dtype twice is
  astype once. unroll_layers: the block stack runs as a Python loop over layer slices
  instead of a scan (STTransformer; the same maths), so its per-layer slices of the
  weights and of the frame cache are static. The caller's module is not changed: the
  copy has its own Variables over the same arrays.
  """
  if not (cast_weights or unroll_layers):
    return dynamics
  graphdef, state = nnx.split(dynamics)
  if cast_weights:  # on the state, not by assigning to the module's Params (which may belong to an outer trace)
    dtypes = {path + (name,): module.dtype for path, module in nnx.iter_modules(dynamics)
              if isinstance(module, _CAST_AT_CALL) for name in ("kernel", "bias")}

    def cast(path, variable):  # float32 weights of a float32 layer stay as they are
      if path in dtypes and variable[...].dtype != dtypes[path]:
        return variable.replace(variable[...].astype(dtypes[path]))
      return variable
    state = nnx.map_state(cast, state)
  view = nnx.merge(graphdef, state)
  if unroll_layers:
    for _, module in nnx.iter_modules(view):
      if isinstance(module, STTransformer):
        module.scan_layers = False
  return view


def init_state(dynamics: DynamicsModel, prompt_tokens: jax.Array, prompt_actions: jax.Array,
               *, max_frames: int, cached: bool = True) -> WorldState:
  """prompt_tokens int [B, P, S], frame-aligned prompt_actions int [B, P] -> WorldState.

  Only the last `max_frames` prompt frames are kept; the first kept frame gets "no action".
  """
  b, p, s = prompt_tokens.shape
  if prompt_actions.shape != (b, p):
    raise ValueError(f"prompt actions {prompt_actions.shape} must be frame-aligned with "
                     f"prompt tokens {prompt_tokens.shape[:2]}")
  keep = min(p, max_frames)
  tokens = jnp.zeros((b, max_frames, s), jnp.int32).at[:, :keep].set(prompt_tokens[:, p - keep:])
  actions = jnp.full((b, max_frames), dynamics.num_actions, jnp.int32)
  actions = actions.at[:, 1:keep].set(prompt_actions[:, p - keep + 1:])
  cache = dynamics.encode_context(tokens, actions) if cached else None
  return WorldState(tokens, actions, cache, jnp.int32(keep))


def _slide(dynamics: DynamicsModel, state: WorldState) -> WorldState:
  """Drops the oldest frame; the rest move to positions 0..T-2 and are re-encoded."""
  tokens = jnp.roll(state.tokens, -1, axis=1)
  actions = jnp.roll(state.actions, -1, axis=1).at[:, 0].set(dynamics.num_actions)
  cache = None if state.cache is None else dynamics.encode_context(tokens, actions)
  return WorldState(tokens, actions, cache, state.length - 1)


def next_frame(dynamics: DynamicsModel, state: WorldState, action: jax.Array, rng: jax.Array, *,
               steps: int, temperature: float, gumbel_scale: float, unroll: bool = False,
               cast_weights: bool = False, unroll_layers: bool = False):
  """Generates the frame that follows `action` (int [B], the transition from the last frame).
  cast_weights, unroll_layers: inference_view's (the same values, fewer kernels).

  Returns (new WorldState, tokens int32 [B, S]).
  """
  dynamics = inference_view(dynamics, cast_weights=cast_weights, unroll_layers=unroll_layers)
  b, t_max, s = state.tokens.shape
  state = jax.lax.cond(state.length >= t_max, lambda st: _slide(dynamics, st), lambda st: st, state)
  position = state.length
  action = action.astype(jnp.int32)
  actions = jax.lax.dynamic_update_slice_in_dim(state.actions, action[:, None], position, axis=1)

  previous = jax.lax.dynamic_slice_in_dim(state.tokens, position - 1, 1, axis=1)  # position >= 1
  # the fsq_digits head samples channel by channel (sample_codes), never the joint softmax
  if state.cache is not None:
    def logits_fn(frame):
      return dynamics.step(frame[:, None], action[:, None], state.cache, position, previous=previous,
                           joint=False)[0][:, 0]
  else:
    def logits_fn(frame):
      context = jax.lax.dynamic_update_slice_in_dim(state.tokens, frame[:, None], position, axis=1)
      logits = dynamics(context, actions, joint=False)
      return jax.lax.dynamic_index_in_dim(logits, position, axis=1, keepdims=False)

  frame = maskgit_decode(logits_fn, rng, batch=b, num_tokens=s, mask_id=dynamics.mask_id,
                         steps=steps, temperature=temperature, gumbel_scale=gumbel_scale,
                         code_levels=dynamics.code_levels, unroll=unroll)
  tokens = jax.lax.dynamic_update_slice_in_dim(state.tokens, frame[:, None], position, axis=1)
  cache = state.cache
  if cache is not None:  # the finished frame's keys/values join the cache
    _, frame_kv = dynamics.step(frame[:, None], action[:, None], cache, position, previous=previous, joint=False)
    cache = KVCache(*(jax.lax.dynamic_update_slice_in_dim(c, f.astype(c.dtype), position, axis=2)
                      for c, f in zip(cache, frame_kv)))
  return WorldState(tokens, actions, cache, position + 1), frame


def next_frame_predictions(dynamics: DynamicsModel, tokens: jax.Array, actions: jax.Array) -> jax.Array:
  """The model's one-shot guess of each next frame from a true past (a diagnostic).

  tokens int [B, T, S] of a real clip, frame-aligned actions int [B, T] -> argmax tokens
  int32 [B, T-1, S] of frames 1..T-1, each predicted from the true frames before it and a
  fully masked frame (what the first MaskGIT step sees).
  """
  cache = dynamics.encode_context(tokens, actions)
  masked = jnp.full(tokens.shape[:1] + (1,) + tokens.shape[2:], dynamics.mask_id, jnp.int32)

  def one(position):
    action = jax.lax.dynamic_slice_in_dim(actions, position, 1, axis=1)
    previous = jax.lax.dynamic_slice_in_dim(tokens, position - 1, 1, axis=1)
    logits, _ = dynamics.step(masked, action, cache, position, previous=previous, joint=False)
    return sample_codes(logits[:, 0], jax.random.key(0), temperature=0.0, code_levels=dynamics.code_levels)[0]

  return jnp.stack([one(jnp.int32(p)) for p in range(1, tokens.shape[1])], axis=1)


def rollout(dynamics: DynamicsModel, state: WorldState, actions: jax.Array, rng: jax.Array, *,
            steps: int, temperature: float, gumbel_scale: float, **speed):
  """actions int [B, N] -> (final WorldState, tokens int32 [B, N, S]); one compiled scan.
  `speed`: next_frame's unroll / cast_weights / unroll_layers."""
  def body(st, inputs):
    action, key = inputs
    return next_frame(dynamics, st, action, key, steps=steps, temperature=temperature,
                      gumbel_scale=gumbel_scale, **speed)

  keys = jax.random.split(rng, actions.shape[1])
  state, frames = jax.lax.scan(body, state, (actions.T, keys))
  return state, frames.transpose(1, 0, 2)
