r"""Latent-action behaviour cloning on CoinRun (Genie, Sec. 3.3 and App. E; README, "Agents
from videos without actions").

    python -m data_pipelines.coinrun --policy expert --data_dir data/coinrun_expert --episodes 300 \
        --eval_episodes 16
    python -m genie_jax.agents.bc --config experiments/agents.py:coinrun --data_dir data/coinrun_expert \
        --lam_workdir runs/cpu_reference/lam_dynamics --out runs/bc

Variants: coinrun (the run: 100 held-out levels, 3 seeds, N in 25..500), tiny (tests).
"""
import ml_collections

VARIANTS = ("coinrun", "tiny")


def get_config(arg: str = "coinrun"):
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r} of agents.py; choose from {VARIANTS}")
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict(dict(name="coinrun", split="train", max_episodes=0))  # 0: all
  c.context = 4                    # frames the policy reads, the current one last
  c.policy = ml_collections.ConfigDict(dict(dim=64, hidden=256))
  c.train = ml_collections.ConfigDict(dict(steps=2000, batch_size=64, lr=1e-3))
  c.seeds = 3                      # policies trained, mappings drawn and levels played per seed
  c.shots = (25, 50, 100, 200, 500)  # N: labelled transitions the latent -> real mapping sees
  # held-out levels: the test range of the expert data's (seed, num_levels)
  c.eval = ml_collections.ConfigDict(dict(levels=100, split="test", num_levels=10_000, data_seed=0,
                                          max_steps=1000))
  if arg == "tiny":
    c.data.max_episodes = 8
    c.policy.update(dim=16, hidden=32)
    c.train.update(steps=150, batch_size=16)
    c.seeds = 1
    c.shots = (4, 16)
    c.eval.update(levels=30, max_steps=300)
  return c
