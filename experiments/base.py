"""Fields every experiment shares; each experiment file overrides what it changes.

Sizes are in ST blocks. The paper counts attention layers, and each block has two
(spatial + temporal), so the paper's "48 layers" is 24 blocks here: that reading gives
the 10.1B dynamics model exactly (24 blocks x 16 x 5120^2), the ~200M tokenizer, and
Jasmine's 4+4 / 6-block CoinRun shapes for the paper's 8+8 / 12 layers.
"""
import ml_collections

from genie_jax.parallel import DEFAULT_RULES
from genie_jax.sampling import SPEED_DEFAULTS


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.phase = "tokenizer"            # tokenizer | lam_dynamics
  c.seed = 0
  c.dtype = "float32"              # compute dtype: float32 | bfloat16 (params stay float32)
  c.remat = "none"                 # none | full | temporal_kv | temporal_qkv | qkv | offload_temporal_qkv | offload_qkv | dots_no_batch | dots
  c.scan_layers = True             # run each block stack as a lax.scan (False: a Python loop)
  c.attention = "auto"             # auto | xla | cudnn | pallas_tpu (genie_jax/models/attention.py)

  c.data = ml_collections.ConfigDict(dict(
      name="coinrun", data_dir="data", split="train", eval_split="validation",
      window=16, stride=1, num_threads=2, height=64, width=64,
      on_bad_record="stop"))       # a record that cannot be decoded: stop (naming it) | skip (counted)

  c.tokenizer = ml_collections.ConfigDict(dict(
      patch=4, enc_dim=512, enc_blocks=4, enc_heads=8, dec_dim=512, dec_blocks=4, dec_heads=8,
      num_codes=1024, latent_dim=32, dead_code_steps=0,
      quantizer="vq", fsq_levels=(8, 5, 5, 5),  # vq: the paper; fsq: num_codes = prod(levels)
      encoder="video",             # video: the paper (z_t sees frames < t); frame: each frame alone
      change_weight=0.0,           # > 0: pixels that move weigh 1 + w in the loss (0: the paper's MSE)
      out_hidden=0,                # > 0: a gelu layer of this width before the pixels (0: linear)
      refine_channels=0))          # > 0: per-pixel features and two 3x3 convolutions after the pixels
  c.lam = ml_collections.ConfigDict(dict(
      patch=16, dim=512, enc_blocks=4, dec_blocks=4, num_heads=8, num_actions=6, latent_dim=32,
      dead_code_steps=100, weight=1.0,
      # the paper: vq, pixels, whole frames, the whole clip, unshifted (lam.py; README, "A
      # world that obeys its actions")
      quantizer="vq", predict_delta=False, encoder_input="frames",
      encoder_context="clip",       # clip: the paper; transition: a_t from (x_t, x_t+1) alone
      encoder_shift=False,          # True: the encoder reads training clips randomly shifted
      decoder_scroll="none",        # previous | current: the decoder is told the view's move (lam.py)
      focus_weight=0.0,             # > 0: the error's pixels in the centre box weigh 1 + w (losses.py)
      focus_size=16,                # that box's side, in pixels (where CoinRun keeps its player)
      null_weight=0.0,              # > 0: the decoder also learns to predict with no action (lam.py)
      soft_weight=0.0,              # > 0: the decoder also learns from the continuous latent
      usage_weight=0.01))           # the categorical quantizer's batch-usage term (quantizer.py)
  c.dynamics = ml_collections.ConfigDict(dict(
      dim=512, num_blocks=6, num_heads=8, head_dim=0, action_conditioning="token",
      mask_rate_min=0.5, mask_rate_max=1.0, full_mask_prob=0.0,  # P(a target frame is masked whole)
      mask_scheme="all_frames",    # all_frames: the paper; one_frame; teacher_forced (losses.mask_tokens)
      token_head="joint",         # joint: the paper; fsq_digits: one softmax per FSQ channel
      change_weight=0.0,          # > 0: tokens that differ from the frame before weigh 1 + w (0: the paper)
      previous_frame=False))      # True: each token also sees the one at its place in the frame before
  # and the speed switches (unroll, cast_weights, unroll_layers), which change how a frame is
  # computed, not its values (genie_jax/sampling.py, SPEED_DEFAULTS)
  c.sampling = ml_collections.ConfigDict(dict(steps=25, temperature=1.0, gumbel_scale=1.0, **SPEED_DEFAULTS))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, num_devices=0))  # 0: all devices
  c.rules = DEFAULT_RULES

  c.optim = ml_collections.ConfigDict(dict(
      lr=3e-4, end_lr_ratio=0.1, warmup_steps=1000, b1=0.9, b2=0.9, weight_decay=1e-4,
      grad_clip=1.0, grad_accum=1,
      grad_clip_scope="global"))   # global: one norm over all params | per_model: each top-level model its own
  c.train = ml_collections.ConfigDict(dict(
      steps=200_000, batch_size=48, log_every=100, image_every=1000, ckpt_every=1000,
      keep=3, keep_period=0, tokenizer_workdir="", eval_every=0, eval_clips=16,
      dynamics_actions="lam",    # "true": the control run (dynamics fed the dataset's actions)
      lam_warmup_steps=0))       # phase 2: the first N steps train the LAM alone (0: the paper)
  return c
