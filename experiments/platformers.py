r"""The paper's Platformers model: 160x90 video, T=16, 8 latent actions.

  tokenizer       ~200M: encoder 12 layers (6 blocks) d512, decoder 20 layers (10 blocks) d1024, patch 4
  lam_dynamics    phase 2: the LAM (~300M in the paper: 20+20 layers = 10+10 blocks, d1024,
                  patch 16) with the 10.1B dynamics model
  dynamics_s/m/l/xl   phase 2 with points along the scaling study
  dynamics_11b    phase 2 with the 10.1B model: 48 layers (24 blocks), d5120, 36 heads x 128

    python -m genie_jax.params --config experiments/platformers.py:dynamics_11b
    python -m genie_jax.aot --config experiments/platformers.py:dynamics_11b --topology v5p-256
90 rows are zero-padded to 92 (patch 4: a 40x23 grid) or 96 (patch 16: 10x6) and cropped back.
"""
from experiments.base import base_config

DYNAMICS_SIZES = {  # name: (blocks, width, heads, head_dim; 0 = width / heads)
    "dynamics_s": (12, 512, 8, 0),
    "dynamics_m": (12, 1024, 16, 0),
    "dynamics_l": (16, 2048, 16, 0),
    "dynamics_xl": (18, 3072, 24, 0),
    "dynamics_11b": (24, 5120, 36, 128),  # the paper's key/query size 128: 36 x 128 = 4608
}
VARIANTS = ("tokenizer", "lam_dynamics") + tuple(DYNAMICS_SIZES)


def get_config(arg: str = "dynamics_11b"):
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r} of platformers.py; choose from {VARIANTS}")
  c = base_config()
  c.phase = "tokenizer" if arg == "tokenizer" else "lam_dynamics"
  c.data.update(name="platformers", height=90, width=160)
  c.tokenizer.update(patch=4, enc_dim=512, enc_blocks=6, enc_heads=8, dec_dim=1024, dec_blocks=10,
                     dec_heads=16, num_codes=1024, latent_dim=32)
  c.lam.update(patch=16, dim=1024, enc_blocks=10, dec_blocks=10, num_heads=16, num_actions=8)
  # the tokenizer and lam_dynamics variants carry the full 10.1B model as their dynamics
  blocks, dim, heads, head_dim = DYNAMICS_SIZES.get(arg, DYNAMICS_SIZES["dynamics_11b"])
  c.dynamics.update(dim=dim, num_blocks=blocks, num_heads=heads, head_dim=head_dim)
  c.train.batch_size = 512
  c.dtype = "bfloat16"
  if arg in ("lam_dynamics", "dynamics_11b"):  # the 10.1B model: FSDP over the slice, full remat
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.remat = "full"
  return c
