"""Does the latent action model recover the true actions? Trains the LAM alone (the
config's LAM, optimizer and objective, losses.lam_loss) on
random-policy sprite episodes simulated in memory, then scores its codes on held-out
episodes against the true actions (best-mapping accuracy, NMI). No dataset and no
tokenizer, so it isolates the LAM and its training, in a minute or two on CPU. Used by
tests/test_world_control.py, the guard that the LAM half of a controllable world works.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from data_pipelines import sprites as sprite_world
from genie_jax.evals import action_metrics
from genie_jax.models import build, patching
from genie_jax.train import losses, state as state_lib

EPISODE_STEPS = 32


class Clips(NamedTuple):
  frames: np.ndarray     # uint8 [N, window, 64, 64, 3]
  actions: np.ndarray    # int32 [N, window - 1], the transitions'
  positions: np.ndarray  # int [N, window, 2], the sprite's top-left
  seeds: np.ndarray      # int [N], each clip's episode (sprite_world.episode_look)


def sprite_clips(first_seed: int, episodes: int, window: int, episode_steps: int = EPISODE_STEPS) -> Clips:
  """Clips cut from random-policy episodes of the default sprite world."""
  frames, actions, positions, seeds = [], [], [], []
  for seed in range(first_seed, first_seed + episodes):
    video, acts, pos = sprite_world.simulate_episode(seed=seed, num_steps=episode_steps)
    for start in range(0, episode_steps - window + 1, window):
      frames.append(video[start:start + window])
      actions.append(acts[start:start + window - 1])
      positions.append(pos[start:start + window])
      seeds.append(seed)
  return Clips(np.stack(frames), np.stack(actions), np.stack(positions), np.array(seeds))


def train_lam(config, *, steps: int, batch_size: int = 8, seed: int = 0, episodes: int = 128,
              sample_clips: Callable[[np.random.Generator, int], np.ndarray] | None = None,
              report: Callable[[int, object], None] | None = None, report_every: int = 0,
              oracle: bool = False):
  """config: a lam_dynamics config (its data.window, lam and optim fields) -> the trained LAM.

  sample_clips(rng, batch_size) -> uint8 [B, window, H, W, 3] draws the training clips
  (default: clips of `episodes` simulated sprite episodes). report(step, lam), when given,
  is called every `report_every` steps and at the end, for learning curves. With `oracle`,
  sample_clips returns (clips, actions int [B, window - 1]) and the decoder is trained on
  the codes of those actions instead of the encoder's (LatentActionModel.predict_with): the
  control that says how well the LAM's objective is met with the true actions."""
  if oracle and sample_clips is None:
    raise ValueError("oracle=True needs a sample_clips that returns (clips, actions)")
  if sample_clips is None:
    frames = sprite_clips(0, episodes, config.data.window).frames
    sample_clips = lambda rng, b: frames[rng.integers(0, len(frames), size=b)]  # noqa: E731
  lam = build.make_lam(config, nnx.Rngs(seed))
  graphdef, params = nnx.split(lam, nnx.Param)
  tx = state_lib.make_optimizer(config.optim, steps, one_model=True)
  opt_state = tx.init(params)

  objective = losses.lam_objective_options(config.lam)

  def loss_fn(params, video, key):
    return losses.run_lam_objective(nnx.merge(graphdef, params), video, shift_rng=key, **objective)[1][0]

  def oracle_loss_fn(params, video, actions):  # the given actions' codes; the encoder is not read
    prediction = nnx.merge(graphdef, params).predict_with(video, actions)
    return losses.reconstruction_loss(prediction, video[:, 1:], focus_weight=objective["focus_weight"],
                                      focus_size=objective["focus_size"])

  # Two compiled steps, not one taking an optional argument: the LAM's own step keeps its
  # program as it was, since the sprite LAM's outcome turned on its float rounding (README,
  # "Set-up": with actions=None passed through one step, the guard's LAM ended at NMI 0.058)
  @jax.jit
  def step(params, opt_state, frames, key):
    grads = jax.grad(loss_fn)(params, patching.to_unit_float(frames), key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  @jax.jit
  def oracle_step(params, opt_state, frames, actions):
    grads = jax.grad(oracle_loss_fn)(params, patching.to_unit_float(frames), actions)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  for i in range(steps):
    if oracle:
      frames, actions = sample_clips(rng, batch_size)
      params, opt_state = oracle_step(params, opt_state, jnp.asarray(frames), jnp.asarray(actions, jnp.int32))
    else:
      params, opt_state = step(params, opt_state, jnp.asarray(sample_clips(rng, batch_size)), jax.random.key(i))
    if report is not None and (i + 1 == steps or (report_every and (i + 1) % report_every == 0)):
      report(i + 1, nnx.merge(graphdef, params))
  return nnx.merge(graphdef, params)


# one compiled function for every call (a jit made inside infer_actions would compile anew each time)
_infer = jax.jit(lambda lam, video: lam.infer_actions(patching.to_unit_float(video)))


def infer_actions(lam, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
  """frames uint8 [N, T, H, W, 3] -> the LAM's codes int32 [N, T - 1]."""
  return np.concatenate([np.asarray(_infer(lam, jnp.asarray(frames[i:i + batch_size])))
                         for i in range(0, len(frames), batch_size)])


def score(lam, *, first_seed: int = 10_000, episodes: int = 32) -> dict:
  """The LAM's codes on held-out episodes against the true actions."""
  frames, actions, _, _ = sprite_clips(first_seed, episodes, lam.enc_pos.time[...].shape[0])
  codes = infer_actions(lam, frames)
  table = action_metrics.contingency(codes, actions, lam.num_actions, len(sprite_world.ACTION_NAMES))
  return {"accuracy": action_metrics.best_mapping_accuracy(table),
          "nmi": action_metrics.normalized_mutual_information(table),
          "codes_used": int(np.sum(table.sum(axis=1) > 0)), "table": table}
