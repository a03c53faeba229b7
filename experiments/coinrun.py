r"""CoinRun, the paper's case study (Genie, Appendix F): 64x64, T=16.

Paper sizes (8+8 attention layers = 4+4 ST blocks for tokenizer and LAM, 12 layers = 6
blocks for dynamics, d512, 8 heads, tokenizer patch 4 / 1024 codes / latent 32, LAM
patch 16 / 6 actions):
    python -m data_pipelines.coinrun --data_dir data --episodes 10000 --max_steps 1000
    python -m genie_jax.train --config experiments/coinrun.py:tokenizer --workdir runs/tok
    python -m genie_jax.train --config experiments/coinrun.py:lam_dynamics --workdir runs/dyn \
        --config.train.tokenizer_workdir=runs/tok
Variants:
  tokenizer, lam_dynamics   the paper's sizes
  bench_tokenizer, bench_lam, bench_dynamics
                            Jasmine's CoinRun shapes (B=2, patch 16 everywhere, d512,
                            FFW 2048, 8 heads, 4+4 / 6 blocks) for scripts/bench_train.py
  cpu_tokenizer, cpu_lam_dynamics
                            the small CPU reference run (README)
"""
from experiments.base import base_config

VARIANTS = ("tokenizer", "lam_dynamics", "bench_tokenizer", "bench_lam", "bench_dynamics",
            "cpu_tokenizer", "cpu_lam_dynamics")


def get_config(arg: str = "tokenizer"):
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r} of coinrun.py; choose from {VARIANTS}")
  c = base_config()
  c.phase = "tokenizer" if arg.endswith("tokenizer") else "lam_dynamics"
  c.data.name = "coinrun"
  c.lam.num_actions = 6
  if arg.startswith("bench"):
    c.tokenizer.patch = 16
    c.train.batch_size = 2
    c.bench_part = arg.split("_", 1)[1]  # which model scripts/bench_train.py times
  if arg.startswith("cpu"):
    # ~1 s/step each phase on 2 cores: the whole run (data, both phases, eval) in about an hour
    c.tokenizer.update(patch=8, enc_dim=128, enc_blocks=2, enc_heads=4, dec_dim=128, dec_blocks=2,
                       dec_heads=4, num_codes=256, latent_dim=32, dead_code_steps=25)
    c.lam.update(dim=128, enc_blocks=2, dec_blocks=2, num_heads=4, dead_code_steps=50)
    c.dynamics.update(dim=128, num_blocks=3, num_heads=4)
    c.optim.update(lr=1e-3, warmup_steps=100)
    c.train.update(batch_size=8, log_every=50, image_every=500, ckpt_every=500)
    c.train.steps = 1200 if c.phase == "tokenizer" else 600
    c.sampling.steps = 10
  return c
