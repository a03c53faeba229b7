r"""Procgen CoinRun -> TFDS ArrayRecord, as in the paper's case study (Genie, Appendix F).

Hard mode, uniformly random policy (or, with --policy held, random keys each held for a
random number of steps, as a person holds a key; with --policy expert, a search that solves
each level), one environment step per action (no repeats), 64x64 RGB. Levels come from a
seeded range per split, and the three splits use disjoint ranges, so validation and test
levels are never seen in training:

    train       levels [seed*L_total + 0,            ... + num_levels)
    validation  levels [... + num_levels,            ... + 2*num_levels)
    test        levels [... + 2*num_levels,          ... + 3*num_levels)

Small set (tests, quickstart):
    python -m data_pipelines.coinrun --data_dir data --episodes 32 --max_steps 64
Expert episodes (data_pipelines/coinrun_expert.py; one level each, the search's solution,
real actions kept), for behaviour cloning:
    python -m data_pipelines.coinrun --policy expert --data_dir data_expert --episodes 500
The paper's full set (10,000 levels x 1,000 steps = 10M frames, ~15 GB, hours on 2 cores):
    python -m data_pipelines.coinrun --data_dir data --episodes 10000 --max_steps 1000 \
        --num_levels 10000 --eval_episodes 500
"""
from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags
from tqdm import tqdm

from data_pipelines import builders, records
from genie_jax import allocator

# Procgen's 15 actions, as procgen.env.ProcgenGym3Env.get_combos lists them: the keys each
# holds down. CoinRun reads LEFT, RIGHT and UP (jump) only, so several do the same thing.
PROCGEN_COMBOS = (("LEFT", "DOWN"), ("LEFT",), ("LEFT", "UP"), ("DOWN",), (), ("UP",),
                  ("RIGHT", "DOWN"), ("RIGHT",), ("RIGHT", "UP"), ("D",), ("A",), ("W",), ("S",),
                  ("Q",), ("E",))
NUM_PROCGEN_ACTIONS = len(PROCGEN_COMBOS)


def action_effects(actions: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
  """Procgen action ids int [...] -> {grouping: (labels int [...], number of labels)}: what the
  action does in CoinRun, "horizontal" (0 left, 1 neither, 2 right), "jump" (0/1), and
  "horizontal x jump" (6 labels), for scoring latent actions against what actions do rather
  than which of 15 keys was pressed."""
  horizontal = np.array([0 if "LEFT" in c else 2 if "RIGHT" in c else 1 for c in PROCGEN_COMBOS])[actions]
  jump = np.array([int("UP" in c) for c in PROCGEN_COMBOS])[actions]
  return {"horizontal": (horizontal, 3), "jump": (jump, 2), "horizontal x jump": (horizontal * 2 + jump, 6)}
_SPLIT_INDEX = {"train": 0, "validation": 1, "test": 2}


def level_range(*, split: str, seed: int, num_levels: int) -> tuple[int, int]:
  """[start, stop) of the Procgen level seeds a split draws from; disjoint across splits."""
  start = (seed * 3 + _SPLIT_INDEX[split]) * num_levels
  return start, start + num_levels


def procgen_env_class():
  """procgen.ProcgenGym3Env, imported here (only the CoinRun commands need procgen), with its
  library loaded so that it shares the process's allocator (genie_jax/allocator.py: gym3
  opens it with RTLD_DEEPBIND, which under tcmalloc aborts in free())."""
  import procgen  # pylint: disable=g-import-not-at-top
  allocator.load_ahead_of_deepbind(os.path.join(os.path.dirname(procgen.__file__), "data", "prebuilt", "libenv.so"))
  return procgen.ProcgenGym3Env


def _check_hold_mean(hold_mean: float) -> None:
  if hold_mean < 1:
    raise ValueError(f"hold_mean must be at least 1 (steps a key is held on average), got {hold_mean}")


def generate_episodes(*, split: str, episodes: int, max_steps: int, num_levels: int, seed: int,
                      num_envs: int = 4, progress: bool = True, hold_mean: float = 1.0):
  """Yields `records.Episode`s of at most `max_steps` frames from `num_envs` parallel envs.

  Each step every env draws a uniformly random key; with `hold_mean` > 1 it keeps its key
  instead with probability 1 - 1/hold_mean, so a key is held for a geometric number of
  steps of that mean (the `held` policy). The policy is seeded, so the same arguments give
  the same episodes (and hold_mean=1 the random policy's, draw for draw).
  """
  _check_hold_mean(hold_mean)
  ProcgenGym3Env = procgen_env_class()

  start_level, _ = level_range(split=split, seed=seed, num_levels=num_levels)
  num_envs = max(1, min(num_envs, episodes))
  env = ProcgenGym3Env(num=num_envs, env_name="coinrun", distribution_mode="hard",
                       start_level=start_level, num_levels=num_levels,
                       rand_seed=seed * 7919 + _SPLIT_INDEX[split])
  rng = np.random.default_rng([seed, _SPLIT_INDEX[split]])
  frames = [[] for _ in range(num_envs)]
  actions = [[] for _ in range(num_envs)]
  done_count = 0
  held = None
  bar = tqdm(total=episodes, desc=f"coinrun {split} episodes", disable=not progress)
  while done_count < episodes:
    _, obs, first = env.observe()
    act = rng.integers(0, NUM_PROCGEN_ACTIONS, size=num_envs).astype(np.int32)
    if hold_mean > 1:  # keep the key held (a new episode draws afresh)
      if held is not None:
        keep = (rng.random(num_envs) >= 1.0 / hold_mean) & ~np.asarray(first, bool)
        act = np.where(keep, held, act)
      held = act
    for i in range(num_envs):
      # `first` marks a frame that starts a new episode (the env reset itself): close the
      # previous one there, so no episode holds frames of two levels.
      if (first[i] and frames[i]) or len(frames[i]) == max_steps:
        if done_count < episodes:
          yield records.Episode(frames=np.stack(frames[i]), actions=np.array(actions[i], np.int32))
          done_count += 1
          bar.update(1)
        frames[i], actions[i] = [], []
      frames[i].append(obs["rgb"][i])
      actions[i].append(act[i])
    env.act(act)
  bar.close()


def generate_expert_episodes(*, split: str, episodes: int, max_steps: int, num_levels: int, seed: int,
                             progress: bool = True, skipped: list | None = None):
  """Yields one `records.Episode` per level of the split's range, in order: the expert
  (coinrun_expert.solve_level) solving it in at most `max_steps` steps. A level it cannot
  solve is skipped and its number appended to `skipped`."""
  from data_pipelines import coinrun_expert  # imported here: it needs procgen
  start, stop = level_range(split=split, seed=seed, num_levels=num_levels)
  rng = np.random.default_rng([seed, _SPLIT_INDEX[split], 1])
  written = 0
  bar = tqdm(total=episodes, desc=f"coinrun {split} expert episodes", disable=not progress)
  for level in range(start, stop):
    if written == episodes:
      break
    episode = coinrun_expert.expert_episode(level, rng, max_steps=max_steps)
    if episode is None:
      if skipped is not None:
        skipped.append(level)
      continue
    yield records.Episode(frames=episode[0], actions=episode[1])
    written += 1
    bar.update(1)
  bar.close()
  if written < episodes:
    raise ValueError(f"split {split!r}: the expert solved only {written} of the {stop - start} levels "
                     f"in its range, fewer than the {episodes} episodes asked; raise --num_levels")


POLICIES = ("random", "held", "expert")
HOLD_MEAN = 8.0  # the `held` policy: steps a key is held on average


def build(*, data_dir: str, episodes: int, eval_episodes: int, max_steps: int, num_levels: int,
          seed: int = 0, splits=("train", "validation", "test"), chunk_size: int = 64,
          min_frames: int = 16, num_envs: int = 4, progress: bool = True, policy: str = "random",
          skipped: list | None = None, array_encoding: str = "bytes", hold_mean: float = HOLD_MEAN):
  if policy not in POLICIES:
    raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
  if policy == "held":
    _check_hold_mean(hold_mean)  # here too: generate_episodes, a generator, checks only once writing has begun
  counts = {"train": episodes, "validation": eval_episodes, "test": eval_episodes}
  def split_fn(split):
    if policy == "expert":
      return lambda: generate_expert_episodes(split=split, episodes=counts[split], max_steps=max_steps,
                                              num_levels=num_levels, seed=seed, progress=progress,
                                              skipped=skipped)
    return lambda: generate_episodes(split=split, episodes=counts[split], max_steps=max_steps,
                                     num_levels=num_levels, seed=seed, num_envs=num_envs,
                                     progress=progress, hold_mean=hold_mean if policy == "held" else 1.0)
  return records.write_dataset(
      builders.Coinrun, data_dir=data_dir, resolution=(64, 64), chunk_size=chunk_size,
      min_frames=min_frames, split_episodes={s: split_fn(s) for s in splits}, array_encoding=array_encoding,
      extra_metadata={"num_actions": NUM_PROCGEN_ACTIONS, "has_actions": True,
                      "source": f"procgen coinrun hard, {policy} policy", "policy": policy,
                      **({"hold_mean": hold_mean} if policy == "held" else {}),
                      "level_ranges": {s: list(level_range(split=s, seed=seed, num_levels=num_levels))
                                       for s in splits}})


def main(argv):
  del argv
  f = flags.FLAGS
  splits = tuple(s.strip() for s in f.split.split(",") if s.strip())
  unknown = [s for s in splits if s not in _SPLIT_INDEX]
  if unknown:
    raise app.UsageError(f"--split: unknown split(s) {unknown}; choose from {list(_SPLIT_INDEX)}")
  eval_episodes = f.eval_episodes or max(1, f.episodes // 10)
  try:
    skipped: list[int] = []
    summaries = build(data_dir=f.data_dir, episodes=f.episodes, eval_episodes=eval_episodes,
                      max_steps=f.max_steps, num_levels=f.num_levels, seed=f.seed, splits=splits,
                      chunk_size=f.chunk_size, min_frames=f.min_frames, num_envs=f.num_envs,
                      policy=f.policy, skipped=skipped, hold_mean=f.hold_mean)
  except (FileExistsError, ValueError) as e:
    sys.exit(f"error: {e}")
  if f.policy == "expert":
    print(f"expert: {len(skipped)} level(s) unsolved and skipped{': ' + str(skipped[:20]) if skipped else ''}")
  for split, s in summaries.items():
    print(f"{split}: {s.episodes_written} episodes ({s.episodes_dropped_short} dropped as shorter "
          f"than {f.min_frames} frames), {s.frames} frames, {s.records} records")


if __name__ == "__main__":
  flags.DEFINE_string("data_dir", None, "Where the TFDS dataset is written.", required=True)
  flags.DEFINE_integer("episodes", 32, "Training episodes.")
  flags.DEFINE_integer("eval_episodes", None, "Episodes in validation and in test (default episodes//10, at least 1).")
  flags.DEFINE_integer("max_steps", 1000, "Most frames per episode (the paper: 1000); with --policy "
                       "expert, the longest solution the search accepts.")
  flags.DEFINE_enum("policy", "random", list(POLICIES), "random: uniformly random keys (the paper's "
                    "dataset); held: random keys, each held for a random number of steps (--hold_mean "
                    "on average); expert: data_pipelines/coinrun_expert.py, one solved level per episode.")
  flags.DEFINE_float("hold_mean", HOLD_MEAN, "With --policy held: steps a key is held on average (a "
                     "geometric number; 1 is the random policy).")
  flags.DEFINE_integer("num_levels", 10_000, "Levels per split (the paper: 10,000 for training).")
  flags.DEFINE_integer("seed", 0, "Seed of the policy and of the level ranges.")
  flags.DEFINE_string("split", "train,validation,test", "Comma-separated splits to write.")
  flags.DEFINE_integer("chunk_size", 64, "Most frames per record.")
  flags.DEFINE_integer("min_frames", 16, "Fewest frames per record; shorter episodes are dropped.")
  flags.DEFINE_integer("num_envs", 4, "Parallel Procgen environments.")
  flags.register_validator("episodes", lambda v: v > 0, "--episodes must be positive")
  app.run(main)
