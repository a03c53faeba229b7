"""The networks against independent references: NumPy attention, causality, isolation of
frames in spatial attention, cache == recompute, VQ nearest code and straight-through
gradient, dead-code re-seeding, the action off-by-one, the paper's parameter counts."""
import contextlib
import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import coinrun, platformers, sprites, tiny
from genie_jax import params as param_counts
from genie_jax.models import build, dynamics, layers, patching, quantizer, view_shift
from genie_jax.models import attention
from genie_jax.models import lam as lam_lib
from genie_jax.models import st_transformer as st_transformer_lib
from genie_jax.models.st_transformer import STBlock, STTransformer


def _np_attention(q, k, v, causal):
  logits = np.einsum("bqnh,bknh->bnqk", q, k) / np.sqrt(q.shape[-1])
  if causal:
    logits = np.where(np.tril(np.ones(logits.shape[-2:], bool)), logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return np.einsum("bnqk,bknh->bqnh", w, v)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_numpy(causal):
  q, k, v = np.random.default_rng(0).normal(size=(3, 2, 5, 4, 8)).astype(np.float32)
  got = attention.attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), causal=causal)
  np.testing.assert_allclose(got, _np_attention(q, k, v, causal), rtol=1e-5, atol=1e-5)


def _stack(layers=2):
  return STTransformer(dim=32, num_layers=layers, num_heads=4, rngs=nnx.Rngs(0))


def test_temporal_causality():
  model = _stack()
  x = jax.random.normal(jax.random.key(1), (2, 6, 5, 32))
  t = 3
  y = model(x)
  y2 = model(x.at[:, t + 1:].add(jax.random.normal(jax.random.key(2), x[:, t + 1:].shape)))
  np.testing.assert_allclose(y[:, :t + 1], y2[:, :t + 1], atol=1e-6)
  assert not np.allclose(y[:, t + 1:], y2[:, t + 1:])


def test_spatial_attention_stays_within_a_frame():
  block = STBlock(32, 4, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (1, 4, 6, 32))
  x2 = x.at[:, 2, 0].add(jax.random.normal(jax.random.key(2), (32,)))  # change one token of frame 2
  y, y2 = block._spatial(x), block._spatial(x2)
  changed = np.abs(np.asarray(y2 - y)).max(axis=(0, 2, 3)) > 1e-6
  np.testing.assert_array_equal(changed, [False, False, True, False])
  assert np.abs(np.asarray(y2 - y)[:, 2, 1:]).max() > 1e-6  # other tokens of that frame see it


def test_scanned_stack_equals_a_loop_over_its_blocks():
  """The stack scans over stacked block parameters; applying each layer's slice in turn
  is the reference. The Python-loop path (scan_layers=False) and remat change how XLA
  runs it, not the values or the gradients."""
  model = _stack(3)
  x = jax.random.normal(jax.random.key(1), (2, 4, 5, 32))
  graphdef, params = nnx.split(model.blocks)
  h = x
  for layer in range(3):
    h = nnx.merge(graphdef, jax.tree.map(lambda a: a[layer], params))(h)
  expected = model.final_norm(h)

  def loss(m):
    return jnp.sum(jnp.sin(m(x)))

  grads = None
  for scan_layers, remat in ((True, "none"), (False, "none"), (True, "full"), (False, "dots"), (True, "qkv"),
                            (True, "temporal_kv"), (True, "offload_temporal_qkv")):
    model.scan_layers, model.remat = scan_layers, remat
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)
    g = jax.tree.leaves(nnx.grad(loss)(model))
    for a, b in zip(g, grads or g):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)  # float32 reassociation
    grads = grads or g


@pytest.mark.parametrize("remat,names", [
    ("temporal_kv", {"temporal_k", "temporal_v"}),
    ("temporal_qkv", {"temporal_q", "temporal_k", "temporal_v"}),
    ("qkv", {f"{part}_{x}" for part in ("spatial", "temporal") for x in "qkv"}),
    ("full", set()),
])
def test_remat_policies_keep_exactly_the_projections_they_name(remat, names):
  """What a block's backward reads from its forward under each policy (jax's own list of
  saved residuals): the named q/k/v projections, and nothing named for `full`."""
  block = STBlock(32, 2, rngs=nnx.Rngs(0))
  policy = st_transformer_lib.REMAT_POLICIES[remat]
  graphdef, params = nnx.split(block)
  x = jax.random.normal(jax.random.key(0), (1, 3, 4, 32))
  f = jax.checkpoint(lambda p, x: jnp.sum(nnx.merge(graphdef, p)(x)), policy=policy)
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    jax.ad_checkpoint.print_saved_residuals(f, params, x)
  assert set(re.findall(r"named '([a-z_]+)'", printed.getvalue())) == names


def test_cached_step_equals_full_forward():
  model = _stack(3)
  x = jax.random.normal(jax.random.key(1), (2, 5, 4, 32))
  full = model(x)
  _, cache = model(x[:, :4], return_kv=True)
  pad = lambda a: jnp.pad(a, ((0, 0), (0, 0), (0, 3), (0, 0), (0, 0), (0, 0)))  # T_max = 7
  y, frame_cache = model.step(x[:, 4:5], type(cache)(pad(cache.k), pad(cache.v)), jnp.int32(4))
  np.testing.assert_allclose(y, full[:, 4:5], rtol=2e-5, atol=2e-5)
  _, all_cache = model(x, return_kv=True)
  np.testing.assert_allclose(frame_cache.k, all_cache.k[:, :, 4:5], rtol=2e-5, atol=2e-5)


def test_quantizer_forward_is_nearest_code_by_cosine():
  vq = quantizer.VectorQuantizer(num_codes=16, code_dim=8, rngs=nnx.Rngs(0))
  z = np.random.default_rng(1).normal(size=(5, 7, 8)).astype(np.float32)
  out = vq(jnp.asarray(z))
  codes = np.asarray(vq.codebook[...])
  cos = (z / np.linalg.norm(z, axis=-1, keepdims=True)) @ (codes / np.linalg.norm(codes, axis=-1, keepdims=True)).T
  np.testing.assert_array_equal(out.indices, cos.argmax(-1))
  expected = codes[cos.argmax(-1)] / np.linalg.norm(codes[cos.argmax(-1)], axis=-1, keepdims=True)
  np.testing.assert_allclose(out.quantized, expected, atol=1e-5)


def test_quantizer_gradient_passes_straight_through():
  vq = quantizer.VectorQuantizer(num_codes=16, code_dim=8, rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.key(3), (4, 8))
  c = jax.random.normal(jax.random.key(4), (4, 8))
  grad_vq = jax.grad(lambda z: jnp.sum(c * vq(z).quantized))(z)
  # the same function with the quantization removed: only the L2 normalisation remains
  grad_ref = jax.grad(lambda z: jnp.sum(c * z / jnp.linalg.norm(z, axis=-1, keepdims=True)))(z)
  np.testing.assert_allclose(grad_vq, grad_ref, rtol=1e-4, atol=1e-5)


def test_dead_codes_are_reseeded():
  codebook = jnp.arange(12.0).reshape(4, 3)
  counts = quantizer.code_usage(jnp.array([0, 0, 2]), 4)
  np.testing.assert_array_equal(counts, [2, 0, 1, 0])
  age = quantizer.update_code_age(jnp.array([5, 9, 0, 2]), counts)
  np.testing.assert_array_equal(age, [0, 10, 0, 3])
  candidates = jnp.full((6, 3), -1.0)
  new, new_age = quantizer.reseed_dead_codes(codebook, age, candidates, jax.random.key(0), max_age=3)
  np.testing.assert_array_equal(new[np.array([1, 3])], -np.ones((2, 3)))     # dead: re-seeded
  np.testing.assert_array_equal(new[np.array([0, 2])], codebook[np.array([0, 2])])     # alive: kept
  np.testing.assert_array_equal(new_age, [0, 0, 0, 0])
  assert float(quantizer.perplexity(jnp.array([5, 5, 5, 5]))) == pytest.approx(4.0)
  assert float(quantizer.perplexity(jnp.array([9, 0, 0, 0]))) == pytest.approx(1.0)


def _tiny_dynamics(mode):
  """mode: the action conditioning, "+previous" adding the previous-frame input."""
  cfg = tiny.get_config("lam_dynamics")
  cfg.dynamics.action_conditioning = mode.removesuffix("+previous")
  cfg.dynamics.previous_frame = mode.endswith("+previous")
  return build.make_dynamics(cfg, nnx.Rngs(0)), cfg


def test_frame_actions_alignment():
  a = jnp.array([[3, 1, 4]])
  np.testing.assert_array_equal(dynamics.frame_actions(a, 5), [[5, 3, 1, 4]])


DYNAMICS_MODES = ["additive", "token", "token+previous"]


@pytest.mark.parametrize("mode", DYNAMICS_MODES)
def test_action_t_affects_frame_t_plus_1_only(mode):
  """a_t (x_t -> x_t+1) must change the prediction of z_t+1 and nothing before it."""
  model, _ = _tiny_dynamics(mode)
  s = model.tokens_per_frame
  tokens = jax.random.randint(jax.random.key(0), (1, 5, s), 0, model.num_codes)
  a = jnp.array([[0, 1, 2, 3]])
  t = 2
  logits = model(tokens, dynamics.frame_actions(a, model.num_actions))
  logits2 = model(tokens, dynamics.frame_actions(a.at[0, t].set(4), model.num_actions))
  diff = np.abs(np.asarray(logits2 - logits)).max(axis=(0, 2, 3))
  assert (diff[:t + 1] < 1e-6).all() and diff[t + 1] > 1e-4


@pytest.mark.parametrize("mode", DYNAMICS_MODES)
def test_dynamics_step_equals_full_forward(mode):
  model, _ = _tiny_dynamics(mode)
  s = model.tokens_per_frame
  tokens = jax.random.randint(jax.random.key(0), (2, 4, s), 0, model.num_codes + 1)
  actions = jax.random.randint(jax.random.key(1), (2, 4), 0, model.num_actions + 1)
  full = model(tokens, actions)
  cache = model.encode_context(tokens[:, :3], actions[:, :3])
  pad = lambda c: jnp.pad(c, ((0, 0), (0, 0), (0, 5), (0, 0), (0, 0), (0, 0)))
  logits, _ = model.step(tokens[:, 3:], actions[:, 3:], type(cache)(pad(cache.k), pad(cache.v)), jnp.int32(3),
                         previous=tokens[:, 2:3])
  np.testing.assert_allclose(logits, full[:, 3:], rtol=1e-4, atol=1e-4)


def test_previous_frame_input_reads_only_the_same_place_one_frame_back():
  """With previous_frame, frame t's first layer sees frame t-1's token at its own place:
  changing one token of frame 1 changes frame 2's logits at once, even with no temporal
  path (a model whose blocks never mix time would not); and a step without it is refused."""
  model, _ = _tiny_dynamics("token+previous")
  s = model.tokens_per_frame
  tokens = jax.random.randint(jax.random.key(0), (1, 4, s), 0, model.num_codes)
  actions = jnp.zeros((1, 4), jnp.int32)
  embedded = model._embed(tokens, actions, 0)
  changed = model._embed(tokens.at[0, 1, 3].set((tokens[0, 1, 3] + 1) % model.num_codes), actions, 0)
  diff = np.abs(np.asarray(changed - embedded)).max(-1)[0]  # [T, S']: where the inputs moved
  assert diff[1, 3] > 0 and diff[2, 3] > 0  # the token itself, and the same place one frame on
  diff[1, 3] = diff[2, 3] = 0
  assert np.all(diff == 0)  # nowhere else, frame 3 included
  cache = model.encode_context(tokens[:, :3], actions[:, :3])
  with pytest.raises(ValueError, match="previous"):
    model.step(tokens[:, 3:], actions[:, 3:], cache, jnp.int32(3))


@pytest.mark.parametrize("mode", DYNAMICS_MODES)
def test_teacher_forced_frame_t_equals_sampling_from_the_true_past(mode):
  """Frame t of the teacher-forced pass must be what the full forward gives for the clip
  [true frames < t, masked frame t] at t, i.e. what sampling sees, for every t at once."""
  model, _ = _tiny_dynamics(mode)
  s = model.tokens_per_frame
  tokens = jax.random.randint(jax.random.key(0), (2, 4, s), 0, model.num_codes)
  masked = jnp.where(jax.random.uniform(jax.random.key(1), tokens.shape) < 0.6, model.mask_id, tokens)
  actions = jax.random.randint(jax.random.key(2), (2, 4), 0, model.num_actions + 1)
  forced = model.teacher_forced(tokens, masked, actions)
  for t in range(4):
    clip = jnp.concatenate([tokens[:, :t], masked[:, t:t + 1]], axis=1)
    np.testing.assert_allclose(forced[:, t], model(clip, actions[:, :t + 1])[:, t], rtol=1e-4, atol=1e-4)


def test_fsq_digit_head_is_a_normalised_distribution_over_codes():
  cfg = sprites.get_config("lam_dynamics")
  cfg.dynamics.token_head = "fsq_digits"
  cfg.tokenizer.update(fsq_levels=(8, 5, 5, 5), num_codes=1000)  # a joint table small enough to compare
  model = build.make_dynamics(cfg, nnx.Rngs(0))
  from genie_jax.models.fsq import FiniteScalarQuantizer
  fsq = FiniteScalarQuantizer(levels=cfg.tokenizer.fsq_levels)
  # the digit table names each code's FSQ values, as the quantizer decodes them
  digits = dynamics.code_digits(cfg.tokenizer.fsq_levels)
  half = np.asarray(fsq.half_width)
  np.testing.assert_allclose((digits - half) / half, fsq.lookup(jnp.arange(fsq.num_codes)))
  s = model.tokens_per_frame
  tokens = jax.random.randint(jax.random.key(0), (1, 3, s), 0, model.num_codes + 1)
  logp = model(tokens, jnp.zeros((1, 3), jnp.int32))
  assert logp.shape[-1] == fsq.num_codes
  np.testing.assert_allclose(jax.scipy.special.logsumexp(logp, axis=-1), 0.0, atol=1e-4)
  # codes that share a digit share that channel's log-probability: log p(k) = sum_i log p_i
  d = digits[:, 0]
  diff = np.asarray(logp[0, 1, 0])[d == 0][:, None] - np.asarray(logp[0, 1, 0])[d == 1][None]
  same_rest = np.all(digits[d == 0][:, None, 1:] == digits[d == 1][None, :, 1:], axis=-1)
  assert np.ptp(diff[same_rest]) < 1e-4  # one constant: log p_0(0) - log p_0(1)
  with pytest.raises(ValueError, match="fsq_digits"):
    cfg.tokenizer.quantizer = "vq"
    build.make_dynamics(cfg, nnx.Rngs(0))


def test_frame_encoder_tokens_do_not_depend_on_the_past():
  cfg = sprites.get_config("tokenizer")
  video = jax.random.uniform(jax.random.key(0), (1, 4, 64, 64, 3))
  other_past = video.at[:, :2].set(jax.random.uniform(jax.random.key(1), (1, 2, 64, 64, 3)))
  cfg.tokenizer.encoder = "frame"
  tok = build.make_tokenizer(cfg, nnx.Rngs(0))
  tokens = tok.encode(video)
  np.testing.assert_array_equal(tokens[:, 2:], tok.encode(other_past)[:, 2:])
  np.testing.assert_array_equal(tokens[:, 3], tok.encode(video[:, 3:])[:, 0])
  # the paper's video encoder reads the past: a different past changes later latents
  cfg.tokenizer.encoder = "video"
  tok = build.make_tokenizer(cfg, nnx.Rngs(0))
  assert not np.allclose(tok(video).latents[:, 2:], tok(other_past).latents[:, 2:])


def test_patch_encoder_token_is_a_function_of_its_own_pixels():
  cfg = sprites.get_config("tokenizer")
  cfg.tokenizer.update(encoder="patch", enc_blocks=1, dec_blocks=1)
  tok = build.make_tokenizer(cfg, nnx.Rngs(0))
  video = jax.random.uniform(jax.random.key(0), (1, 2, 64, 64, 3))
  tokens = np.asarray(tok.encode(video))
  # repaint everything but the patch at token (2, 3) of frame 1: that token stays, others move
  other = jax.random.uniform(jax.random.key(1), (1, 2, 64, 64, 3))
  kept = other.at[:, 1, 16:24, 24:32].set(video[:, 1, 16:24, 24:32])
  other_tokens = np.asarray(tok.encode(kept))
  assert other_tokens[0, 1, 2, 3] == tokens[0, 1, 2, 3]
  assert np.mean(other_tokens != tokens) > 0.5
  # the same pixels anywhere in the frame, at any time, give the same token
  moved = video.at[:, 0, 40:48, 0:8].set(video[:, 1, 16:24, 24:32])
  assert np.asarray(tok.encode(moved))[0, 0, 5, 0] == tokens[0, 1, 2, 3]


def test_tokenizer_pixel_head_and_refinement():
  """out_hidden and refine_channels: every new parameter is named; the refinement starts at
  zero (the output is the patch head's first 3 channels); a pixel's correction reads only
  the 5x5 pixels around it (two 3x3 convolutions), checked against a perturbation."""
  cfg = sprites.get_config("tokenizer")
  cfg.tokenizer.update(out_hidden=32, refine_channels=4, enc_blocks=1, dec_blocks=1)
  tok = build.make_tokenizer(cfg, nnx.Rngs(0))
  for path, var in jax.tree.leaves_with_path(nnx.state(tok, nnx.Param),
                                             is_leaf=lambda x: isinstance(x, nnx.Variable)):
    names = var.get_metadata().get("out_sharding")
    assert names is not None and len(names) == len(var.get_value().shape), path
  latents = jax.random.uniform(jax.random.key(0), (1, 2, 64, tok.quantizer.code_dim), minval=-1, maxval=1)
  x = tok.decoder(tok.dec_pos(tok.from_latent(latents)))
  head = patching.unpatchify(tok.patch_out(jax.nn.gelu(tok.patch_hidden(x))), patch=8, height=64,
                             width=64, channels=7)
  np.testing.assert_allclose(tok._decode_latents(latents), head[..., :3], atol=1e-6)
  # with a non-zero output convolution, perturb one pixel's features and see how far it reaches
  tok.refine_out.kernel.set_value(jax.random.normal(jax.random.key(1), (3, 3, 4, 3)))
  flat = head.reshape(-1, 64, 64, 7)
  refine = lambda f: tok.refine_out(jax.nn.gelu(tok.refine_in(f)))
  changed = np.abs(np.asarray(refine(flat.at[:, 30, 40, 5].add(1.0)) - refine(flat))).max(axis=(0, 3)) > 0
  rows, cols = np.nonzero(changed)
  assert rows.min() == 28 and rows.max() == 32 and cols.min() == 38 and cols.max() == 42


def test_lam_action_depends_only_on_its_two_frames_and_past():
  cfg = tiny.get_config("lam_dynamics")
  lam = build.make_lam(cfg, nnx.Rngs(0))
  video = jax.random.uniform(jax.random.key(0), (2, 6, 64, 64, 3))
  out = lam(video)
  assert out.actions.shape == (2, 5) and out.prediction.shape == (2, 5, 64, 64, 3)
  latents = lam(video.at[:, 4:].set(0.0)).latents  # change x_5, x_6 (0-based 4, 5)
  # a_0..a_2 (transitions up to x_3 -> x_4) cannot see frames 4 and 5
  np.testing.assert_allclose(latents[:, :3], out.latents[:, :3], atol=1e-5)
  assert not np.allclose(latents[:, 3], out.latents[:, 3])


def test_fsq_codes_round_trip_and_use_every_level():
  from genie_jax.models.fsq import FiniteScalarQuantizer
  q = FiniteScalarQuantizer(levels=(8, 5, 3))
  assert q.num_codes == 120
  z = 4.0 * jax.random.normal(jax.random.key(0), (20000, 3))
  out = q(z)
  assert len(np.unique(out.indices)) == 120  # every level combination is reachable
  np.testing.assert_array_equal(q.lookup(out.indices), out.quantized)  # index <-> code
  # each channel takes exactly L evenly spaced values in [-1, 1]
  for channel, levels in enumerate((8, 5, 3)):
    values = np.unique(np.asarray(out.quantized[:, channel]))
    assert len(values) == levels and values.min() >= -1 and values.max() <= 1
    np.testing.assert_allclose(np.diff(values), values[1] - values[0], rtol=1e-6)
  # straight-through: the gradient is that of the bounding (tanh), not of the rounding (0)
  grad = jax.grad(lambda v: jnp.sum(q(v).quantized))(jnp.zeros((1, 3)))
  assert np.all(np.asarray(grad) > 0)
  with pytest.raises(ValueError, match="product of the levels"):
    quantizer.make_quantizer(kind="fsq", num_codes=100, latent_dim=3, fsq_levels=(8, 5, 3),
                             rngs=nnx.Rngs(0))


def test_categorical_quantizer_is_a_straight_through_one_hot_with_a_usage_loss():
  q = quantizer.make_quantizer(kind="categorical", num_codes=4, latent_dim=0, fsq_levels=(), rngs=nnx.Rngs(0))
  logits = jnp.array([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
  out = q(logits)
  np.testing.assert_array_equal(out.indices, [0, 2])
  np.testing.assert_allclose(out.quantized, np.eye(4)[[0, 2]], atol=1e-6)  # the value is the one-hot
  # the gradient is the softmax's: it reaches the logits of codes that were not chosen
  grad = jax.grad(lambda z: jnp.sum(q(z).quantized * jnp.arange(4.0)))(logits)
  p = np.asarray(jax.nn.softmax(logits))
  np.testing.assert_allclose(grad, p * (np.arange(4.0) - (p * np.arange(4.0)).sum(-1, keepdims=True)), atol=1e-6)
  # usage loss: 0 when the batch's mean softmax is uniform, weight * log K when one code takes all
  assert float(q(jnp.zeros((3, 4))).loss) == pytest.approx(0.0, abs=1e-6)
  assert float(q(jnp.array([[50.0, 0, 0, 0]] * 3)).loss) == pytest.approx(0.01 * np.log(4), rel=1e-3)
  # a LAM built from a config weighs the term by its lam.usage_weight
  cfg = sprites.get_config("lam_dynamics")
  cfg.lam.usage_weight = 0.003
  lam_q = build.make_lam(cfg, nnx.Rngs(0)).quantizer
  one_code = jnp.array([[50.0] + [0.0] * (lam_q.num_codes - 1)] * 3)
  assert float(lam_q(one_code).loss) == pytest.approx(0.003 * np.log(lam_q.num_codes), rel=1e-3)
  cfg.lam.usage_weight = -0.01
  with pytest.raises(ValueError, match="usage_weight"):
    build.make_lam(cfg, nnx.Rngs(0))


def test_lam_reading_change_gives_no_change_the_zero_latent():
  cfg = sprites.get_config("lam_dynamics")
  assert cfg.lam.encoder_input == "change"
  cfg.lam.quantizer = "vq"  # its `latents` are the encoder's (the categorical's are probabilities)
  lam = build.make_lam(cfg, nnx.Rngs(0))
  still = jnp.broadcast_to(jax.random.uniform(jax.random.key(0), (1, 1, 64, 64, 3)), (2, 5, 64, 64, 3))
  moving = jax.random.uniform(jax.random.key(1), (2, 5, 64, 64, 3))
  # a clip in which nothing changes is "standing still" whatever it shows
  np.testing.assert_allclose(lam(still).latents, 0.0, atol=1e-5)
  assert float(jnp.abs(lam(moving).latents).max()) > 1e-3
  # causal as before: changing frames 4.. leaves a_0..a_2 alone
  out, later = lam(moving), lam(moving.at[:, 4:].set(0.0))
  np.testing.assert_allclose(later.latents[:, :3], out.latents[:, :3], atol=1e-5)


@pytest.mark.parametrize("encoder_input", ["frames", "change"])
def test_lam_transition_context_reads_each_action_from_its_two_frames(encoder_input):
  cfg = sprites.get_config("lam_dynamics")
  cfg.lam.update(dim=32, enc_blocks=1, dec_blocks=1, num_heads=2)  # small: eager forwards, wiring only
  cfg.lam.update(encoder_context="transition", encoder_input=encoder_input)
  lam = build.make_lam(cfg, nnx.Rngs(0))
  video = jax.random.uniform(jax.random.key(0), (2, 5, 64, 64, 3))
  latents = lam(video).latents
  for frame in range(5):  # changing x_f moves a_f-1 and a_f (the transitions it is in), nothing else
    other = lam(video.at[:, frame].set(0.5)).latents
    moved = np.abs(np.asarray(other - latents)).max(axis=(0, 2)) > 1e-5
    np.testing.assert_array_equal(moved, [t in (frame - 1, frame) for t in range(4)])


def test_random_shift_rolls_each_clip_by_one_offset_for_all_its_frames():
  video = jax.random.uniform(jax.random.key(0), (4, 3, 8, 8, 3))
  shifted = np.asarray(lam_lib.random_shift(video, jax.random.key(1)))
  offsets = []
  for clip, out in zip(np.asarray(video), shifted):
    found = [(r, c) for r in range(8) for c in range(8)
             if np.array_equal(np.roll(clip, (r, c), axis=(1, 2)), out)]
    assert len(found) == 1  # one circular shift explains every frame of the clip
    offsets.append(found[0])
  assert len(set(offsets)) > 1  # each clip draws its own


def test_lam_encoder_shift_reads_a_shifted_clip_in_training_and_the_clip_itself_in_inference():
  cfg = sprites.get_config("lam_dynamics")
  cfg.lam.update(dim=32, enc_blocks=1, dec_blocks=1, num_heads=2)  # small: eager forwards, wiring only
  assert cfg.lam.encoder_shift
  lam = build.make_lam(cfg, nnx.Rngs(0))
  video = jax.random.uniform(jax.random.key(0), (4, 4, 64, 64, 3))
  key = jax.random.key(3)
  trained = lam(video, shift_rng=key)
  np.testing.assert_array_equal(trained.actions, lam.infer_actions(lam_lib.random_shift(video, key)))
  np.testing.assert_array_equal(lam(video).actions, lam.infer_actions(video))  # no rng: unshifted
  assert not np.array_equal(trained.actions, lam(video).actions)
  # the decoder still predicts the clip as it is: from the unshifted x_t (its zero output
  # layer copies x_t)
  np.testing.assert_allclose(trained.prediction, video[:, :-1], atol=1e-6)


def test_categorical_offset_gives_standing_still_a_code_of_its_own():
  q = quantizer.make_quantizer(kind="categorical", num_codes=4, latent_dim=0, fsq_levels=(), rngs=nnx.Rngs(0))
  q.offset[...] = jnp.array([0.0, 0.0, 1.0, 0.0])
  np.testing.assert_array_equal(q(jnp.zeros((3, 4))).indices, [2, 2, 2])  # latent 0 -> argmax of the offset
  np.testing.assert_array_equal(q(jnp.array([[0.0, 2.0, 0.0, 0.0]])).indices, [1])


def test_lam_soft_decoding_agrees_with_the_hard_one_when_the_code_is_certain_and_joins_the_loss():
  from genie_jax.train import losses
  cfg = sprites.get_config("lam_dynamics")
  assert cfg.lam.quantizer == "categorical" and cfg.lam.soft_weight > 0
  lam = build.make_lam(cfg, nnx.Rngs(0))
  kernel = lam.patch_out.kernel
  kernel[...] = 0.05 * jax.random.normal(jax.random.key(1), kernel[...].shape)  # the code matters
  video = jax.random.uniform(jax.random.key(0), (2, 4, 64, 64, 3))
  unsure = lam(video, soft=True)
  assert not np.allclose(unsure.soft_prediction, unsure.prediction, atol=1e-4)  # probabilities != one-hot
  lam.quantizer.offset[...] = jnp.array([60.0, 0, 0, 0, 0])  # every probability on code 0
  sure = lam(video, soft=True)
  np.testing.assert_array_equal(sure.actions, 0)
  np.testing.assert_allclose(sure.soft_prediction, sure.prediction, atol=1e-5)
  assert lam(video).soft_prediction is None
  # the objective: MSE + weight * soft MSE + the quantizer's loss
  target = np.asarray(video[:, 1:])
  mse = np.mean((np.asarray(unsure.prediction) - target) ** 2)
  soft = np.mean((np.asarray(unsure.soft_prediction) - target) ** 2)
  loss, got_mse, got_soft = losses.lam_loss(unsure, video, soft_weight=0.5)
  np.testing.assert_allclose([got_mse, got_soft], [mse, soft], rtol=1e-5)
  np.testing.assert_allclose(loss, mse + 0.5 * soft + float(unsure.vq_loss), rtol=1e-5)


def test_lam_null_prediction_ignores_the_encoder_and_joins_the_loss():
  """null=True (lam.null_weight) also decodes with no action: a prediction from the frames
  alone, so the encoder's weights cannot change it while they change the LAM's own."""
  from genie_jax.train import losses
  cfg = sprites.get_config("lam_dynamics")
  cfg.lam.update(dim=32, enc_blocks=1, dec_blocks=1, num_heads=2)
  lam = build.make_lam(cfg, nnx.Rngs(0))
  lam.patch_out.kernel[...] = 0.05 * jax.random.normal(jax.random.key(1), lam.patch_out.kernel[...].shape)
  video = jax.random.uniform(jax.random.key(0), (2, 4, 64, 64, 3))
  first = lam(video, null=True)
  assert lam(video).null_prediction is None
  lam.to_latent.kernel[...] = 3.0 * jax.random.normal(jax.random.key(2), lam.to_latent.kernel[...].shape)
  second = lam(video, null=True)
  assert not np.array_equal(first.actions, second.actions)  # another encoder: other codes
  assert not np.allclose(first.prediction, second.prediction, atol=1e-4)
  np.testing.assert_allclose(first.null_prediction, second.null_prediction, atol=1e-6)
  # the objective: MSE + weight * the no-action prediction's MSE + the quantizer's loss
  target = np.asarray(video[:, 1:])
  mse = np.mean((np.asarray(second.prediction) - target) ** 2)
  null = np.mean((np.asarray(second.null_prediction) - target) ** 2)
  loss, got_mse, _ = losses.lam_loss(second, video, null_weight=0.5)
  np.testing.assert_allclose(got_mse, mse, rtol=1e-5)
  np.testing.assert_allclose(loss, mse + 0.5 * null + float(second.vq_loss), rtol=1e-5)
  with pytest.raises(ValueError, match="null=True"):
    losses.lam_loss(lam(video), video, null_weight=0.5)


def test_lam_predicting_the_change_starts_from_the_previous_frame():
  cfg = sprites.get_config("lam_dynamics")
  cfg.lam.update(dim=32, enc_blocks=1, dec_blocks=1, num_heads=2)  # small: eager forwards, wiring only
  lam = build.make_lam(cfg, nnx.Rngs(0))  # its zero output layer says "no change"
  video = jax.random.uniform(jax.random.key(0), (2, 4, 64, 64, 3))
  np.testing.assert_allclose(lam(video).prediction, video[:, :-1], atol=1e-6)  # copying is free


@pytest.mark.parametrize("height,width,patch", [(64, 64, 4), (90, 160, 4), (90, 160, 16)])
def test_patchify_round_trip(height, width, patch):
  video = jax.random.uniform(jax.random.key(0), (1, 2, height, width, 3))
  x = patching.patchify(video, patch)
  h, w = patching.token_grid(height, width, patch)
  assert x.shape == (1, 2, h * w, patch * patch * 3)
  np.testing.assert_array_equal(patching.unpatchify(x, patch=patch, height=height, width=width), video)


def test_tokenizer_encode_decode_shapes_at_160x90():
  cfg = tiny.get_config("tokenizer")
  cfg.data.update(height=90, width=160)
  tok = build.make_tokenizer(cfg, nnx.Rngs(0))
  video = (np.random.default_rng(0).random((1, 3, 90, 160, 3)) * 255).astype(np.uint8)
  tokens = tok.encode(video)
  assert tokens.shape == (1, 3, 12, 20) and tokens.dtype == jnp.int32
  assert tok.decode(tokens).shape == (1, 3, 90, 160, 3)
  with pytest.raises(ValueError, match="expects video"):
    tok.encode(video[:, :, :64])


def test_every_parameter_has_logical_axis_names():
  cfg = tiny.get_config("lam_dynamics")
  for make in (build.make_tokenizer, build.make_lam, build.make_dynamics):
    state = nnx.state(nnx.eval_shape(lambda: make(cfg, nnx.Rngs(0))), nnx.Param)
    for path, var in jax.tree.leaves_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable)):
      names = var.get_metadata().get("out_sharding")
      assert names is not None and len(names) == len(var.get_value().shape), path


@pytest.mark.parametrize("module", [tiny, coinrun, platformers, sprites], ids=lambda m: m.__name__)
def test_every_config_variant_builds(module):
  """Each file.py:variant names shapes the models accept (built abstractly, no memory)."""
  for variant in module.VARIANTS:
    config = module.get_config(variant)
    if module is platformers:  # tokenizer and LAM are the same in every variant (and take
      # seconds each at these sizes): test_paper_parameter_counts counts them once
      counts = {"dynamics": param_counts.count_params(build.make_dynamics, config)}
    else:
      counts = param_counts.all_counts(config)
    assert all(n > 0 for n in counts.values()), (variant, counts)
  with pytest.raises(ValueError, match="unknown variant 'lam_dynamic'"):
    module.get_config("lam_dynamic")


def _analytic_st_params(dim, blocks, heads_x_head_dim=None):
  """Per ST block: 2 attentions (q,k,v,out + out bias + 2 QK-norm scales) + MLP + 3 LayerNorms."""
  inner = heads_x_head_dim or dim
  return blocks * (2 * (4 * dim * inner + dim) + 2 * dim * 4 * dim + 4 * dim + dim + 3 * 2 * dim)


def test_paper_parameter_counts():
  counts = param_counts.all_counts(platformers.get_config("dynamics_11b"))
  assert abs(counts["dynamics"] / 10.1e9 - 1) < 0.10
  assert abs(counts["tokenizer"] / 200e6 - 1) < 0.10
  # the LAM at the paper's stated shapes (20+20 layers = 10+10 blocks, d1024): count the
  # transformer weights analytically and check the rest is only embeddings and heads
  lam_core = 2 * _analytic_st_params(1024, 10)
  assert 0 < counts["lam"] - lam_core < 0.01 * lam_core
  dyn_core = _analytic_st_params(5120, 24, heads_x_head_dim=36 * 128)
  assert 0 < counts["dynamics"] - dyn_core < 0.01 * dyn_core


def test_take_rows_equals_a_gather_and_its_gradient_the_scatter_it_replaces():
  table = jax.random.normal(jax.random.key(0), (11, 5))
  ids = jax.random.randint(jax.random.key(1), (3, 7), 0, 11)  # repeats: rows gather several gradients
  weights = jax.random.normal(jax.random.key(2), (3, 7, 5))
  np.testing.assert_array_equal(layers.take_rows(table, ids), np.asarray(table)[np.asarray(ids)])
  got = jax.grad(lambda t: jnp.sum(weights * layers.take_rows(t, ids)))(table)
  want = np.zeros((11, 5))  # NumPy's scatter-add of each row's cotangent
  np.add.at(want, np.asarray(ids).reshape(-1), np.asarray(weights).reshape(-1, 5))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("num_codes", [12, layers.ONE_HOT_MAX_ROWS + 5])  # one-hot sum; scatter beyond
def test_code_usage_counts_like_bincount(num_codes):
  ids = np.random.default_rng(0).integers(0, num_codes, (4, 6, 5))
  np.testing.assert_array_equal(quantizer.code_usage(jnp.asarray(ids), num_codes),
                                np.bincount(ids.ravel(), minlength=num_codes))


def test_take_rows_of_a_large_table_keeps_the_scatter_gradient():
  table = jax.random.normal(jax.random.key(0), (layers.ONE_HOT_MAX_ROWS + 5, 3))
  ids = jax.random.randint(jax.random.key(1), (40,), 0, table.shape[0])
  weights = jax.random.normal(jax.random.key(2), (40, 3))
  got = jax.grad(lambda t: jnp.sum(weights * layers.take_rows(t, ids)))(table)
  want = np.zeros(table.shape)
  np.add.at(want, np.asarray(ids), np.asarray(weights))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_frame_shift_reads_whole_and_fractional_moves_of_a_view():
  """A view cut from a larger random image at two offsets: the shift between them is the
  offset (a known value), whole pixels exactly; a half-pixel move (the mean of two
  neighbouring crops) reads as half a pixel to within a tenth; labels by direction."""
  rng = np.random.default_rng(0)
  world = (rng.random((3, 96, 96, 3)) * 255).astype(np.uint8)
  first = world[:, 16:80, 16:80]
  moves = [(-2, 3), (0, 0), (5, -4)]
  second = np.stack([world[i, 16 - dy:80 - dy, 16 - dx:80 - dx] for i, (dy, dx) in enumerate(moves)])
  np.testing.assert_allclose(view_shift.frame_shift(first, second), np.array(moves, float), atol=0.02)
  # any leading axes: [B, T, H, W, C] pairs
  np.testing.assert_allclose(view_shift.frame_shift(first[None], second[None])[0], np.array(moves, float), atol=0.02)
  half = (world[:1, 16:80, 15:79].astype(np.float64) + world[:1, 16:80, 16:80]) / 2  # content 0.5 px right
  measured = view_shift.frame_shift(first[:1].astype(np.float64), half)[0]
  assert abs(measured[0]) < 0.1 and abs(measured[1] - 0.5) < 0.1, measured
  np.testing.assert_array_equal(view_shift.direction_labels(np.array([-1.0, -0.1, 0.0, 0.3, 2.0])), [0, 1, 1, 2, 2])
  with pytest.raises(ValueError, match="one shape"):
    view_shift.frame_shift(first, second[:, :32])


def test_shift_frames_moves_content_by_whole_and_fractional_pixels():
  """A whole-pixel shift is np.roll, a fractional one moves each wave of a picture by as much
  (known values)."""
  rng = np.random.default_rng(2)
  frames = rng.random((2, 3, 16, 20, 3)).astype(np.float32)
  whole = np.broadcast_to(np.array([3.0, -5.0], np.float32), (2, 3, 2))
  np.testing.assert_allclose(view_shift.shift_frames(jnp.asarray(frames), jnp.asarray(whole)),
                             np.roll(frames, (3, -5), axis=(2, 3)), atol=1e-5)
  # a fractional move of a sum of whole-period waves is each wave's phase moved: exact
  yy, xx = np.mgrid[:32, :32].astype(np.float32)
  wave = lambda dy, dx: np.cos(2 * np.pi * 2 * (yy - dy) / 32) + np.sin(2 * np.pi * 3 * (xx - dx) / 32)  # noqa: E731
  moved = view_shift.shift_frames(jnp.asarray(wave(0, 0)[..., None]), jnp.asarray([0.4, -1.3]))
  np.testing.assert_allclose(moved[..., 0], wave(0.4, -1.3), atol=1e-4)
  with pytest.raises(ValueError, match="shift_frames"):
    view_shift.shift_frames(jnp.asarray(frames), jnp.zeros((2, 2)))


def test_lam_decoder_scroll_tells_the_decoder_the_views_move_from_zero():
  """decoder_scroll: "current" hands the decoder view_shift's move x_t -> x_t+1, "previous"
  the move before it (none for the first transition); the layer starts at zero, so a fresh
  model predicts as without it, and it learns (a gradient reaches it)."""
  from genie_jax.train import losses
  rng = np.random.default_rng(0)
  world = (rng.random((2, 112, 112, 3)) * 255).astype(np.uint8)
  offsets = [(0, 0), (2, 0), (5, -1), (7, -3)]  # the view's top-left in each frame
  video = np.stack([np.stack([w[24 + r:88 + r, 24 + c:88 + c] for r, c in offsets]) for w in world])
  moves = -np.diff(np.array(offsets, float), axis=0)  # content moves against the view
  cfg = sprites.get_config("lam_dynamics")
  cfg.lam.update(dim=32, enc_blocks=1, dec_blocks=1, num_heads=2)  # small: eager forwards, wiring only
  plain = build.make_lam(cfg, nnx.Rngs(0))
  models = {}
  for mode in ("current", "previous"):
    cfg.lam.decoder_scroll = mode
    models[mode] = build.make_lam(cfg, nnx.Rngs(0))
  np.testing.assert_allclose(models["current"].scroll(video), np.broadcast_to(moves, (2, 3, 2)), atol=0.05)
  np.testing.assert_allclose(models["previous"].scroll(video)[:, 1:], models["current"].scroll(video)[:, :-1])
  np.testing.assert_array_equal(models["previous"].scroll(video)[:, 0], 0.0)
  assert plain.scroll(video) is None
  frames = video.astype(np.float32) / 255.0
  np.testing.assert_allclose(models["current"](frames).prediction, plain(frames).prediction, atol=1e-6)
  # "warp": a fresh model (its change and the scroll's layer start at zero) predicts x_t moved
  # by the view's move, which matches x_t+1 away from the edges that wrap, where x_t does not
  cfg.lam.decoder_scroll = "warp"
  warp = build.make_lam(cfg, nnx.Rngs(0))
  np.testing.assert_allclose(warp.scroll(video), models["current"].scroll(video))
  inner = (slice(None), slice(None), slice(8, 56), slice(8, 56))
  warped_error = np.abs(np.asarray(warp(frames).prediction) - frames[:, 1:])[inner].mean()
  still_error = np.abs(np.asarray(plain(frames).prediction) - frames[:, 1:])[inner].mean()
  assert warped_error < 0.02 < 0.2 < still_error, (warped_error, still_error)

  lam = models["current"]
  lam.patch_out.kernel[...] = 0.05 * jax.random.normal(jax.random.key(1), lam.patch_out.kernel[...].shape)
  graphdef, params = nnx.split(lam, nnx.Param)
  grads = jax.jit(jax.grad(  # compiled: an eager gradient of the LAM takes half a minute here
      lambda p: losses.lam_loss(nnx.merge(graphdef, p)(jnp.asarray(frames)), jnp.asarray(frames))[0]))(params)
  assert float(jnp.abs(grads["scroll_in"]["kernel"][...]).sum()) > 0
  with pytest.raises(ValueError, match="scroll=lam.scroll"):
    lam.decode(lam._patches(frames), jnp.zeros((2, 3, lam.quantizer.code_dim)))  # pylint: disable=protected-access
  cfg.lam.decoder_scroll = "later"
  with pytest.raises(ValueError, match="decoder_scroll"):
    build.make_lam(cfg, nnx.Rngs(0))
