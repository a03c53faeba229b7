#!/usr/bin/env bash
# Runs one training phase on every worker at once (one process per host; JAX finds the
# other hosts itself on a TPU slice). Rerunning the same command resumes from the latest
# checkpoint in the workdir.
#   BUCKET=gs://my-bucket bash experiments/launch/train.sh CONFIG RUN [DATA] [extra --config.* flags]
#   e.g. bash experiments/launch/train.sh experiments/platformers.py:dynamics_11b dyn11b platformers \
#            --config.train.tokenizer_workdir=/gcs/my-bucket/runs/tokenizer
# The dataset is read from $MOUNT/data/DATA (built once with data_pipelines.* into the bucket),
# the run is written to $MOUNT/runs/RUN.
source "$(dirname "$0")/common.sh"
CONFIG=${1:?config file.py:variant}
RUN=${2:?run name}
DATA=${3:-}
shift $(( $# < 3 ? $# : 3 ))
DATA_FLAG=""
if [ -n "$DATA" ]; then DATA_FLAG="--config.data.data_dir=$MOUNT/data"; fi
on_all_workers "cd $CODE_DIR && python -m genie_jax.train --config $CONFIG --workdir $MOUNT/runs/$RUN \
    $DATA_FLAG --distributed on $* 2>&1 | tee -a ~/train_$RUN.log"
