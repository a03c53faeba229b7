"""Trains a FramePolicy to predict labels (latent or real actions) from frames: AdamW on
the cross-entropy, one jitted step, batches from agents/data.batches."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm import tqdm

from genie_jax.agents import data as data_lib
from genie_jax.agents.policy import FramePolicy


def train_policy(episodes: data_lib.Episodes, frame_index: np.ndarray, labels: np.ndarray, *,
                 num_actions: int, context: int, steps: int, batch_size: int, lr: float, seed: int,
                 dim: int = 64, hidden: int = 256, desc: str = "policy", progress: bool = True):
  """-> (the trained FramePolicy, the mean training cross-entropy of the last tenth of steps)."""
  height, width = episodes.frames.shape[1:3]
  policy = FramePolicy(context=context, height=height, width=width, num_actions=num_actions, dim=dim,
                       hidden=hidden, rngs=nnx.Rngs(seed))
  graphdef, params = nnx.split(policy, nnx.Param)
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, min(100, steps // 10 + 1), steps, lr * 0.1),
                   weight_decay=1e-4)
  opt_state = tx.init(params)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, frames, targets):
    def loss_fn(p):
      logits = nnx.merge(graphdef, p)(frames)
      return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  stream = data_lib.batches(episodes, frame_index, labels, context=context, batch_size=batch_size, seed=seed)
  losses = []
  for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
    frames, targets = next(stream)
    params, opt_state, loss = step(params, opt_state, jnp.asarray(frames), jnp.asarray(targets, jnp.int32))
    losses.append(loss)
  tail = float(np.mean(jax.device_get(losses[-max(1, steps // 10):])))
  return nnx.merge(graphdef, params), tail
