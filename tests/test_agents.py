"""The CoinRun expert and latent-action behaviour cloning (genie_jax/agents), on a tiny
setup: plans replay to the coin in a fresh simulator, episodes read back whole, the
mapping against a NumPy vote and fed exactly N transitions, and the pipeline end to end
with the oracle beating random keys."""
import numpy as np
import pytest

from data_pipelines import coinrun, coinrun_expert
from experiments import agents as agent_configs
from genie_jax.agents import bc, data as data_lib
from genie_jax.agents.mapping import fit_mapping

NUM_LEVELS = 50  # levels per split of the tiny expert data; the test range is [100, 150)


@pytest.fixture(scope="module")
def expert_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("coinrun_expert"))
  coinrun.build(data_dir=data_dir, episodes=8, eval_episodes=1, max_steps=1000, num_levels=NUM_LEVELS,
                chunk_size=32, min_frames=16, progress=False, policy="expert")
  return data_dir


def test_expert_plans_replay_to_the_coin_in_a_fresh_simulator():
  rng = np.random.default_rng(0)
  for level in (5000, 5001, 5002):
    actions, tries = coinrun_expert.solve_level(coinrun_expert.make_level_env(level), rng)
    assert actions is not None and tries >= 1
    # an independent check: a new environment of the level, the plan played blind
    assert coinrun_expert.play(coinrun_expert.make_level_env(level), actions) == (1, len(actions))
  # a plan that only holds LEFT dies or runs out, and says which
  outcome, steps = coinrun_expert.play(coinrun_expert.make_level_env(5000), [coinrun_expert.LEFT] * 50)
  assert outcome in (0, -1) and steps <= 50


def test_wilson_interval_against_known_values():
  lo, hi = coinrun_expert.wilson_interval(500, 500)  # all solved: the interval still has width
  assert abs(hi - 1.0) < 1e-12 and abs(lo - 500 / (500 + 1.96 ** 2)) < 1e-9
  lo, hi = coinrun_expert.wilson_interval(50, 100)
  assert abs(lo - 0.40383) < 1e-4 and abs(hi - 0.59617) < 1e-4


def test_expert_episodes_read_back_whole_with_their_actions(expert_dir):
  episodes = data_lib.read_episodes(expert_dir, "coinrun", "train")
  assert len(episodes.starts) == 9
  start, _ = coinrun.level_range(split="train", seed=0, num_levels=NUM_LEVELS)
  # episode 0 is the expert on the split's first level: replaying its actions in a fresh
  # simulator shows the same frames and ends at the coin
  a, b = episodes.starts[0], episodes.starts[1]
  env = coinrun_expert.make_level_env(start)
  frames = []
  assert coinrun_expert.play(env, episodes.actions[a:b], frames=frames) == (1, b - a)
  np.testing.assert_array_equal(np.stack(frames), episodes.frames[a:b])
  index = data_lib.transition_frames(episodes)
  assert len(index) == len(episodes.frames) - 8  # the last frame of each episode starts none
  contexts = data_lib.context_indices(episodes, index, 4)
  np.testing.assert_array_equal(contexts[0], [a, a, a, a])  # before the start: the first frame
  np.testing.assert_array_equal(contexts[5], [a + 2, a + 3, a + 4, a + 5])


def test_mapping_is_a_majority_vote_over_the_given_transitions():
  rng = np.random.default_rng(1)
  latent = rng.integers(0, 4, 40)
  real = rng.integers(0, 6, 40)
  latent[latent == 3] = 2  # code 3 never seen
  mapping = fit_mapping(latent, real, num_latent=4, num_real=6)
  for code in range(4):
    seen = real[latent == code]
    votes = np.bincount(seen if len(seen) else real, minlength=6)
    assert mapping[code] == np.flatnonzero(votes == votes.max())[0]
  with pytest.raises(ValueError, match="real actions"):
    fit_mapping(np.array([0]), np.array([9]), num_latent=4, num_real=6)
  with pytest.raises(ValueError, match="N >= 1"):
    fit_mapping(np.array([], int), np.array([], int), num_latent=4, num_real=6)


def test_pipeline_end_to_end_the_mapping_sees_n_transitions_and_the_oracle_beats_random(
    expert_dir, tiny_world, monkeypatch):
  seen = []

  def recording(latent, real, **kw):
    seen.append((np.array(latent), np.array(real)))
    return fit_mapping(latent, real, **kw)

  monkeypatch.setattr(bc, "fit_mapping", recording)
  config = agent_configs.get_config("tiny")
  config.eval.num_levels = NUM_LEVELS
  results = bc.run(config, data_dir=expert_dir, lam_workdir=tiny_world["world"], progress=False)
  # the mapping got exactly N labelled transitions for each N, and they are real expert
  # transitions: their real actions are the dataset's at some N distinct transitions
  assert [len(l) for l, _ in seen] == list(config.shots) * config.seeds
  episodes = data_lib.read_episodes(expert_dir, "coinrun", "train", max_episodes=config.data.max_episodes)
  real_all = episodes.actions[data_lib.transition_frames(episodes)]
  for _, real in seen:
    assert set(real.tolist()) <= set(real_all.tolist())
  agents = results["agents"]
  assert set(agents) == {"random", "always RIGHT+UP", "oracle", *[f"latent N={n}" for n in config.shots]}
  for a in agents.values():
    assert a["plays"] == config.eval.levels * config.seeds and 0 <= a["solved"] <= a["plays"]
    assert a["ci95"][0] <= a["rate"] <= a["ci95"][1]
  # the oracle learned something from the expert: it beats random keys on held-out levels
  assert agents["oracle"]["rate"] > agents["random"]["rate"], agents
  assert results["levels"][0] == coinrun.level_range(split="test", seed=0, num_levels=NUM_LEVELS)[0]


def test_bad_requests_are_named_before_any_training(expert_dir, tiny_world):
  config = agent_configs.get_config("tiny")
  config.eval.num_levels = NUM_LEVELS
  config.shots = (4, 10**6)
  with pytest.raises(ValueError, match="labelled transitions asked"):
    bc.run(config, data_dir=expert_dir, lam_workdir=tiny_world["world"], progress=False)
  config = agent_configs.get_config("tiny")
  config.eval.update(num_levels=NUM_LEVELS, levels=NUM_LEVELS + 1)
  with pytest.raises(ValueError, match="eval.levels"):
    bc.run(config, data_dir=expert_dir, lam_workdir=tiny_world["world"], progress=False)
  with pytest.raises(ValueError, match="'tokenizer' run"):
    bc.load_lam(tiny_world["tokenizer"])
