"""The Genie API, the Gymnasium environment and play (window under SDL's dummy driver, and
headless), on tiny real checkpoints; bad prompts and actions get errors that name them."""
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest


@pytest.fixture(scope="module")
def genie(tiny_world):
  from genie_jax.genie import Genie
  return Genie.load(tiny_world["world"], steps=3)


def _prompt(genie, size=None):
  h, w, _ = genie.frame_shape
  h, w = size or (h, w)
  return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rollout_shapes_slide_and_seed(genie):
  actions = [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]  # longer than the 8-frame window: the context slides
  frames = genie.rollout(_prompt(genie), actions, seed=3)
  assert frames.shape == (1, len(actions)) + genie.frame_shape and frames.dtype == np.uint8
  np.testing.assert_array_equal(frames, genie.rollout(_prompt(genie), actions, seed=3))
  batch = genie.rollout(np.stack([_prompt(genie)] * 2)[:, None], [[0, 1], [2, 3]], seed=3)
  assert batch.shape == (2, 2) + genie.frame_shape


def test_step_by_step_matches_the_recompute_path(tiny_world, genie):
  from genie_jax.genie import Genie
  slow = Genie.load(tiny_world["world"], steps=3, cached=False)
  s_fast, s_slow = genie.start(_prompt(genie)), slow.start(_prompt(genie))
  for i, a in enumerate([1, 0, 4]):
    s_fast, f_fast = genie.step(s_fast, a, seed=i)
    s_slow, f_slow = slow.step(s_slow, a, seed=i)
    np.testing.assert_array_equal(f_fast, f_slow)


def test_prompt_of_another_size_is_resized_with_a_warning(genie):
  with pytest.warns(UserWarning, match="resizing"):
    frames = genie.prompt_frames(_prompt(genie, size=(90, 160)))
  assert frames.shape == (1, 1) + genie.frame_shape


def test_bad_prompts_and_actions_are_named(genie, tmp_path):
  bad_file = tmp_path / "notes.png"
  bad_file.write_text("not an image")
  with pytest.raises(ValueError, match="notes.png"):
    genie.start(str(bad_file))
  with pytest.raises(FileNotFoundError, match="missing.png"):
    genie.start(str(tmp_path / "missing.png"))
  with pytest.raises(ValueError, match="not an image"):
    genie.start(np.zeros((5,), np.uint8))
  with pytest.raises(ValueError, match=r"latent action 7 is out of range.*0\.\.4"):
    genie.rollout(_prompt(genie), [0, 7])
  with pytest.raises(ValueError, match="latent action -1"):
    genie.step(genie.start(_prompt(genie)), -1)
  with pytest.raises(ValueError, match="integers"):
    genie.rollout(_prompt(genie), [0.5])


def test_load_names_a_missing_checkpoint(tmp_path):
  from genie_jax.genie import Genie
  with pytest.raises(FileNotFoundError, match="config.json"):
    Genie.load(str(tmp_path))


def test_gymnasium_env(genie):
  from gymnasium.utils.env_checker import check_env
  from genie_jax.env import GenieEnv
  env = GenieEnv(genie, prompt=_prompt(genie), max_episode_steps=3)
  check_env(env, skip_render_check=True)
  obs, _ = env.reset(seed=1)
  assert obs.shape == genie.frame_shape and env.observation_space.contains(obs)
  done, steps, first = False, 0, None
  while not done:
    action = env.action_space.sample()
    obs, reward, terminated, truncated, _ = env.step(action)
    first = (action, obs) if first is None else first
    steps, done = steps + 1, terminated or truncated
  assert steps == 3 and reward == 0.0
  env.reset(seed=1)  # seeded: the same first action gives the same frame
  np.testing.assert_array_equal(env.step(first[0])[0], first[1])
  with pytest.raises(ValueError, match="out of range"):
    env.step(5)


def test_play_window_headless_records_a_gif(genie, tmp_path):
  import pygame
  from genie_jax import play
  out = str(tmp_path / "session.gif")
  session = play.run_window(genie, _prompt(genie), scale=2, record=out, fps=5,
                            scripted_keys=[pygame.K_1, pygame.K_3, pygame.K_r, pygame.K_0])
  assert len(session) == 5  # prompt, 2 steps, restart, 1 step
  assert iio.imread(out, index=None).shape == (5, 128, 128, 3)


def test_play_command_writes_a_gif_and_refuses_bad_actions(tiny_world, tmp_path):
  out = str(tmp_path / "run.gif")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  cmd = [sys.executable, "-m", "genie_jax.play", "--workdir", tiny_world["world"], "--steps", "2"]
  done = subprocess.run(cmd + ["--actions", "0,3,3,1", "--out", out, "--scale", "1"], env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert iio.imread(out, index=None).shape[0] == 5  # the prompt frame + 4 generated
  bad = subprocess.run(cmd + ["--actions", "0,9", "--out", out], env=env, capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode != 0 and "latent action 9 is out of range" in bad.stderr


def test_play_refuses_an_unwritable_output_name_before_generating(tiny_world, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  done = subprocess.run([sys.executable, "-m", "genie_jax.play", "--workdir", tiny_world["world"],
                         "--actions", "0", "--out", str(tmp_path / "run.avi")], env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode != 0 and "choose a .gif or .mp4" in done.stderr
  assert not os.listdir(tmp_path)


def test_the_genie_api_does_not_import_the_training_loop():
  """genie.py restores models through train/checkpoints.py; the trainer (which imports the
  evaluation, which imports genie.py) and the data loader's packages (absent on the lent
  GPU machines) must stay out of an inference-only import."""
  code = ("import sys, genie_jax.genie; print(sorted(m for m in sys.modules if m.startswith(("
          "'genie_jax.train.trainer', 'genie_jax.evals', 'grain', 'tensorflow_datasets', 'data_pipelines'))))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=os.path.dirname(os.path.dirname(__file__)))
  assert out.stdout.strip() == "[]", out.stdout

