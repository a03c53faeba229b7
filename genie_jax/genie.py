"""The trained world model as one object: prompt in, latent action in, frame out.

    genie = Genie.load("runs/quickstart/lam_dynamics")         # finds its tokenizer
    frames = genie.rollout("prompt.png", actions=[0, 3, 3, 1])  # uint8 [1, 4, H, W, 3]

    state, frame = genie.start("prompt.png"), None
    state, frame = genie.step(state, action=2)                  # one frame at a time

Every call is jitted once per batch size (and rollout length): frames after the first
never recompile. Frames are decoded with the tokenizer over the whole context window
(its decoder is causal in time, as in training), so what `step` shows is what `rollout`
returns for the same seed.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie_jax import parallel, prompts, sampling
from genie_jax.models import build, dynamics as dynamics_lib
from genie_jax.train import checkpoints


class Genie:
  def __init__(self, *, config, tokenizer_graphdef, world_graphdef, params: dict, mesh,
               steps: int | None = None, temperature: float | None = None,
               gumbel_scale: float | None = None, cached: bool = True, seed: int = 0):
    self.config = config
    self.mesh = mesh
    self._graphdefs = (tokenizer_graphdef, world_graphdef)
    self.params = params  # {"tokenizer": ..., "world": {"lam": ..., "dynamics": ...}}
    s = config.sampling
    self.sampling = dict(steps=int(steps or s.steps),
                         temperature=float(s.temperature if temperature is None else temperature),
                         gumbel_scale=float(s.gumbel_scale if gumbel_scale is None else gumbel_scale),
                         # the speed switches; configs saved before them lack them
                         **{name: bool(s.get(name, default)) for name, default in sampling.SPEED_DEFAULTS.items()})
    self.cached = cached
    self._key = jax.random.PRNGKey(seed)
    self._start = jax.jit(self._start_fn)
    self._step = jax.jit(self._step_fn)
    self._rollout = jax.jit(self._rollout_fn)

  # ------------------------------------------------------------------ loading
  @classmethod
  def load(cls, workdir: str, *, tokenizer_workdir: str | None = None, mesh=None, **kwargs) -> "Genie":
    """From a phase-2 (lam_dynamics) workdir; its tokenizer comes from the workdir its
    config names, or `tokenizer_workdir`. `mesh` defaults to one device; pass a larger one
    (params are sharded by the config's rules) for models that do not fit one chip.
    kwargs: steps, temperature, gumbel_scale, cached, seed."""
    config = checkpoints.read_config(workdir)
    if config.phase != "lam_dynamics":
      raise ValueError(f"{workdir!r} is a {config.phase!r} run; Genie.load needs a lam_dynamics "
                       "(phase 2) workdir")
    tokenizer_workdir = tokenizer_workdir or config.train.tokenizer_workdir
    if not tokenizer_workdir or not os.path.isdir(tokenizer_workdir):
      raise FileNotFoundError(f"tokenizer workdir {tokenizer_workdir!r} (named by {workdir!r}) not "
                              "found; pass tokenizer_workdir=")
    mesh = mesh or parallel.make_mesh(data=1, devices=jax.devices()[:1])
    tok_graphdef, tok_params, _ = checkpoints.load_frozen_tokenizer(config, mesh, tokenizer_workdir)
    world_graphdef, world_params, _, _, _ = checkpoints.load_params(
        workdir, build.make_trainable, mesh, rules_config=config)
    return cls(config=config, tokenizer_graphdef=tok_graphdef, world_graphdef=world_graphdef,
               params={"tokenizer": tok_params, "world": world_params}, mesh=mesh, **kwargs)

  # ------------------------------------------------------------------ facts
  @property
  def num_actions(self) -> int:
    return int(self.config.lam.num_actions)

  @property
  def frame_shape(self) -> tuple[int, int, int]:
    return (int(self.config.data.height), int(self.config.data.width), 3)

  @property
  def window(self) -> int:
    return int(self.config.data.window)

  # ------------------------------------------------------------------ pure functions
  def _models(self, params):
    tok_graphdef, world_graphdef = self._graphdefs
    world = nnx.merge(world_graphdef, params["world"])
    return nnx.merge(tok_graphdef, params["tokenizer"]), world.lam, world.dynamics

  def _decode_latest(self, tokenizer, state: sampling.WorldState) -> jax.Array:
    b, t, _ = state.tokens.shape
    video = tokenizer.decode(state.tokens.reshape(b, t, *tokenizer.grid))
    frame = jax.lax.dynamic_index_in_dim(video, state.length - 1, axis=1, keepdims=False)
    return jnp.round(frame * 255.0).astype(jnp.uint8)

  def _start_fn(self, params, frames):
    tokenizer, lam, dynamics = self._models(params)
    b, p = frames.shape[:2]
    tokens = tokenizer.encode(frames).reshape(b, p, -1)
    if p > 1:  # the prompt's own transitions, as the LAM reads them
      actions = dynamics_lib.frame_actions(lam.infer_actions(frames), dynamics.num_actions)
    else:
      actions = jnp.full((b, 1), dynamics.num_actions, jnp.int32)
    return sampling.init_state(dynamics, tokens, actions, max_frames=self.window, cached=self.cached)

  def _step_fn(self, params, state, action, rng):
    tokenizer, _, dynamics = self._models(params)
    state, _ = sampling.next_frame(dynamics, state, action, rng, **self.sampling)
    return state, self._decode_latest(tokenizer, state)

  def _rollout_fn(self, params, state, actions, rng):
    def body(st, inputs):
      action, key = inputs
      return self._step_fn(params, st, action, key)
    keys = jax.random.split(rng, actions.shape[1])
    state, frames = jax.lax.scan(body, state, (actions.T, keys))
    return state, jnp.moveaxis(frames, 0, 1)

  # ------------------------------------------------------------------ public API
  def prompt_frames(self, prompt) -> np.ndarray:
    """Any prompt (path, image, frames) -> uint8 [B, P, H, W, 3] at the model's size."""
    return prompts.prepare_prompt(prompt, height=self.frame_shape[0], width=self.frame_shape[1])

  def check_actions(self, actions) -> np.ndarray:
    """Latent actions as an int32 array; raises on anything that is not an int in 0..A-1."""
    arr = np.asarray(actions)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
      raise ValueError(f"latent actions must be integers in 0..{self.num_actions - 1}, got {actions!r}")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= self.num_actions)]
    if bad.size:
      raise ValueError(f"latent action {int(bad.flat[0])} is out of range: this model has "
                       f"{self.num_actions} latent actions (0..{self.num_actions - 1})")
    return arr.astype(np.int32)

  def _next_key(self, seed):
    if seed is not None:
      return jax.random.PRNGKey(seed)
    self._key, key = jax.random.split(self._key)
    return key

  def start(self, prompt) -> sampling.WorldState:
    """Encodes a prompt into the state that `step` continues from (its last `window` frames)."""
    frames = self.prompt_frames(prompt)[:, -self.window:]
    with parallel.use_mesh_rules(self.mesh, self.config.rules):
      return self._start(self.params, jnp.asarray(frames))

  def step(self, state: sampling.WorldState, action, *, seed: int | None = None):
    """One latent action per batch row (an int, or int [B]) -> (state, frame uint8 [B, H, W, 3])."""
    batch = state.tokens.shape[0]
    action = self.check_actions(action).reshape(-1)
    if action.shape[0] not in (1, batch):
      raise ValueError(f"{action.shape[0]} actions for a batch of {batch}: give one per row")
    action = np.broadcast_to(action, (batch,))
    with parallel.use_mesh_rules(self.mesh, self.config.rules):
      state, frame = self._step(self.params, state, jnp.asarray(action), self._next_key(seed))
    return state, np.asarray(frame)

  def rollout(self, prompt, actions, *, seed: int | None = None) -> np.ndarray:
    """Prompt + latent actions [N] or [B, N] -> generated frames uint8 [B, N, H, W, 3]."""
    state = self.start(prompt)
    batch = state.tokens.shape[0]
    actions = self.check_actions(actions)
    if actions.ndim == 1:
      actions = actions[None]
    if actions.ndim != 2 or actions.shape[1] == 0 or actions.shape[0] not in (1, batch):
      raise ValueError(f"actions must be [N] or [{batch}, N] with N >= 1, got shape {actions.shape}")
    actions = np.broadcast_to(actions, (batch, actions.shape[1]))
    with parallel.use_mesh_rules(self.mesh, self.config.rules):
      _, frames = self._rollout(self.params, state, jnp.asarray(actions), self._next_key(seed))
    return np.asarray(frames)

  def infer_actions(self, video) -> np.ndarray:
    """The LAM's latent actions of a clip: uint8 [B, T, H, W, 3] -> int32 [B, T-1]."""
    frames = self.prompt_frames(video)
    return np.asarray(_infer_actions(self._graphdefs[1], self.params["world"], jnp.asarray(frames)))

  def next_frame_predictions(self, tokens, actions) -> np.ndarray:
    """Tokens of a real clip int [B, T, h, w] (from `encode`) and its transition actions
    int [B, T-1] -> the dynamics model's argmax tokens int32 [B, T-1, h*w] of frames
    1..T-1, each from the true frames before it (see sampling.next_frame_predictions)."""
    tokens = np.asarray(tokens)
    actions = self.check_actions(actions)
    if tokens.ndim != 4 or actions.shape != (tokens.shape[0], tokens.shape[1] - 1):
      raise ValueError(f"actions {actions.shape} must hold one transition per frame pair of "
                       f"tokens {tokens.shape} [B, T, h, w]")
    return np.asarray(_next_frame_predictions(self._graphdefs[1], self.params["world"],
                                              jnp.asarray(tokens), jnp.asarray(actions)))

  def encode(self, video) -> np.ndarray:
    """uint8 [B, T, H, W, 3] -> tokens int32 [B, T, h, w]."""
    frames = self.prompt_frames(video)
    return np.asarray(_encode(self._graphdefs[0], self.params["tokenizer"], jnp.asarray(frames)))

  def decode(self, tokens) -> np.ndarray:
    """tokens int [B, T, h, w] -> uint8 [B, T, H, W, 3]."""
    return np.asarray(_decode(self._graphdefs[0], self.params["tokenizer"], jnp.asarray(tokens)))


@functools.partial(jax.jit, static_argnums=0)
def _infer_actions(world_graphdef, params, frames):
  return nnx.merge(world_graphdef, params).lam.infer_actions(frames)


@functools.partial(jax.jit, static_argnums=0)
def _next_frame_predictions(world_graphdef, params, tokens, actions):
  dynamics = nnx.merge(world_graphdef, params).dynamics
  tokens = tokens.reshape(*tokens.shape[:2], -1)
  return sampling.next_frame_predictions(
      dynamics, tokens, dynamics_lib.frame_actions(actions, dynamics.num_actions))


@functools.partial(jax.jit, static_argnums=0)
def _encode(tok_graphdef, params, frames):
  return nnx.merge(tok_graphdef, params).encode(frames)


@functools.partial(jax.jit, static_argnums=0)
def _decode(tok_graphdef, params, tokens):
  return jnp.round(nnx.merge(tok_graphdef, params).decode(tokens) * 255.0).astype(jnp.uint8)
