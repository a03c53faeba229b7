"""The trainer on simulated CPU devices (2; the mesh test 8): learning, mesh equivalence, exact resume,
recovery from a killed save, NaN detection, and phase 2's tokenizer check."""
import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import tiny
from flax import nnx
from genie_jax.train import checkpoints, losses, state as state_lib, step as step_lib, trainer


def _config(data_dir, phase="tokenizer", name="sprites", **train):
  c = tiny.get_config(phase)
  c.data.update(name=name, data_dir=data_dir)
  c.train.update(steps=20, log_every=1, ckpt_every=10, image_every=0, batch_size=8)
  c.train.update(**train)
  return c


def _curve(workdir, key="loss"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r[key] for r in rows}


def _params(workdir, config):
  from genie_jax.models import build
  from genie_jax.train import state as state_lib
  tx = state_lib.make_optimizer(config.optim, config.train.steps)
  abstract = jax.eval_shape(lambda: state_lib.init_state(config, build.make_trainable, tx))
  ckpt = checkpoints.Checkpointer(workdir, async_save=False)
  state = ckpt.restore(ckpt.latest_step(), abstract)
  ckpt.close()
  return state


def test_tokenizer_loss_falls_on_coinrun(coinrun_dir, tmp_path):
  c = _config(coinrun_dir, name="coinrun", steps=40, log_every=5)
  trainer.train(c, str(tmp_path / "w"), progress=False)
  curve = _curve(str(tmp_path / "w"))
  assert curve[40] < 0.5 * curve[5]


@pytest.mark.eight_devices
def test_one_device_and_2x2x2_mesh_agree(sprites_dir, tmp_path):
  losses = []
  for i, mesh in enumerate([dict(data=1, fsdp=1, tensor=1, num_devices=1),
                            dict(data=2, fsdp=2, tensor=2, num_devices=8)]):
    c = _config(sprites_dir, steps=6, ckpt_every=100)
    c.mesh.update(mesh)
    trainer.train(c, str(tmp_path / f"m{i}"), progress=False)
    losses.append(_curve(str(tmp_path / f"m{i}")))
  np.testing.assert_allclose([losses[1][s] for s in range(1, 7)], [losses[0][s] for s in range(1, 7)],
                             rtol=2e-4)


def test_resume_is_bitwise_identical(sprites_dir, tmp_path):
  c = _config(sprites_dir, steps=20, ckpt_every=5)
  trainer.train(c, str(tmp_path / "full"), progress=False)
  trainer.train(c, str(tmp_path / "split"), progress=False, stop_after=7)  # "killed" at step 7
  assert checkpoints.Checkpointer(str(tmp_path / "split")).latest_step() == 7
  trainer.train(c, str(tmp_path / "split"), progress=False)
  full, split = _curve(str(tmp_path / "full")), _curve(str(tmp_path / "split"))
  assert [full[s] for s in range(1, 21)] == [split[s] for s in range(1, 21)]
  a, b = _params(str(tmp_path / "full"), c), _params(str(tmp_path / "split"), c)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_killed_mid_save_resumes_from_last_complete(sprites_dir, tmp_path):
  c = _config(sprites_dir, steps=10, ckpt_every=5)
  workdir = str(tmp_path / "w")
  trainer.train(c, workdir, progress=False)
  ckdir = os.path.join(workdir, "checkpoints")
  # what a save killed part-way leaves: Orbax's temporary folder, never renamed
  partial = os.path.join(ckdir, "15.orbax-checkpoint-tmp-1234")
  shutil.copytree(os.path.join(ckdir, "10"), partial)
  shutil.rmtree(os.path.join(partial, "state"))
  assert checkpoints.Checkpointer(workdir).latest_step() == 10
  c.train.steps = 15
  metrics = trainer.train(c, workdir, progress=False)
  assert metrics["step"] == 15 and checkpoints.Checkpointer(workdir).latest_step() == 15


def test_nonfinite_loss_stops_naming_the_step(sprites_dir, tmp_path):
  c = _config(sprites_dir, steps=6, ckpt_every=100)
  c.optim.update(lr=1e30, warmup_steps=0, grad_clip=1e30)
  with pytest.raises(trainer.NonFiniteLossError, match=r"at step \d+"):
    trainer.train(c, str(tmp_path / "w"), progress=False)


def test_phase2_trains_and_refuses_a_mismatched_tokenizer(sprites_dir, tmp_path):
  tok = _config(sprites_dir, steps=5, ckpt_every=5)
  trainer.train(tok, str(tmp_path / "tok"), progress=False)
  c = _config(sprites_dir, phase="lam_dynamics", steps=4, tokenizer_workdir=str(tmp_path / "tok"))
  metrics = trainer.train(c, str(tmp_path / "dyn"), progress=False)
  assert np.isfinite(metrics["dynamics_ce"]) and 0 <= metrics["dynamics_token_acc"] <= 1
  c.tokenizer.latent_dim = 8
  with pytest.raises(ValueError, match="tokenizer.latent_dim: 16"):
    trainer.train(c, str(tmp_path / "dyn2"), progress=False)
  c.train.tokenizer_workdir = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="config.json"):
    trainer.train(c, str(tmp_path / "dyn3"), progress=False)


def test_a_workdir_from_before_the_stacked_layout_is_refused_by_name(tmp_path):
  # config.json written by an older version: no scan_layers field, per-block parameters
  old = tiny.get_config("tokenizer").to_dict()
  del old["scan_layers"]
  with open(checkpoints.config_path(str(tmp_path)), "w") as f:
    json.dump(old, f)
  with open(checkpoints.config_path(str(tmp_path))) as f:
    written = f.read()
  with pytest.raises(ValueError, match="stacked each transformer's blocks on a 'layers' axis"):
    checkpoints.read_config(str(tmp_path))
  with pytest.raises(ValueError, match="'layers' axis"):  # resuming there is refused too
    trainer.train(tiny.get_config("tokenizer"), str(tmp_path), progress=False)
  with open(checkpoints.config_path(str(tmp_path))) as f:
    assert f.read() == written  # and its config.json is left as it was
  with pytest.raises(FileNotFoundError, match="has no config.json"):
    checkpoints.read_config(str(tmp_path / "missing"))


def test_one_frame_masking_masks_one_whole_past_frame_per_sample():
  tokens = jnp.zeros((64, 6, 16), jnp.int32)
  mask = np.asarray(losses.mask_tokens(jax.random.key(0), tokens, rate_min=0.5, rate_max=1.0,
                                       scheme="one_frame"))
  masked_frames = mask.any(axis=2)
  assert not masked_frames[:, 0].any()  # the prompt frame is never masked
  assert (masked_frames.sum(axis=1) == 1).all()  # one target frame, the rest whole
  assert set(np.argmax(masked_frames, axis=1)) == set(range(1, 6))  # any of frames 1..T-1
  rate = mask.sum(axis=(1, 2)) / 16
  assert rate.min() >= 0.1 and rate.mean() == pytest.approx(0.75, abs=0.1)
  every = np.asarray(losses.mask_tokens(jax.random.key(0), tokens, rate_min=0.5, rate_max=1.0))
  assert every[:, 1:].any(axis=2).mean() > 0.9  # the paper's scheme masks every frame
  with pytest.raises(ValueError, match="mask scheme"):
    losses.mask_tokens(jax.random.key(0), tokens, rate_min=0.5, rate_max=1.0, scheme="half")


def test_teacher_forced_masking_gives_each_frame_its_own_rate_and_whole_frames_on_demand():
  tokens = jnp.zeros((256, 6, 16), jnp.int32)
  mask = np.asarray(losses.mask_tokens(jax.random.key(0), tokens, rate_min=0.5, rate_max=1.0,
                                       scheme="teacher_forced", full_mask_prob=0.5))
  assert not mask[:, 0].any()  # the prompt frame is never a target
  rate = mask[:, 1:].mean(axis=2)  # [B, T-1]: one rate per frame, not per clip
  assert rate.min() >= 0.1 and np.mean(np.std(rate, axis=1)) > 0.05
  # whole: the half forced whole, plus those whose 16 draws all fell under a rate U(0.5, 1)
  assert np.mean(rate == 1.0) == pytest.approx(0.5 + 0.5 * 2 * (1 - 0.5 ** 17) / 17, abs=0.03)
  whole = np.asarray(losses.mask_tokens(jax.random.key(0), tokens, rate_min=0.5, rate_max=1.0,
                                        scheme="one_frame", full_mask_prob=1.0))
  assert (whole.sum(axis=(1, 2)) == 16).all()  # one target frame per clip, all of it masked


def test_true_action_control_feeds_the_dynamics_the_dataset_actions(sprites_dir):
  """With dynamics_actions="true" the dynamics loss depends on batch["actions"] (and with
  "lam" it does not): the switch that separates the dynamics model's faults from the LAM's."""
  from experiments import sprites
  from genie_jax.models import build as build_lib
  c = sprites.get_config("lam_dynamics")
  c.data.window = 4
  model = build_lib.make_trainable(c, nnx.Rngs(0))
  tok = build_lib.make_tokenizer(c, nnx.Rngs(1))
  frames = jax.random.randint(jax.random.key(0), (2, 4, 64, 64, 3), 0, 255).astype(jnp.uint8)
  batch = lambda acts: {"frames": frames, "actions": jnp.asarray(acts, jnp.int32)}
  kw = dict(tokenizer=tok, lam_weight=1.0, rate_min=0.5, rate_max=1.0, mask_scheme="one_frame")
  ce = {}
  for source in ("true", "lam"):
    for name, acts in (("a", [[1, 2, 3, 0]] * 2), ("b", [[4, 4, 1, 0]] * 2)):
      _, (metrics, _) = losses.lam_dynamics_loss(model, batch(acts), jax.random.key(3),
                                                 dynamics_actions=source, **kw)
      ce[source, name] = float(metrics["dynamics_ce"])
  assert ce["true", "a"] != ce["true", "b"]
  assert ce["lam", "a"] == ce["lam", "b"]
  with pytest.raises(ValueError, match="dynamics_actions"):
    losses.lam_dynamics_loss(model, batch([[0] * 4] * 2), jax.random.key(3), dynamics_actions="oracle", **kw)


def test_change_weighted_reconstruction_loss_against_numpy():
  """tokenizer.change_weight: pixels that differ from the frame before or after weigh 1 + w."""
  rng = np.random.default_rng(0)
  video = np.full((2, 3, 8, 8, 3), 0.3, np.float32)
  video[:, 1, 2:4, 2:4] = 0.9  # a square in frame 1 only: it moves in, then out
  recon = (video + rng.normal(0, 0.1, video.shape)).astype(np.float32)
  moving = np.zeros((2, 3, 8, 8), bool)
  moving[:, :, 2:4, 2:4] = True  # frames 0, 1, 2 all differ from a neighbour there
  np.testing.assert_array_equal(np.asarray(losses.moving_pixels(jnp.asarray(video))), moving)
  squared = np.mean((recon - video) ** 2, axis=-1)
  weight = 1 + 20.0 * moving
  want = np.sum(weight * squared) / np.sum(weight)
  got = losses.reconstruction_loss(jnp.asarray(recon), jnp.asarray(video), change_weight=20.0)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  plain = losses.reconstruction_loss(jnp.asarray(recon), jnp.asarray(video))
  np.testing.assert_allclose(float(plain), np.mean((recon - video) ** 2), rtol=1e-5)


def test_centre_focused_reconstruction_loss_against_numpy_and_refuses_a_bad_box():
  """lam.focus_weight: the focus_size x focus_size pixels at the centre weigh 1 + w, on top of
  change_weight's; the LAM's loss uses it and still reports the plain MSE."""
  rng = np.random.default_rng(1)
  video = rng.uniform(0, 1, (2, 3, 8, 10, 3)).astype(np.float32)
  recon = (video + rng.normal(0, 0.1, video.shape)).astype(np.float32)
  squared = np.mean((recon - video) ** 2, axis=-1)
  box = np.zeros((8, 10), bool)
  box[2:6, 3:7] = True  # a 4 x 4 box: rows (8 - 4) // 2 = 2.., columns (10 - 4) // 2 = 3..
  np.testing.assert_array_equal(np.asarray(losses.centre_box(8, 10, 4)), box)
  moving = np.asarray(losses.moving_pixels(jnp.asarray(video)))
  weight = 1 + 5.0 * moving + 7.0 * box
  want = np.sum(weight * squared) / np.sum(weight)
  got = losses.reconstruction_loss(jnp.asarray(recon), jnp.asarray(video), change_weight=5.0,
                                   focus_weight=7.0, focus_size=4)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  with pytest.raises(ValueError, match="focus_size 12"):
    losses.reconstruction_loss(jnp.asarray(recon), jnp.asarray(video), focus_weight=1.0, focus_size=12)

  class Out:  # what a LAM returns, as far as lam_loss reads it
    prediction, soft_prediction, vq_loss = jnp.asarray(recon[:, 1:]), None, jnp.zeros(())
  total, mse, _ = losses.lam_loss(Out, jnp.asarray(video), focus_weight=7.0, focus_size=4)
  target_squared = squared[:, 1:]
  focus = 1 + 7.0 * np.broadcast_to(box, target_squared.shape)
  np.testing.assert_allclose(float(total), np.sum(focus * target_squared) / np.sum(focus), rtol=1e-5)
  np.testing.assert_allclose(float(mse), np.mean(target_squared), rtol=1e-5)


def test_the_fsq_digit_loss_is_the_joint_loss():
  """Training takes the fsq_digits head's cross-entropy channel by channel; it must equal
  the cross-entropy and accuracy of the joint log-probabilities the sampler uses."""
  from genie_jax.models import dynamics as dynamics_lib
  levels = (4, 3, 5)
  model = dynamics_lib.DynamicsModel(num_codes=60, tokens_per_frame=4, max_frames=3, dim=16, num_layers=1,
                                     num_heads=2, num_actions=3, action_conditioning="token",
                                     rngs=nnx.Rngs(0), token_head="fsq_digits", code_levels=levels)
  tokens = jax.random.randint(jax.random.key(1), (5, 3, 4), 0, 60)
  mask = losses.mask_tokens(jax.random.key(2), tokens, rate_min=0.3, rate_max=1.0, scheme="teacher_forced")
  actions = dynamics_lib.frame_actions(jax.random.randint(jax.random.key(3), (5, 2), 0, 3), 3)
  joint = losses.dynamics_logits(model, tokens, mask, actions, scheme="teacher_forced")
  assert joint.shape[-1] == 60
  want = losses.masked_token_loss(joint, tokens, mask)
  got = losses.dynamics_token_loss(model, tokens, mask, actions, scheme="teacher_forced")
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  np.testing.assert_allclose(got[1], want[1])
  # the joint argmax is each channel's argmax: taken as the targets, every token is right
  per_channel = losses.dynamics_logits(model, tokens, mask, actions, scheme="teacher_forced", joint=False)
  assert per_channel.shape[-1] == sum(levels)
  best = jnp.argmax(joint, -1)
  assert float(losses.masked_token_loss(per_channel, best, mask, code_levels=levels)[1]) == 1.0


def test_dynamics_change_weight_against_numpy():
  """dynamics.change_weight: a masked token that differs from the frame before's weighs
  1 + w in the cross-entropy (normalised by the weights' sum); the accuracy stays the plain
  fraction of masked tokens right. Reference: a NumPy log-softmax, weights and means."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 3, (2, 4, 5))
  logits = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
  mask = rng.random((2, 4, 5)) < 0.7
  mask[:, 0] = False
  changed = np.zeros(tokens.shape, bool)
  changed[:, 1:] = tokens[:, 1:] != tokens[:, :-1]
  np.testing.assert_array_equal(losses.changed_tokens(jnp.asarray(tokens)), changed)
  log_p = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
  ce = -np.take_along_axis(log_p, tokens[..., None], -1)[..., 0]
  weight = mask * (1.0 + 9.0 * changed)
  got_ce, got_acc = losses.masked_token_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(mask),
                                             weight=jnp.asarray(1.0 + 9.0 * changed))
  np.testing.assert_allclose(float(got_ce), np.sum(weight * ce) / np.sum(weight), rtol=1e-5)
  np.testing.assert_allclose(float(got_acc), np.mean((np.argmax(logits, -1) == tokens)[mask]), rtol=1e-6)


def test_integer_cross_entropy_and_its_gradient_against_numpy():
  """-log softmax at the label, and its gradient softmax - one_hot (the one-hot form has
  no gather whose backward would be a scatter)."""
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(3, 4, 7)).astype(np.float32) * 3
  labels = rng.integers(0, 7, (3, 4))
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  np.testing.assert_allclose(losses.integer_cross_entropy(jnp.asarray(logits), jnp.asarray(labels)),
                             -np.log(np.take_along_axis(p, labels[..., None], -1)[..., 0]), rtol=1e-5, atol=1e-6)
  grad = jax.grad(lambda l: jnp.sum(losses.integer_cross_entropy(l, jnp.asarray(labels))))(jnp.asarray(logits))
  np.testing.assert_allclose(grad, p - np.eye(7)[labels], rtol=1e-5, atol=1e-6)


def test_per_model_clipping_scales_each_model_by_its_own_norm():
  """grad_clip_scope=per_model: each top-level subtree is scaled by min(1, c / its norm)
  (a NumPy formula), where the global scope scales all of them by the one total norm."""
  rng = np.random.default_rng(0)
  grads = {"lam": {"w": rng.normal(size=(3, 4)) * 0.01, "b": rng.normal(size=(4,)) * 0.01},
           "dynamics": {"w": rng.normal(size=(5, 6)) * 10.0}}
  grads = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), grads)
  optim = tiny.get_config("lam_dynamics").optim
  clip = 1.0
  def norm(tree):
    return np.sqrt(sum(np.sum(np.asarray(a, np.float64) ** 2) for a in jax.tree_util.tree_leaves(tree)))
  per = state_lib.clip_each_model_by_norm(clip)
  out, _ = per.update(grads, per.init(grads))
  for name in grads:
    scale = min(1.0, clip / norm(grads[name]))
    for key in grads[name]:
      np.testing.assert_allclose(out[name][key], np.asarray(grads[name][key]) * scale, rtol=1e-5)
  assert abs(norm(out["dynamics"]) - clip) < 1e-4 and norm(out["lam"]) < clip  # the LAM's left alone
  glob = optax.clip_by_global_norm(clip)
  out_global, _ = glob.update(grads, glob.init(grads))
  total = norm(grads)
  np.testing.assert_allclose(out_global["lam"]["w"], np.asarray(grads["lam"]["w"]) * clip / total, rtol=1e-5)
  # the optimizer takes the scope from the config, and names a typo
  optim.grad_clip_scope = "per_model"
  state_lib.make_optimizer(optim, 10).init(grads)
  optim.grad_clip_scope = "per_module"
  with pytest.raises(ValueError, match="grad_clip_scope"):
    state_lib.make_optimizer(optim, 10)


def test_lam_warmup_steps_train_the_lam_alone_then_both(sprites_dir):
  """train.lam_warmup_steps: before it, the dynamics model gets no gradient and the LAM the
  same gradient as with the dynamics term on (the actions reach the dynamics as discrete
  ids, so its loss never reaches the LAM); from it on, the dynamics model learns."""
  from experiments import sprites
  from genie_jax.models import build as build_lib
  c = sprites.get_config("lam_dynamics")
  c.data.window = 4
  c.train.lam_warmup_steps = 3
  model = build_lib.make_trainable(c, nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  tok_graphdef, frozen = nnx.split(build_lib.make_tokenizer(c, nnx.Rngs(1)))
  loss_fn = step_lib.make_loss_fn(c, graphdef, tok_graphdef)
  frames = jax.random.randint(jax.random.key(0), (2, 4, 64, 64, 3), 0, 255).astype(jnp.uint8)
  batch = {"frames": frames, "actions": jnp.zeros((2, 4), jnp.int32)}
  grad = jax.jit(jax.grad(lambda p, s: loss_fn(p, batch, jax.random.key(3), frozen, s)[0]))
  warm, on = grad(params, jnp.int32(2)), grad(params, jnp.int32(3))
  dyn_norm = lambda g: float(optax.tree.norm(nnx.to_pure_dict(g)["dynamics"]))
  assert dyn_norm(warm) == 0.0 and dyn_norm(on) > 0.0
  lam_warm, lam_on = nnx.to_pure_dict(warm)["lam"], nnx.to_pure_dict(on)["lam"]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), lam_warm, lam_on)
  assert float(optax.tree.norm(lam_warm)) > 0.0


def test_a_bad_record_stops_after_a_checkpoint_or_is_skipped_and_logged(bad_record_sprites_dir, tmp_path):
  from data_pipelines import bad_records
  c = _config(bad_record_sprites_dir, steps=6, ckpt_every=100)
  c.mesh.update(data=1, num_devices=1)  # compiles faster; the mesh is not what this tests
  workdir = str(tmp_path / "w")
  with pytest.raises(bad_records.BadRecordError, match=r"record \d+ of .*sprites-train") as e:
    trainer.train(c, workdir, progress=False)
  saved = int(re.search(r"saved step (\d+) to", str(e.value)).group(1))  # where the bad batch begins
  assert saved >= 1 and checkpoints.Checkpointer(workdir).latest_step() == saved
  c.data.on_bad_record = "skip"  # the same command with the switch resumes from that checkpoint
  metrics = trainer.train(c, workdir, progress=False)
  assert metrics["step"] == 6 and metrics["data_bad_records_skipped"] >= 1
  assert list(_curve(workdir)) == list(range(1, 7))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:  # the count is in the logs
    assert json.loads(f.readlines()[-1])["data_bad_records_skipped"] == metrics["data_bad_records_skipped"]


def test_a_resume_keeps_each_logged_step_once(tmp_path):
  """metrics.jsonl loses the killed run's steps after the resume step (and its cut-off
  line); TensorBoard gets a new event file that purges them from step + 1."""
  from tensorboardX.proto import event_pb2
  from genie_jax.train import logging
  workdir = str(tmp_path)
  first = logging.MetricWriter(workdir, start_step=0)
  for s in range(1, 11):
    first.scalars(s, {"loss": float(s)})
  first.close()
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 11, "lo')  # the kill cut this write short
  second = logging.MetricWriter(workdir, start_step=6)  # resumed from checkpoint 6
  second.scalars(7, {"loss": 70.0})
  second.close()
  assert _curve(workdir) == {**{s: float(s) for s in range(1, 7)}, 7: 70.0}

  def events(path):  # TFRecord framing: length (8), its crc (4), the event, its crc (4)
    data, out, i = open(path, "rb").read(), [], 0
    while i < len(data):
      n = int.from_bytes(data[i:i + 8], "little")
      out.append(event_pb2.Event.FromString(data[i + 12:i + 12 + n]))
      i += 16 + n
    return out
  tb = os.path.join(workdir, "tensorboard")
  files = sorted(os.listdir(tb), key=lambda name: name.endswith(".from6"))
  assert len(files) == 2 and files[1].endswith(".from6")  # a fresh file, the old one kept
  new = events(os.path.join(tb, files[1]))
  starts = [e.step for e in new if e.HasField("session_log") and e.session_log.status == event_pb2.SessionLog.START]
  assert starts == [7]  # TensorBoard drops the older files' events from step 7 on
  assert [(e.step, e.summary.value[0].simple_value) for e in new if e.HasField("summary")] == [(7, 70.0)]
