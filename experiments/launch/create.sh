#!/usr/bin/env bash
# Creates the TPU VM slice (add SPOT=1 for spot capacity, which can be preempted; resume.sh
# brings a preempted run back).
#   BUCKET=gs://my-bucket ACCELERATOR=v5p-256 TPU_NAME=genie bash experiments/launch/create.sh
source "$(dirname "$0")/common.sh"
gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" --accelerator-type "$ACCELERATOR" \
    --version "$RUNTIME" ${SPOT:+--spot}
