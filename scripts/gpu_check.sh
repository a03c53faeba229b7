#!/usr/bin/env bash
# The GPU checks of fused attention, training speed and memory, and the sampler, in one
# call on a lent H100 or H200 (each step has its own time limit; all of them together
# take up to about 12 minutes, more than a session's 15 minutes leave after a start:
# name fewer with ONLY). Session 11's two calls and what they found: README, On a GPU.
#
# 1. Here, once, in the repository root (the lent machine cannot reach PyPI; .whl/ is
#    git-ignored). flax 0.12.10 is the first flax that imports with that machine's
#    jax 0.11.2, and ml_collections is absent there:
#        bash scripts/gpu_check.sh --download-wheels
# 2. One device call: command "ONLY=... bash scripts/gpu_check.sh", carry [".whl"].
#    ONLY: a comma list of attention, phase2, tokenizer_jasmine, tokenizer_paper,
#    sampler, phase2_xla (all by default, in that order; a list runs in its own order). Per-step limits in seconds:
#    L_ATTENTION, L_PHASE2, L_TOKENIZER_JASMINE, L_TOKENIZER_PAPER, L_SAMPLER,
#    L_PHASE2_XLA; the remat policies tried in turn: REMATS (tokenizer), REMATS_PHASE2;
#    B_PHASE2: the phase-2 steps' batch; PHASE2_FLAGS, SAMPLER_FLAGS: more flags for the phase-2
#    bench_train run (e.g. --compare_unrolled) and for bench_sampler (e.g. --variants off,cast_weights).
# 3. Read $OUT/gpu_check.log (everything printed), $OUT/results.json and the traces;
#    both are rewritten after every step, so a call stopped at its limit still returns
#    what it measured.
#
# What it runs:
#   a. scripts/attention_check.py: cuDNN flash attention vs XLA in bf16 at the model's
#      shapes (spatial 256/257/921 tokens, causal temporal over 16 frames up to 70k
#      rows, the frame cache's step with kv lengths), forward and gradients against a
#      float32 reference, plus an ST stack and its cached step;
#   b. scripts/bench_train.py, attention auto (cuDNN), bf16, with --profile (where each
#      step's device time goes, by kernel):
#      b1. the paper's CoinRun tokenizer (B=48, T=16, patch 4): remat none, and only if
#          that does not fit, qkv, then full: the first that fits gives the peak;
#      b2. the phase-2 step (LAM + dynamics) and the dynamics alone at the paper's shapes,
#          remat none and, if that does not fit, full;
#      b3. the tokenizer at patch 16, B=48 (Jasmine's 0.047 s/step);
#   c. scripts/bench_sampler.py at the paper's shapes: cached frame vs recompute, and the
#      environment path (decode and host copy included, window full) with 1 and 16
#      worlds stepped as one batch (again with xla if that fails);
#   d. the phase-2 step with attention xla, for the ratio to b2 in the same run.
# The traces of b come back gzipped beside the log ($OUT/trace_*.xplane.pb.gz).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

if [[ "${1:-}" == "--download-wheels" ]]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl flax==0.12.10 ml_collections==1.1.0
  exit $?
fi
SMOKE=0
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
# which steps (all by default); a second call with less device time left can name fewer
STEPS_ALL=attention,phase2,tokenizer_jasmine,tokenizer_paper,sampler,phase2_xla
ONLY=${ONLY:-$STEPS_ALL}
for step in ${ONLY//,/ }; do  # a typo would otherwise run nothing and spend the device time
  [[ ",$STEPS_ALL," == *",$step,"* ]] || { echo "ONLY names an unknown step '$step'; choose from $STEPS_ALL"; exit 2; }
done

OUT=${OUT:-$REPO/gpu_check_out}
mkdir -p "$OUT"
WORK=$(mktemp -d)
exec > >(tee "$OUT/gpu_check.log") 2>&1

export PYTHONPATH=$REPO
# the wheels only where the machine's own flax or ml_collections do not import
if ! python3 -c "import flax, ml_collections" 2>/dev/null; then
  compgen -G ".whl/*.whl" > /dev/null || { echo "flax/ml_collections do not import and .whl/ is empty: run --download-wheels here first"; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing .whl/ failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$REPO
fi
export PYTHONUNBUFFERED=1
if [[ $SMOKE == 1 ]]; then
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
  SHAPES=jasmine DTYPE=float32 STEPS=2 LIMIT=300 ATTN_FLAGS="--repeats 1" B48=4
else
  export JAX_PLATFORMS=cuda  # the benchmarks default to cpu when it is unset
  export XLA_PYTHON_CLIENT_MEM_FRACTION=0.95  # the paper's tokenizer batch needs more than jax's default 75%
  SHAPES=paper DTYPE=bfloat16 STEPS=5 LIMIT=0 ATTN_FLAGS="" B48=48
fi
limit() { local seconds=$1; shift; [[ $LIMIT != 0 ]] && seconds=$LIMIT; timeout --signal=INT "$seconds" "$@"; }

date -u
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
python3 -c "import sys, jax, flax; print('python', sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, jax.devices())" \
  || { echo "jax/flax do not import"; exit 1; }

collect() {  # results so far -> $OUT/results.json, and the auto runs' traces, gzipped (after every step, so
             # a command stopped at its limit still returns what it measured)
  python3 - "$WORK" "$OUT/results.json" <<'EOF'
import glob, json, os, sys
work, out = sys.argv[1:]
results = {os.path.basename(p)[:-5]: json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, "*.json")))}
json.dump(results, open(out, "w"), indent=2)
EOF
  for dir in "$WORK"/prof_*/*; do
    [[ -d $dir && $dir != *_xla/* ]] || continue
    local out="$OUT/trace_$(basename "$(dirname "$dir")")_$(basename "$dir").xplane.pb.gz" trace
    [[ -e $out ]] && continue  # gzipped after an earlier step
    trace=$(find "$dir" -name '*.xplane.pb' | head -1)
    [[ -n $trace ]] && gzip -c "$trace" > "$out"
  done
}

step_attention() {
  echo "== a. fused vs XLA attention =="
  limit ${L_ATTENTION:-90} python3 scripts/attention_check.py $ATTN_FLAGS --json "$WORK/attention.json"
  echo "attention_check exit $?"; collect
}

train() {  # name limit flags...: one bench_train run, its results in $WORK/train_<name>.json
  local name=$1 seconds=$2; shift 2
  echo "== b. bench_train $name: $* =="
  limit "$seconds" python3 scripts/bench_train.py --dtype $DTYPE --steps $STEPS --json "$WORK/train_$name.json" \
    --profile "$WORK/prof_$name" "$@"
  local status=$?
  echo "bench_train $name exit $status"; collect
  return $status
}
# B_PHASE2: the phase-2 and dynamics steps' batch (default: the config's 48; at B=48 remat none
# needed 92 GiB on an 80 GB H100, so B=36, the issue's batch, is the one that can run without remat)
PHASE2_BATCH=${B_PHASE2:+--batch $B_PHASE2}
step_phase2() {
  for remat in ${REMATS_PHASE2:-none full}; do
    train "phase2_${SHAPES}_auto_$remat" ${L_PHASE2:-130} --shapes $SHAPES --attention auto \
      --parts lam_dynamics,dynamics --remat $remat $PHASE2_BATCH ${PHASE2_FLAGS:-} && break
  done
}
step_tokenizer_jasmine() {
  train "tokenizer_jasmine_b$B48" ${L_TOKENIZER_JASMINE:-60} --shapes jasmine --batch $B48 --attention auto \
    --parts tokenizer
}
step_tokenizer_paper() {
  for remat in ${REMATS:-none qkv full}; do  # b1: the cheapest remat policy that fits
    train "tokenizer_${SHAPES}_$remat" ${L_TOKENIZER_PAPER:-150} --shapes $SHAPES --attention auto --parts tokenizer \
      --remat $remat && break
  done
}
step_sampler() {
  echo "== c. sampler and environment, shapes $SHAPES, $DTYPE, attention auto =="
  # SAMPLER_FLAGS: more flags, e.g. --variants off,cast_weights --skip_recompute
  limit ${L_SAMPLER:-90} python3 scripts/bench_sampler.py --shapes $SHAPES --dtype $DTYPE --attention auto \
    --frames $STEPS --env_batches 1,16 --profile "$WORK/prof_sampler" ${SAMPLER_FLAGS:-} \
    --json "$WORK/sampler_auto.json"
  local status=$?
  echo "bench_sampler exit $status"; collect
  if [[ $status != 0 ]]; then  # still measure the environment path if a fused kernel failed there
    echo "== c'. the same with attention xla =="
    limit 80 python3 scripts/bench_sampler.py --shapes $SHAPES --dtype $DTYPE --attention xla --frames $STEPS \
      --env_batches 1,16 --json "$WORK/sampler_xla.json"
    echo "bench_sampler (xla) exit $?"; collect
  fi
}
step_phase2_xla() {
  echo "== d. the phase-2 step with XLA attention (the baseline of b2) =="
  train "phase2_${SHAPES}_xla" ${L_PHASE2_XLA:-60} --shapes $SHAPES --attention xla --parts lam_dynamics $PHASE2_BATCH
}
for step in ${ONLY//,/ }; do  # in ONLY's order, so a call can put first what matters most
  "step_$step"
done
ls -la "$OUT"
date -u
