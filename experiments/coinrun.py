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
  gpu_tokenizer, gpu_lam_dynamics
                            the CPU run's choices at the paper's widths and batch, in bf16,
                            for one GPU (README, "CPU reference run": not yet run on one)
"""
from experiments.base import base_config

VARIANTS = ("tokenizer", "lam_dynamics", "bench_tokenizer", "bench_lam", "bench_dynamics",
            "cpu_tokenizer", "cpu_lam_dynamics", "gpu_tokenizer", "gpu_lam_dynamics")


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
  if arg.startswith(("cpu", "gpu")):
    # ~1 s/step each phase on 2 cores: the whole run (data, both phases, eval) in about an
    # hour. The sprite recipe's choices (experiments/sprites.py, README "A world that obeys
    # its actions"): FSQ tokens of each patch alone, moving pixels weighed 21x, a sharper
    # pixel head; a LAM that reads the change into a straight-through categorical and
    # predicts the change; a dynamics model trained on whole masked frames with one softmax
    # per FSQ channel, sampled greedily in one step
    c.tokenizer.update(patch=8, enc_dim=128, enc_blocks=2, enc_heads=4, dec_dim=128, dec_blocks=2,
                       dec_heads=4, num_codes=64000, latent_dim=32, quantizer="fsq",
                       fsq_levels=(8, 8, 8, 5, 5, 5), encoder="patch", change_weight=20.0,
                       out_hidden=512, refine_channels=16)
    c.lam.update(dim=128, enc_blocks=2, dec_blocks=2, num_heads=4, dead_code_steps=20,
                 quantizer="categorical", predict_delta=True, encoder_input="change",
                 encoder_shift=True, soft_weight=1.0)
    c.dynamics.update(dim=128, num_blocks=3, num_heads=4, mask_scheme="teacher_forced",
                      full_mask_prob=1.0, token_head="fsq_digits")
    c.optim.update(lr=3e-3 if c.phase == "lam_dynamics" else 1e-3, warmup_steps=100)
    c.train.update(batch_size=8, log_every=50, image_every=500, ckpt_every=500)
    c.train.steps = 1200 if c.phase == "tokenizer" else 1000
    c.sampling.update(steps=1, temperature=0.0)
  if arg.startswith("gpu"):
    # The same choices at the paper's widths and depths (d512, 8 heads; tokenizer and LAM
    # 4+4 blocks, dynamics 6) and batch (48), on one 80 GB GPU: the CPU run's LAM learning
    # curve is flat after 1,500 steps (NMI 0.021; README), so what is left to try is
    # scale. Tokenizer patch 8 as on CPU (64 tokens a frame; patch 4 quadruples them).
    # remat full: on an H100 the paper tokenizer at B=48 peaked at 9.6 GiB with it, and
    # phase 2 at B=48 without it asked for 92 GiB.
    c.tokenizer.update(enc_dim=512, enc_blocks=4, enc_heads=8, dec_dim=512, dec_blocks=4, dec_heads=8)
    c.lam.update(dim=512, enc_blocks=4, dec_blocks=4, num_heads=8)
    c.dynamics.update(dim=512, num_blocks=6, num_heads=8)
    c.update(dtype="bfloat16", remat="full")
    # learning rates below the CPU run's (3e-3 / 1e-3 at d128) for four times the width;
    # not tuned
    c.optim.update(lr=1e-3 if c.phase == "lam_dynamics" else 5e-4, warmup_steps=500)
    c.train.update(batch_size=48, steps=10_000, log_every=100, image_every=1000, ckpt_every=1000)
  return c
