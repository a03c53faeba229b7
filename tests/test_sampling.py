"""MaskGIT decoding and the frame cache: the cosine schedule, cache == recompute (same rng)
including the slide past the training window, and a model trained to obey its actions."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from genie_jax import sampling
from genie_jax.models import dynamics as dynamics_lib
from genie_jax.models.dynamics import DynamicsModel
from genie_jax.train import losses


def _dynamics(seed=0, window=5, tokens=6, codes=16, actions=3, conditioning="token", dim=32,
              previous_frame=False):
  return DynamicsModel(num_codes=codes, tokens_per_frame=tokens, max_frames=window, dim=dim,
                       num_layers=2, num_heads=4, num_actions=actions,
                       action_conditioning=conditioning, rngs=nnx.Rngs(seed), previous_frame=previous_frame)


@pytest.mark.parametrize("num_tokens,steps", [(16, 25), (920, 25), (6, 4), (5, 8)])
def test_schedule_is_cosine_and_unmasks_everything_by_the_last_step(num_tokens, steps):
  mask_id, seen = num_tokens + 7, []

  def logits_fn(tokens):  # records how many tokens are still masked when each step starts
    jax.debug.callback(lambda c: seen.append(np.asarray(c)), jnp.sum(tokens == mask_id, -1))
    return jnp.zeros(tokens.shape + (mask_id,))

  out = jax.jit(lambda rng: sampling.maskgit_decode(
      logits_fn, rng, batch=2, num_tokens=num_tokens, mask_id=mask_id, steps=steps,
      temperature=1.0, gumbel_scale=1.0))(jax.random.PRNGKey(0))
  jax.effects_barrier()
  assert not np.any(np.asarray(out) == mask_id)  # nothing left masked
  counts = [int(c[0]) for c in seen]
  # the count before step i is the cosine schedule after step i-1, never below "one more per step"
  expected = [num_tokens]
  for i in range(steps - 1):
    cosine = math.floor(num_tokens * math.cos(math.pi / 2 * (i + 1) / steps))
    expected.append(max(0, min(cosine, expected[-1] - 1)))
  assert counts == expected
  assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_greedy_decoding_picks_the_argmax():
  logits = jax.random.normal(jax.random.PRNGKey(3), (2, 7, 11))
  out = sampling.maskgit_decode(lambda t: logits, jax.random.PRNGKey(0), batch=2, num_tokens=7,
                                mask_id=11, steps=5, temperature=0.0, gumbel_scale=0.0)
  np.testing.assert_array_equal(out, np.argmax(np.asarray(logits), -1))


def _joint_log_probs(channel_logits: np.ndarray, levels) -> np.ndarray:
  """NumPy reference: [..., sum(levels)] per-channel logits -> [..., prod(levels)] joint
  log-probabilities, code k having digit (k // prod(levels[:i])) % levels[i] in channel i."""
  out, start, stride = 0.0, 0, 1
  codes = np.arange(int(np.prod(levels)))
  for level in levels:
    logits = channel_logits[..., start:start + level]
    log_p = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    out = out + log_p[..., (codes // stride) % level]
    start, stride = start + level, stride * level
  return out


def test_digit_sampling_is_the_joint_distribution():
  levels = (2, 3)
  logits = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (3, 5))) * 2.0  # 3 tokens
  joint = _joint_log_probs(logits, levels)  # [3, 6]
  greedy, greedy_log_p = sampling.sample_codes(jnp.asarray(logits), jax.random.PRNGKey(0),
                                               temperature=0.0, code_levels=levels)
  np.testing.assert_array_equal(greedy, joint.argmax(-1))
  np.testing.assert_allclose(greedy_log_p, joint.max(-1), atol=1e-5)
  # drawn at temperature 1, the codes' frequencies are the joint softmax
  draws = jax.vmap(lambda k: sampling.sample_codes(jnp.asarray(logits), k, temperature=1.0,
                                                   code_levels=levels)[0])(
      jax.random.split(jax.random.PRNGKey(1), 20_000))
  freq = np.stack([np.bincount(np.asarray(draws)[:, t], minlength=6) / 20_000 for t in range(3)])
  np.testing.assert_allclose(freq, np.exp(joint), atol=0.015)


def test_digit_head_rollout_equals_the_joint_head_path():
  """The fsq_digits head samples channel by channel; greedily that is the argmax of the
  joint log-probabilities the model also gives (dynamics._logits with joint=True)."""
  levels = (4, 3)
  dyn = DynamicsModel(num_codes=12, tokens_per_frame=6, max_frames=4, dim=32, num_layers=1,
                      num_heads=4, num_actions=3, action_conditioning="token", rngs=nnx.Rngs(2),
                      token_head="fsq_digits", code_levels=levels)
  prompt = jax.random.randint(jax.random.PRNGKey(0), (2, 2, 6), 0, 12)
  state = sampling.init_state(dyn, prompt, jnp.array([[3, 1], [3, 2]]), max_frames=4)
  action = jnp.array([0, 2])
  _, frame = sampling.next_frame(dyn, state, action, jax.random.PRNGKey(1), steps=1,
                                 temperature=0.0, gumbel_scale=0.0)
  masked = jnp.full((2, 1, 6), dyn.mask_id, jnp.int32)
  joint, _ = dyn.step(masked, action[:, None], state.cache, state.length)  # joint=True
  np.testing.assert_array_equal(frame, np.argmax(np.asarray(joint[:, 0]), -1))


@pytest.mark.parametrize("conditioning,previous_frame", [("token", False), ("additive", False), ("token", True)])
def test_cached_and_recomputed_decoding_agree_through_the_slide(conditioning, previous_frame):
  window, frames_out = 5, 9  # 2 prompt frames + 9 new ones: the context slides 6 times
  dyn = _dynamics(conditioning=conditioning, window=window, previous_frame=previous_frame)
  rng = jax.random.PRNGKey(1)
  prompt = jax.random.randint(rng, (2, 2, 6), 0, 16)
  prompt_actions = jnp.array([[3, 1], [3, 2]])
  actions = jax.random.randint(jax.random.PRNGKey(2), (2, frames_out), 0, 3)
  kw = dict(steps=6, temperature=1.0, gumbel_scale=1.0)

  @functools.partial(jax.jit, static_argnums=0)
  def run(cached):
    state = sampling.init_state(dyn, prompt, prompt_actions, max_frames=window, cached=cached)
    return sampling.rollout(dyn, state, actions, jax.random.PRNGKey(5), **kw)

  cached_state, cached_tokens = run(True)
  recomputed_state, recomputed_tokens = run(False)
  np.testing.assert_array_equal(cached_tokens, recomputed_tokens)
  assert int(cached_state.length) == window
  # the buffer holds the last `window` frames, the oldest with "no action"
  np.testing.assert_array_equal(cached_state.tokens, cached_tokens[:, -window:])
  np.testing.assert_array_equal(cached_state.actions[:, 0], 3)
  np.testing.assert_array_equal(cached_state.actions[:, 1:], actions[:, -window + 1:])
  # the incrementally built cache equals encoding the final context from scratch
  fresh = dyn.encode_context(cached_state.tokens, cached_state.actions)
  np.testing.assert_allclose(cached_state.cache.k, fresh.k, atol=2e-5)
  np.testing.assert_allclose(cached_state.cache.v, fresh.v, atol=2e-5)


def _obeying_rule(tokens, action, codes):
  return (tokens + action) % codes  # each action shifts every token's code by its id


def test_actions_change_the_rollout_of_a_model_trained_to_obey_them():
  codes, num_actions, tokens, window = 8, 3, 4, 4
  model = _dynamics(seed=0, window=window, tokens=tokens, codes=codes, actions=num_actions, dim=48)
  graphdef, params = nnx.split(model)
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  def batch(key):
    k1, k2 = jax.random.split(key)
    first = jax.random.randint(k1, (32, 1, tokens), 0, codes)
    acts = jax.random.randint(k2, (32, window - 1), 0, num_actions)
    frames = [first[:, 0]]
    for t in range(window - 1):
      frames.append(_obeying_rule(frames[-1], acts[:, t:t + 1], codes))
    return jnp.stack(frames, 1), acts

  @jax.jit
  def train_step(params, opt_state, key):
    seq, acts = batch(key)
    def loss_fn(p):
      m = nnx.merge(graphdef, p)
      mask = losses.mask_tokens(jax.random.fold_in(key, 1), seq, rate_min=0.5, rate_max=1.0)
      logits = m(jnp.where(mask, m.mask_id, seq), dynamics_lib.frame_actions(acts, num_actions))
      return losses.masked_token_loss(logits, seq, mask)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  for i in range(400):
    params, opt_state, loss = train_step(params, opt_state, jax.random.PRNGKey(i))
  assert float(loss) < 0.2, f"the rule was not learned (loss {float(loss):.3f})"

  model = nnx.merge(graphdef, params)
  prompt = jax.random.randint(jax.random.PRNGKey(99), (1, 1, tokens), 0, codes)
  kw = dict(steps=4, temperature=1.0, gumbel_scale=1.0)
  rollouts = {}
  for a in range(num_actions):
    state = sampling.init_state(model, prompt, jnp.full((1, 1), num_actions), max_frames=window)
    _, out = sampling.rollout(model, state, jnp.full((1, 6), a), jax.random.PRNGKey(0), **kw)
    expected, frame = [], prompt[:, 0]
    for _ in range(6):
      frame = _obeying_rule(frame, a, codes)
      expected.append(frame)
    accuracy = float(jnp.mean(out == jnp.stack(expected, 1)))
    assert accuracy > 0.9, f"action {a}: rollout follows the rule for only {accuracy:.0%} of tokens"
    rollouts[a] = np.asarray(out)
  assert not np.array_equal(rollouts[0], rollouts[1]) and not np.array_equal(rollouts[1], rollouts[2])


def test_speed_switches_give_the_same_frames_and_leave_the_model_as_it_was():
  """config.sampling's unroll / cast_weights / unroll_layers change how a frame is computed,
  not its values: a bf16 model's rollout through the slide (where the weight casts and the
  layer scan run inside the MaskGIT loop) gives the same tokens with each, the cast view's
  logits are bitwise those of the model, and the caller's module keeps its float32 weights
  and its scan."""
  window = 4
  dyn = DynamicsModel(num_codes=16, tokens_per_frame=6, max_frames=window, dim=32, num_layers=2, num_heads=4,
                      num_actions=3, action_conditioning="token", rngs=nnx.Rngs(3), dtype=jnp.bfloat16)
  prompt = jax.random.randint(jax.random.PRNGKey(0), (2, 2, 6), 0, 16)
  actions = jax.random.randint(jax.random.PRNGKey(2), (2, 5), 0, 3)
  kw = dict(steps=4, temperature=1.0, gumbel_scale=1.0)

  @functools.partial(jax.jit, static_argnums=(0, 1, 2))
  def run(unroll, cast_weights, unroll_layers):
    state = sampling.init_state(dyn, prompt, jnp.array([[3, 1], [3, 2]]), max_frames=window)
    return sampling.rollout(dyn, state, actions, jax.random.PRNGKey(5), unroll=unroll, cast_weights=cast_weights,
                            unroll_layers=unroll_layers, **kw)[1]

  reference = np.asarray(run(False, False, False))
  for switches in [(True, False, False), (False, True, True)]:  # cast alone: the bitwise logits below
    np.testing.assert_array_equal(run(*switches), reference, err_msg=f"unroll, cast_weights, unroll_layers = {switches}")

  state = sampling.init_state(dyn, prompt, jnp.array([[3, 1], [3, 2]]), max_frames=window)
  masked = jnp.full((2, 1, 6), dyn.mask_id, jnp.int32)
  view = sampling.inference_view(dyn, cast_weights=True)
  logits, _ = dyn.step(masked, actions[:, :1], state.cache, state.length)
  view_logits, _ = view.step(masked, actions[:, :1], state.cache, state.length)
  np.testing.assert_array_equal(view_logits, logits)
  kernels = [m.kernel[...] for _, m in nnx.iter_modules(view) if isinstance(m, sampling._CAST_AT_CALL)]
  assert kernels and all(k.dtype == jnp.bfloat16 for k in kernels)
  originals = [m.kernel[...] for _, m in nnx.iter_modules(dyn) if isinstance(m, sampling._CAST_AT_CALL)]
  assert all(k.dtype == jnp.float32 for k in originals)
  assert dyn.transformer.scan_layers and not sampling.inference_view(dyn, unroll_layers=True).transformer.scan_layers
