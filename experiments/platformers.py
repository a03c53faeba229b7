r"""The paper's Platformers model: 160x90 video, T=16, 8 latent actions.

  tokenizer       ~200M: encoder 12 layers (6 blocks) d512, decoder 20 layers (10 blocks) d1024, patch 4
  lam             ~300M in the paper: 20+20 layers (10+10 blocks) d1024, patch 16
  dynamics_s/m/l/xl   points along the scaling study
  dynamics_11b    the 10.1B model: 48 layers (24 blocks), d5120, 36 heads

    python -m genie_jax.params --config experiments/platformers.py:dynamics_11b
    python -m genie_jax.aot --config experiments/platformers.py:dynamics_11b --topology v5p-256
90 rows are zero-padded to 92 (patch 4: a 40x23 grid) or 96 (patch 16: 10x6) and cropped back.
"""
from experiments.base import base_config

DYNAMICS_SIZES = {  # name: (blocks, width, heads)
    "dynamics_s": (12, 512, 8),
    "dynamics_m": (12, 1024, 16),
    "dynamics_l": (16, 2048, 16),
    "dynamics_xl": (18, 3072, 24),
    "dynamics_11b": (24, 5120, 36),  # with the paper's key/query size 128
}
VARIANTS = ("tokenizer", "lam", "lam_dynamics") + tuple(DYNAMICS_SIZES)


def get_config(arg: str = "dynamics_11b"):
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r} of platformers.py; choose from {VARIANTS}")
  c = base_config()
  c.phase = "tokenizer" if arg == "tokenizer" else "lam_dynamics"
  c.data.update(name="platformers", height=90, width=160)
  c.tokenizer.update(patch=4, enc_dim=512, enc_blocks=6, enc_heads=8, dec_dim=1024, dec_blocks=10,
                     dec_heads=16, num_codes=1024, latent_dim=32)
  c.lam.update(patch=16, dim=1024, enc_blocks=10, dec_blocks=10, num_heads=16, num_actions=8)
  blocks, dim, heads = DYNAMICS_SIZES.get(arg, DYNAMICS_SIZES["dynamics_11b"])
  c.dynamics.update(dim=dim, num_blocks=blocks, num_heads=heads,
                    head_dim=128 if arg == "dynamics_11b" else 0)
  c.train.batch_size = 512
  c.dtype = "bfloat16"
  if arg == "dynamics_11b":
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.remat = "full"
  return c
