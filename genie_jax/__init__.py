"""genie_jax: Genie (Bruce et al., 2024) in JAX / Flax NNX.

Shape legend used everywhere: B batch, T frames, H W pixels, h w token grid,
S = h*w tokens per frame, D model width, N heads, K codebook size, A latent actions,
V vocabulary, L layers.
"""
from flax import nnx as _nnx

# Variables are created unsharded and placed by `jax.jit(..., out_shardings=...)` from
# their logical axis names (see genie_jax/parallel.py), so flax's eager sharding, which
# needs a global mesh at construction time, is turned off for the whole package.
_nnx.use_eager_sharding(False)
