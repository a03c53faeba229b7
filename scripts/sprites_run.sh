#!/usr/bin/env bash
# The sprite-world recipe (experiments/sprites.py): data, tokenizer, LAM + dynamics, and the
# held-out evaluation, on this 2-core machine. Extra arguments go to both training phases
# (e.g. --config.seed=1), so the same script checks other seeds.
#   bash scripts/sprites_run.sh RUN_DIR [--config.x=y ...]
# Rerunning resumes: the dataset is reused and each phase restarts from its checkpoint.
# SPRITES_WORLD="--sprite 8 --speed 4 --background stripes" builds another world.
set -euo pipefail
RUN=${1:-runs/sprites}
shift || true
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
mkdir -p "$RUN"
start=$(date +%s)
if [ ! -d "$RUN/data/sprites" ]; then
  # shellcheck disable=SC2086
  python -m data_pipelines.sprites --data_dir "$RUN/data" --episodes 128 --eval_episodes 64 \
      --max_steps 48 ${SPRITES_WORLD:-}
fi
python -m genie_jax.train --config experiments/sprites.py:tokenizer --workdir "$RUN/tokenizer" \
    --config.data.data_dir "$RUN/data" "$@"
python -m genie_jax.train --config experiments/sprites.py:lam_dynamics --workdir "$RUN/lam_dynamics" \
    --config.data.data_dir "$RUN/data" --config.train.tokenizer_workdir "$RUN/tokenizer" "$@"
python -m genie_jax.evaluate --config experiments/sprites.py:lam_dynamics --workdir "$RUN/lam_dynamics" \
    --config.data.data_dir "$RUN/data" --num_clips 64 --fvd_clips 0 --out "$RUN/eval"
echo "sprites recipe: $(( ($(date +%s) - start) / 60 )) min in all -> $RUN/eval/metrics.json"
