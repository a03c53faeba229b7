"""A Gymnasium environment whose world is a trained Genie model.

    env = GenieEnv(Genie.load(workdir), prompt="start.png", max_episode_steps=64)
    obs, info = env.reset(seed=0)                      # or env.reset(prompt=other_image)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

Observations are the generated frames (uint8 [H, W, 3]); actions are the model's latent
actions (Discrete(A)). A world model predicts frames, not rewards: the reward is 0 and
episodes end only by truncation after `max_episode_steps`; wrap the env to add a reward.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np


class GenieEnv(gym.Env):
  metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

  def __init__(self, genie, prompt=None, *, max_episode_steps: int | None = None,
               render_mode: str | None = "rgb_array"):
    if render_mode not in (None, "rgb_array"):
      raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
    self.genie = genie
    self.prompt = prompt
    self.max_episode_steps = max_episode_steps
    self.render_mode = render_mode
    self.action_space = gym.spaces.Discrete(genie.num_actions)
    self.observation_space = gym.spaces.Box(0, 255, genie.frame_shape, np.uint8)
    self._state = None
    self._frame = None
    self._steps = 0

  def reset(self, prompt=None, *, seed: int | None = None, options: dict | None = None):
    """Starts from `prompt` (or options["prompt"], or the constructor's prompt)."""
    super().reset(seed=seed)
    prompt = prompt if prompt is not None else (options or {}).get("prompt", self.prompt)
    if prompt is None:
      raise ValueError("GenieEnv.reset needs a prompt: pass one here or to the constructor")
    self.prompt = prompt
    frames = self.genie.prompt_frames(prompt)
    if frames.shape[0] != 1:
      raise ValueError(f"GenieEnv runs one world; the prompt holds a batch of {frames.shape[0]}")
    self._state = self.genie.start(frames)
    self._frame = frames[0, -1]
    self._steps = 0
    return self._frame.copy(), {"step": 0}

  def step(self, action):
    if self._state is None:
      raise RuntimeError("call reset() before step()")
    if not self.action_space.contains(int(action)) or int(action) != action:
      raise ValueError(f"latent action {action!r} is out of range: this world has "
                       f"{self.genie.num_actions} latent actions (0..{self.genie.num_actions - 1})")
    seed = int(self.np_random.integers(2**31 - 1))  # reproducible under reset(seed=...)
    self._state, frames = self.genie.step(self._state, int(action), seed=seed)
    self._frame = frames[0]
    self._steps += 1
    truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
    return self._frame.copy(), 0.0, False, truncated, {"step": self._steps}

  def render(self):
    return self._frame
