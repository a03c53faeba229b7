r"""An expert for Procgen CoinRun (hard): search with the simulator's own state cloning.

The expert behaviour cloning learns from (Genie, Sec. 3.3 and App. E; README, "An expert
for CoinRun"). It plays a level the way a person who knows it would: hold RIGHT+UP, and
where that dies, change the few steps before the death. `solve_level`:

1. plays RIGHT+UP to the end (a death, the coin, or `max_steps`);
2. from `back` steps before the latest death, tries short random segments of held keys
   (sticky: each key held 1-11 steps), each followed by RIGHT+UP; a segment that reaches
   the coin ends the search, one that dies later than before becomes the new plan;
3. when no segment helps, it backs up twice as far (up to 256 steps), and once back at
   the start it also shoots whole random sticky sequences.

Every candidate is played from the level's first state (`env.set_state`), so the plan
it returns replays to the coin in a fresh environment of that level (a test checks it).
What comes out is mostly RIGHT+UP (90% of steps on 100 test levels) with local repairs
before hazards: a policy of the frames, not a random walk, which is what behaviour
cloning needs.

Measure it, with the two baselines of the issue, on held-out levels:
    python -m data_pipelines.coinrun_expert --split test --levels 200
Record expert episodes (real actions kept) with `python -m data_pipelines.coinrun
--policy expert ...`.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np
from absl import app, flags
from tqdm import tqdm

from data_pipelines import coinrun

LEFT, LEFT_UP, NOOP, UP, RIGHT, RIGHT_UP = 1, 2, 4, 5, 7, 8  # procgen ids (coinrun.PROCGEN_COMBOS)
# the keys a repair segment draws, and how often: mostly forward
_SEGMENT_KEYS = np.array([RIGHT_UP, RIGHT, UP, LEFT, LEFT_UP, NOOP])
_SEGMENT_PROBS = np.array([0.4, 0.3, 0.05, 0.1, 0.05, 0.1])


def make_level_env(level: int):
  """A one-environment ProcgenGym3Env that plays CoinRun (hard) level `level` only."""
  ProcgenGym3Env = coinrun.procgen_env_class()  # pylint: disable=invalid-name
  if level < 0:
    raise ValueError(f"level must be >= 0, got {level}")
  return ProcgenGym3Env(num=1, env_name="coinrun", distribution_mode="hard", start_level=level,
                        num_levels=1, rand_seed=level)


def play(env, actions, *, frames: list | None = None) -> tuple[int, int]:
  """Plays `actions` from the env's current state -> (outcome, steps): outcome 1 if the
  level was solved (the coin, reward > 0), -1 if it ended otherwise (a death), 0 if the
  actions ran out first. `frames`, when given, receives the observation before each step."""
  for i, action in enumerate(actions):
    if frames is not None:
      frames.append(env.observe()[1]["rgb"][0])
    env.act(np.array([action], np.int32))
    reward, _, first = env.observe()
    if first[0]:  # the level ended and the env reset itself
      return (1 if reward[0] > 0 else -1), i + 1
  return 0, len(actions)


def _sticky(rng: np.random.Generator, n: int) -> list[int]:
  out: list[int] = []
  while len(out) < n:
    out += [int(rng.choice(_SEGMENT_KEYS, p=_SEGMENT_PROBS))] * int(rng.integers(1, 12))
  return out[:n]


def solve_level(env, rng: np.random.Generator, *, max_steps: int = 1000, budget: int = 400,
                default: int = RIGHT_UP) -> tuple[list[int] | None, int]:
  """Searches level play from the env's current state -> (actions that reach the coin, or
  None, number of simulated attempts). At most `budget` attempts of `max_steps` steps;
  `default` is the key held between repairs. With RIGHT instead of RIGHT+UP the search
  mostly stalls against walls (always RIGHT solved 0 of 100 test levels), each stalled try
  running to the cap, so RIGHT+UP it is."""
  start = env.get_state()

  def attempt(actions):
    env.set_state(start)
    return play(env, actions)

  def forward(prefix):
    return prefix + [default] * (max_steps - len(prefix))

  plan = forward([])
  outcome, steps = attempt(plan)
  tries = 1
  if outcome == 1:
    return plan[:steps], tries
  death = steps if outcome == -1 else 0  # a timeout gives no place to repair: search from 0
  back = 8
  while tries < budget:
    cut = max(0, death - back)
    improved = False
    for _ in range(16):
      candidate = forward(plan[:cut] + _sticky(rng, int(rng.integers(4, 40))))
      outcome, steps = attempt(candidate)
      tries += 1
      if outcome == 1:
        return candidate[:steps], tries
      if outcome == -1 and steps > death:
        plan, death, back, improved = candidate, steps, 8, True
        break
    if not improved:
      back = min(2 * back, 256)
      if cut == 0:  # repairs from the very start failed too: shoot whole sequences
        for _ in range(16):
          candidate = _sticky(rng, max_steps)
          outcome, steps = attempt(candidate)
          tries += 1
          if outcome == 1:
            return candidate[:steps], tries
  return None, tries


def expert_episode(level: int, rng: np.random.Generator, *, max_steps: int = 1000, budget: int = 400):
  """(frames uint8 [T, 64, 64, 3], actions int32 [T]) of the expert solving `level`, frame t
  the observation before action t; None if the search found no way through."""
  env = make_level_env(level)
  actions, _ = solve_level(env, rng, max_steps=max_steps, budget=budget)
  if actions is None:
    return None
  replay = make_level_env(level)  # recorded from a fresh env: what any player of the level sees
  frames: list[np.ndarray] = []
  outcome, steps = play(replay, actions, frames=frames)
  if outcome != 1 or steps != len(actions):
    raise RuntimeError(f"level {level}: the expert's plan did not replay to the coin "
                       f"(outcome {outcome} after {steps} of {len(actions)} steps)")
  return np.stack(frames), np.asarray(actions, np.int32)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
  """95% Wilson score interval of a success rate (sound near 0% and 100%, unlike p +- 2se)."""
  if n <= 0:
    raise ValueError("no trials")
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return max(0.0, centre - half), min(1.0, centre + half)


def evaluate_policies(levels, *, max_steps: int = 1000, budget: int = 400, seed: int = 0,
                      progress: bool = True) -> dict[str, dict]:
  """Levels solved, by the expert and the issue's two baselines (uniformly random keys,
  always RIGHT+UP), each level played once from its start -> {policy: summary}."""
  rng = np.random.default_rng(seed)
  solved = {"random": 0, "right_up": 0, "expert": 0}
  lengths, tries, right_up = [], [], []
  start = time.time()
  for level in tqdm(levels, desc="coinrun levels", disable=not progress):
    env = make_level_env(level)
    first = env.get_state()
    solved["random"] += play(env, rng.integers(0, coinrun.NUM_PROCGEN_ACTIONS, max_steps))[0] == 1
    env.set_state(first)
    solved["right_up"] += play(env, [RIGHT_UP] * max_steps)[0] == 1
    env.set_state(first)
    actions, n = solve_level(env, rng, max_steps=max_steps, budget=budget)
    tries.append(n)
    if actions is not None:
      solved["expert"] += 1
      lengths.append(len(actions))
      right_up.append(float(np.mean(np.asarray(actions) == RIGHT_UP)))
  n = len(levels)
  out = {name: {"solved": k, "levels": n, "rate": k / n, "ci95": wilson_interval(k, n)}
         for name, k in solved.items()}
  out["expert"].update(mean_steps=float(np.mean(lengths)) if lengths else None,
                       mean_attempts=float(np.mean(tries)),
                       right_up_fraction=float(np.mean(right_up)) if right_up else None,
                       seconds=time.time() - start)
  return out


def main(argv):
  del argv
  f = flags.FLAGS
  start, stop = coinrun.level_range(split=f.split, seed=f.seed, num_levels=f.num_levels)
  if f.levels > stop - start:
    sys.exit(f"error: --levels {f.levels} is more than the {stop - start} levels of split {f.split!r}")
  levels = list(range(start, start + f.levels))
  results = evaluate_policies(levels, max_steps=f.max_steps, budget=f.budget, seed=f.seed)
  print(f"CoinRun hard, {f.split} levels {levels[0]}..{levels[-1]}, one play each, {f.max_steps}-step cap:")
  for name, r in results.items():
    lo, hi = r["ci95"]
    print(f"  {name:9s} {r['solved']:4d} / {r['levels']} solved ({100 * r['rate']:.1f}%, 95% CI {100 * lo:.1f}-{100 * hi:.1f}%)")
  e = results["expert"]
  if e["mean_steps"] is not None:
    print(f"  expert: {e['mean_steps']:.1f} steps per solved level, {e['mean_attempts']:.1f} simulated attempts "
          f"per level, {100 * e['right_up_fraction']:.0f}% of its steps RIGHT+UP, {e['seconds']:.0f} s in all")


if __name__ == "__main__":
  flags.DEFINE_enum("split", "test", ["train", "validation", "test"], "Which split's levels to play.")
  flags.DEFINE_integer("levels", 200, "Levels to play, from the start of the split's range.")
  flags.DEFINE_integer("num_levels", 10_000, "Levels per split, as data_pipelines.coinrun numbers them.")
  flags.DEFINE_integer("seed", 0, "Seed of the level ranges and of the search.")
  flags.DEFINE_integer("max_steps", 1000, "Step cap per level (Procgen's own is 1000).")
  flags.DEFINE_integer("budget", 400, "Most simulated attempts the expert makes per level.")
  flags.register_validator("levels", lambda v: v > 0, "--levels must be positive")
  flags.register_validator("budget", lambda v: v > 0, "--budget must be positive")
  app.run(main)
