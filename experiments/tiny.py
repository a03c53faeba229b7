r"""Tiny models that train in seconds on CPU (tests, quickstart, CI).

    python -m genie_jax.train --config experiments/tiny.py:tokenizer --workdir /tmp/tiny_tok
    python -m genie_jax.train --config experiments/tiny.py:lam_dynamics --workdir /tmp/tiny_dyn \
        --config.train.tokenizer_workdir=/tmp/tiny_tok
"""
from experiments.base import base_config

VARIANTS = ("tokenizer", "lam_dynamics")


def get_config(arg: str = "tokenizer"):
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r} of tiny.py; choose from {VARIANTS}")
  c = base_config()
  c.phase = arg
  c.data.name = "sprites"
  c.data.window = 8
  c.tokenizer.update(patch=8, enc_dim=64, enc_blocks=2, enc_heads=4, dec_dim=64, dec_blocks=2,
                     dec_heads=4, num_codes=64, latent_dim=16, dead_code_steps=10)
  c.lam.update(patch=16, dim=64, enc_blocks=2, dec_blocks=2, num_heads=4, num_actions=5,
               latent_dim=16, dead_code_steps=20)
  c.dynamics.update(dim=64, num_blocks=2, num_heads=4)
  c.sampling.steps = 8
  c.optim.update(lr=1e-3, warmup_steps=20)
  c.train.update(steps=200, batch_size=8, log_every=20, image_every=100, ckpt_every=100, eval_clips=8)
  return c
