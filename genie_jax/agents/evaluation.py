"""Plays agents on real CoinRun levels: one environment per level, all stepped in lockstep,
each level played once from its start to its first end (the coin, a death, or the cap)."""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from flax import nnx
from tqdm import tqdm

from data_pipelines import coinrun_expert


def play_levels(act: Callable[[np.ndarray, np.random.Generator], np.ndarray], levels, *, context: int,
                max_steps: int = 1000, seed: int = 0, desc: str = "levels", progress: bool = True) -> np.ndarray:
  """act(frames uint8 [L, context, H, W, 3], rng) -> procgen actions int [L]. Returns bool [L]:
  which levels were solved."""
  rng = np.random.default_rng(seed)
  envs = [coinrun_expert.make_level_env(level) for level in levels]
  first = np.stack([env.observe()[1]["rgb"][0] for env in envs])
  history = np.repeat(first[:, None], context, axis=1)  # before the start, the first frame repeats
  solved = np.zeros(len(envs), bool)
  active = np.ones(len(envs), bool)
  bar = tqdm(total=len(envs), desc=desc, disable=not progress, leave=False)
  for _ in range(max_steps):
    actions = np.asarray(act(history, rng))
    for i in np.flatnonzero(active):
      envs[i].act(actions[i:i + 1].astype(np.int32))
      reward, obs, is_first = envs[i].observe()
      if is_first[0]:  # the level ended: the env has already reset itself
        solved[i], active[i] = reward[0] > 0, False
        bar.update(1)
      else:
        history[i] = np.concatenate([history[i, 1:], obs["rgb"][:1]], axis=0)
    if not active.any():
      break
  bar.close()
  return solved


def policy_actor(policy, mapping: np.ndarray | None = None):
  """An `act` for play_levels that samples the policy's action (through `mapping`, latent ->
  real, for the latent-action agent)."""
  graphdef, params = nnx.split(policy)
  logits_fn = jax.jit(lambda frames: nnx.merge(graphdef, params)(frames))

  def act(frames, rng):
    logits = np.asarray(logits_fn(frames), np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    cdf = probs.cumsum(axis=1)
    cdf[:, -1] = 1.0  # rounding must not leave a draw above the last bin
    choice = (cdf > rng.random((len(probs), 1))).argmax(axis=1)
    return choice if mapping is None else mapping[choice]
  return act


def constant_actor(action: int):
  """Holds one key: with RIGHT+UP, what the expert does when nothing is in its way."""
  def act(frames, rng):
    del rng
    return np.full(len(frames), action)
  return act


def random_actor(num_actions: int):
  def act(frames, rng):
    return rng.integers(0, num_actions, len(frames))
  return act
