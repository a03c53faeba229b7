#!/usr/bin/env bash
# The CPU reference run quoted in the README: every phase of a small CoinRun model on a
# 2-core machine in about an hour, then the full evaluation (FVD, ΔtPSNR, PSNR/SSIM).
#   bash scripts/cpu_reference_run.sh [RUN_DIR] [POLICY]   (defaults runs/cpu_reference, held)
# POLICY is the data's (data_pipelines/coinrun.py): held, random keys each held for 8 steps
# on average, as a person holds a key (since session 15); random, a new random key every
# step (the run before it; README, "CPU reference run").
# Rerunning resumes: the dataset is reused and each phase restarts from its checkpoint.
set -euo pipefail
RUN=${1:-runs/cpu_reference}
POLICY=${2:-held}
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
mkdir -p "$RUN"
if [ ! -d "$RUN/data/coinrun" ]; then
  python -m data_pipelines.coinrun --data_dir "$RUN/data" --episodes 400 --max_steps 200 \
      --num_levels 10000 --eval_episodes 40 --policy "$POLICY"
fi
python -m genie_jax.train --config experiments/coinrun.py:cpu_tokenizer \
    --workdir "$RUN/tokenizer" --config.data.data_dir "$RUN/data"
python -m genie_jax.train --config experiments/coinrun.py:cpu_lam_dynamics \
    --workdir "$RUN/lam_dynamics" --config.data.data_dir "$RUN/data" \
    --config.train.tokenizer_workdir "$RUN/tokenizer"
python -m genie_jax.evaluate --config experiments/coinrun.py:cpu_lam_dynamics \
    --workdir "$RUN/lam_dynamics" --config.data.data_dir "$RUN/data" \
    --config.train.tokenizer_workdir "$RUN/tokenizer" --num_clips 64 --out "$RUN/eval"
