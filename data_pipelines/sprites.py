r"""A synthetic world whose frame-to-frame motion is decided by a known discrete action.

A square sprite moves on a textured background; actions are
0 stay, 1 left, 2 right, 3 up, 4 down. It trains in minutes on CPU, so tests and the
quickstart can check that the latent action model recovers the true actions and that
rollouts obey them.

The random policy never walks into a wall: next to one, a move that the wall would stop
is not drawn (it is re-drawn among the actions left), so every action decides the motion
(a blocked move looks exactly like "stay"; with such moves allowed, 7% of transitions
were moves into a wall, capping how well any model could recover the actions at 0.93).
`--wall_moves` keeps them, for the harder world.

    python -m data_pipelines.sprites --data_dir data --episodes 128 --max_steps 48
    python -m data_pipelines.sprites --data_dir data2 --sprite 8 --speed 4 --background stripes
"""
from __future__ import annotations

import sys

import numpy as np
from absl import app, flags

from data_pipelines import builders, records

ACTION_NAMES = ("stay", "left", "right", "up", "down")
_MOVES = np.array([[0, 0], [0, -1], [0, 1], [-1, 0], [1, 0]])  # (row, col) per action


BACKGROUNDS = ("checker", "stripes")


def _background(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
  """float [size, size, 3]: a two-colour gradient with a texture, new colours per episode."""
  if kind not in BACKGROUNDS:
    raise ValueError(f"unknown background {kind!r}; choose from {BACKGROUNDS}")
  yy, xx = np.mgrid[0:size, 0:size] / size
  colors = rng.uniform(0.1, 0.6, size=(2, 3))
  background = (colors[0] * (1 - yy)[..., None] + colors[1] * xx[..., None])
  if kind == "checker":
    texture = (np.floor(yy * 8) + np.floor(xx * 8)) % 2
  else:  # diagonal stripes
    texture = np.floor((yy + xx) * 6) % 2
  return background + 0.08 * texture[..., None]


def _episode_look(rng: np.random.Generator, size: int, background: str):
  """(background float [size, size, 3], sprite colour float [3]): an episode's colours, the
  first draws of its generator."""
  return _background(rng, size, background), rng.uniform(0.7, 1.0, size=3)


def episode_look(*, seed: int, size: int = 64, background: str = "checker"):
  """The background and sprite colour of simulate_episode's episode `seed`, to paint the
  sprite of that episode anywhere (paint)."""
  return _episode_look(np.random.default_rng(seed), size, background)


def paint(back: np.ndarray, color: np.ndarray, pos, *, sprite: int) -> np.ndarray:
  """A frame uint8 [size, size, 3]: the sprite of side `sprite` with top-left `pos` (row, col)
  over the background."""
  frame = back.copy()
  frame[pos[0]:pos[0] + sprite, pos[1]:pos[1] + sprite] = color
  return np.clip(frame * 255, 0, 255).astype(np.uint8)


def _moves_something(pos: np.ndarray, action: int, *, size: int, sprite: int, speed: int) -> bool:
  new = np.clip(pos + speed * _MOVES[action], 0, size - sprite)
  return action == 0 or bool(np.any(new != pos))


def simulate_episode(*, seed: int, num_steps: int, size: int = 64, sprite: int = 12,
                     speed: int = 6, background: str = "checker", wall_moves: bool = False):
  """Random-policy episode -> (frames uint8 [num_steps, size, size, 3], actions int32
  [num_steps], sprite top-left (row, col) int [num_steps, 2]).

  Actions are uniform over the five; unless `wall_moves`, one that a wall would stop
  entirely is re-drawn, so each action changes the frame in its own way.
  """
  if not 0 < sprite < size or speed < 1:
    raise ValueError(f"need 0 < sprite ({sprite}) < size ({size}) and speed ({speed}) >= 1")
  rng = np.random.default_rng(seed)
  back, sprite_color = _episode_look(rng, size, background)
  pos = rng.integers(0, size - sprite, size=2)
  actions = np.empty(num_steps, np.int32)
  positions = np.empty((num_steps, 2), np.int64)
  frames = np.empty((num_steps, size, size, 3), np.uint8)
  for t in range(num_steps):
    frames[t] = paint(back, sprite_color, pos, sprite=sprite)
    positions[t] = pos
    action = int(rng.integers(0, len(ACTION_NAMES)))
    while not wall_moves and not _moves_something(pos, action, size=size, sprite=sprite, speed=speed):
      action = int(rng.integers(0, len(ACTION_NAMES)))
    actions[t] = action
    pos = np.clip(pos + speed * _MOVES[action], 0, size - sprite)  # actions[t]: frame t -> t+1
  return frames, actions, positions


def render_episode(**world) -> records.Episode:
  """simulate_episode as a record: frames and actions (a_t moves frame t to t+1)."""
  frames, actions, _ = simulate_episode(**world)
  return records.Episode(frames=frames, actions=actions)


def occupancy_tokens(positions: np.ndarray, *, size: int = 64, sprite: int = 12, patch: int = 8) -> np.ndarray:
  """Sprite top-left positions int [..., 2] -> int32 [..., (size/patch)^2] tokens: for each
  patch, (rows the sprite covers in it) * (patch + 1) + (columns it covers).

  A tokenizer with no learning in it, whose tokens are an exact function of the frame's
  sprite: what a dynamics model must predict is then known exactly, which separates "it
  cannot use an action" from "it cannot predict a learned tokenizer's codes" (README, "A
  world that obeys its actions"). (patch + 1)^2 codes.
  """
  starts = np.arange(0, size, patch)
  def covered(p):  # [..., grid]: pixels of each patch inside [p, p + sprite)
    return np.clip(np.minimum(starts + patch, p[..., None] + sprite) - np.maximum(starts, p[..., None]), 0, patch)
  rows, cols = covered(positions[..., 0])[..., :, None], covered(positions[..., 1])[..., None, :]
  tokens = np.where((rows > 0) & (cols > 0), rows * (patch + 1) + cols, 0)  # 0: no sprite in the patch
  return tokens.reshape(*positions.shape[:-1], -1).astype(np.int32)


def positions_from_occupancy(tokens: np.ndarray, *, size: int = 64, sprite: int = 12, patch: int = 8) -> np.ndarray:
  """The inverse of occupancy_tokens: tokens int [..., (size/patch)^2] -> sprite top-left int
  [..., 2], the position whose occupancy tokens agree with `tokens` on the most patches
  (ties: the first in row-major order). Exact on any position's own tokens; for a model's
  guess, the nearest state the world can be in."""
  grid = np.stack(np.meshgrid(np.arange(size - sprite + 1), np.arange(size - sprite + 1), indexing="ij"), -1)
  grid = grid.reshape(-1, 2)
  table = occupancy_tokens(grid, size=size, sprite=sprite, patch=patch)  # [P, S]
  flat = tokens.reshape(-1, tokens.shape[-1])
  agree = np.stack([np.sum(table == row, axis=-1) for row in flat])  # [N, P]
  return grid[np.argmax(agree, axis=-1)].reshape(*tokens.shape[:-1], 2)


def build(*, data_dir: str, episodes: int, eval_episodes: int, max_steps: int, size: int = 64,
          seed: int = 0, chunk_size: int = 64, min_frames: int = 16, sprite: int = 12, speed: int = 6,
          background: str = "checker", wall_moves: bool = False, array_encoding: str = "bytes"):
  world = dict(size=size, sprite=sprite, speed=speed, background=background, wall_moves=wall_moves)
  render_episode(seed=0, num_steps=1, **world)  # a bad world fails here, before anything is written

  def split(offset, count):
    return lambda: (render_episode(seed=seed * 1_000_003 + offset + i, num_steps=max_steps, **world)
                    for i in range(count))
  return records.write_dataset(
      builders.Sprites, data_dir=data_dir, resolution=(size, size), chunk_size=chunk_size,
      min_frames=min_frames, array_encoding=array_encoding,
      split_episodes={"train": split(0, episodes), "validation": split(10_000_000, eval_episodes),
                      "test": split(20_000_000, eval_episodes)},
      extra_metadata={"num_actions": len(ACTION_NAMES), "has_actions": True, "source": "sprites",
                      "world": world})


def main(argv):
  del argv
  f = flags.FLAGS
  try:
    summaries = build(data_dir=f.data_dir, episodes=f.episodes, eval_episodes=f.eval_episodes,
                      max_steps=f.max_steps, size=f.size, seed=f.seed, chunk_size=f.chunk_size,
                      min_frames=f.min_frames, sprite=f.sprite, speed=f.speed, background=f.background,
                      wall_moves=f.wall_moves)
  except (FileExistsError, ValueError) as e:
    sys.exit(f"error: {e}")
  for split, s in summaries.items():
    print(f"{split}: {s.episodes_written} episodes, {s.frames} frames, {s.records} records")


if __name__ == "__main__":
  flags.DEFINE_string("data_dir", None, "Where the TFDS dataset is written.", required=True)
  flags.DEFINE_integer("episodes", 64, "Training episodes.")
  flags.DEFINE_integer("eval_episodes", 8, "Episodes in each of validation and test.")
  flags.DEFINE_integer("max_steps", 48, "Frames per episode.")
  flags.DEFINE_integer("size", 64, "Frame height and width.")
  flags.DEFINE_integer("seed", 0, "Seed; splits use disjoint seed ranges.")
  flags.DEFINE_integer("chunk_size", 64, "Most frames per record.")
  flags.DEFINE_integer("min_frames", 16, "Fewest frames per record (longest window the loader can draw).")
  flags.DEFINE_integer("sprite", 12, "Sprite side in pixels.")
  flags.DEFINE_integer("speed", 6, "Pixels the sprite moves per step.")
  flags.DEFINE_enum("background", "checker", BACKGROUNDS, "Background texture.")
  flags.DEFINE_bool("wall_moves", False, "Let the policy walk into walls (a blocked move looks like stay).")
  app.run(main)
