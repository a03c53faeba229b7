"""Does a dynamics model obey the actions it is given? Trained on the sprite world's TRUE
actions over its occupancy tokens (data_pipelines.sprites.occupancy_tokens, an exact
function of where the sprite is, no tokenizer to learn), then scored on held-out clips:
next-frame accuracy on the tokens a move changes, with the true actions and with random
ones; and ΔtPSNR in pixels: held-out clips rolled out from their first frame with those
actions and with random ones, each generated frame decoded to the sprite position whose
occupancy it matches best (sprite_world.positions_from_occupancy) and painted over its
episode's background. It isolates the dynamics model and its training (masking,
conditioning) from the tokenizer and the LAM, in about two minutes on CPU. Used by
tests/test_world_control.py and `python scripts/dynamics_probe.py --tokens occupancy`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from data_pipelines import sprites as sprite_world
from genie_jax import sampling
from genie_jax.evals import image_metrics, world_eval
from genie_jax.models import build, dynamics as dynamics_lib
from genie_jax.train import lam_control, losses, state as state_lib

WINDOW, PATCH = 4, 8
SPRITE = 12  # lam_control.sprite_clips: the default sprite world
MAX_PSNR = 20 * np.log10(255.0)  # 48.13 dB: an MSE of one 8-bit level squared


def _clips(first_seed: int, episodes: int):
  """(occupancy tokens int32 [N, WINDOW, 64], lam_control.Clips) of random-policy episodes."""
  clips = lam_control.sprite_clips(first_seed, episodes, WINDOW, episode_steps=4 * WINDOW)
  return sprite_world.occupancy_tokens(clips.positions, patch=PATCH), clips


def token_accuracies(predicted: np.ndarray, tokens: np.ndarray):
  """predicted int [B, T-1, S] next frames, tokens int [B, T, S] -> (accuracy on all tokens,
  on the tokens that change, of copying the previous frame, the share that changes)."""
  target, previous = tokens[:, 1:], tokens[:, :-1]
  changed = target != previous
  return (float(np.mean(predicted == target)), float(np.mean(predicted[changed] == target[changed])),
          float(np.mean(previous == target)), float(np.mean(changed)))


def make_dynamics_step(config, graphdef, tx):
  """The dynamics model alone, on given actions: a jitted (params, opt_state, tokens int
  [B, T, S], transition actions int [B, T-1], key) -> (params, opt_state, CE, accuracy)
  with the config's masking (scripts/dynamics_probe.py uses it too)."""
  d = config.dynamics

  def loss_fn(params, tokens, actions, key):
    model = nnx.merge(graphdef, params)
    mask = losses.mask_tokens(key, tokens, rate_min=d.mask_rate_min, rate_max=d.mask_rate_max,
                              scheme=d.mask_scheme, full_mask_prob=d.get("full_mask_prob", 0.0))
    return losses.dynamics_token_loss(model, tokens, mask, dynamics_lib.frame_actions(actions, model.num_actions),
                                      scheme=d.mask_scheme, change_weight=d.get("change_weight", 0.0))

  @jax.jit
  def step(params, opt_state, tokens, actions, key):
    (ce, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, tokens, actions, key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, ce, acc
  return step


def _changed_token_accuracy(dyn, tokens, actions):
  predicted = np.asarray(sampling.next_frame_predictions(
      dyn, jnp.asarray(tokens), dynamics_lib.frame_actions(jnp.asarray(actions), dyn.num_actions)))
  return token_accuracies(predicted, tokens)[1]


def rollout_psnr(model, tokens: np.ndarray, actions: np.ndarray, clips: lam_control.Clips, *, sampling_config,
                 seed: int = 0) -> np.ndarray:
  """PSNR float [N, WINDOW - 1] of each clip's frames 1.. against the model's rollout from its
  first frame's tokens with `actions` (int [N, WINDOW - 1]), decoded to pixels through the
  sprite position each generated frame's tokens match best; at most MAX_PSNR."""
  n = len(tokens)
  state = sampling.init_state(model, jnp.asarray(tokens[:, :1]), jnp.full((n, 1), model.num_actions, jnp.int32),
                              max_frames=WINDOW)
  _, rolled = sampling.rollout(model, state, jnp.asarray(actions, jnp.int32), jax.random.key(seed),
                               steps=sampling_config.steps, temperature=sampling_config.temperature,
                               gumbel_scale=sampling_config.gumbel_scale)
  positions = sprite_world.positions_from_occupancy(np.asarray(rolled), patch=PATCH)  # [N, WINDOW - 1, 2]
  looks = {int(s): sprite_world.episode_look(seed=int(s)) for s in np.unique(clips.seeds)}  # clips share episodes
  painted = np.stack([np.stack([sprite_world.paint(*looks[int(s)], pos, sprite=SPRITE) for pos in clip_positions])
                      for s, clip_positions in zip(clips.seeds, positions)])
  truth = clips.frames[:, 1:].astype(np.float32) / 255.0
  psnr = np.asarray(image_metrics.psnr(truth, painted.astype(np.float32) / 255.0))
  # a sprite put exactly where it is paints the frame exactly (MSE 0): count it as an error
  # of one 8-bit level, so one exact clip does not outweigh the rest
  return np.minimum(psnr, MAX_PSNR)


def train_and_measure(config, *, steps: int = 600, batch_size: int = 16, seed: int = 0,
                      action_source=None) -> dict:
  """config: a lam_dynamics config (its dynamics, optim and sampling fields are used) -> on 64
  held-out clips, with the given actions and with random ones: accuracy on the tokens a
  move changes ("changed_accuracy", "random_changed_accuracy") and the rollouts' PSNR at
  the last frame, t = WINDOW - 1 ("psnr", "psnr_random", their per-clip difference
  "delta_psnr" and its 95% interval "delta_psnr_ci95").

  The actions, in training and in the held-out score, are the true ones, or, with
  `action_source` (frames uint8 [N, T, H, W, 3] -> int [N, T-1], e.g. a trained LAM's
  codes), what it reads off the clips: then this measures LAM + dynamics together.
  """
  c = config.copy_and_resolve_references()
  c.data.window = WINDOW
  c.tokenizer.update(quantizer="vq", num_codes=(PATCH + 1) ** 2, patch=PATCH)  # occupancy codes
  c.dynamics.token_head = "joint"
  train_tokens, train_clips = _clips(0, 150)
  val_tokens, val_clips = _clips(10_000, 16)
  train_actions, val_actions = train_clips.actions, val_clips.actions
  if action_source is not None:
    train_actions = np.asarray(action_source(train_clips.frames), np.int32)
    val_actions = np.asarray(action_source(val_clips.frames), np.int32)
  dyn = build.make_dynamics(c, nnx.Rngs(seed))
  graphdef, params = nnx.split(dyn, nnx.Param)
  tx = state_lib.make_optimizer(c.optim, steps, one_model=True)  # the dynamics model alone
  opt_state = tx.init(params)
  step = make_dynamics_step(c, graphdef, tx)
  rng = np.random.default_rng(seed)
  for i in range(steps):
    idx = rng.integers(0, len(train_tokens), size=batch_size)
    params, opt_state, _, _ = step(params, opt_state, jnp.asarray(train_tokens[idx]),
                                   jnp.asarray(train_actions[idx]), jax.random.key(i))
  model = nnx.merge(graphdef, params)
  random_actions = rng.integers(0, model.num_actions, size=val_actions.shape).astype(np.int32)
  psnr = {name: rollout_psnr(model, val_tokens, acts, val_clips, sampling_config=c.sampling)[:, -1]
          for name, acts in (("given", val_actions), ("random", random_actions))}
  delta, delta_ci = world_eval.mean_ci(psnr["given"] - psnr["random"])
  return {"changed_accuracy": _changed_token_accuracy(model, val_tokens, val_actions),
          "random_changed_accuracy": _changed_token_accuracy(model, val_tokens, random_actions),
          "psnr": float(psnr["given"].mean()), "psnr_random": float(psnr["random"].mean()),
          "delta_psnr": delta, "delta_psnr_ci95": delta_ci}
