#!/usr/bin/env bash
# Copies this repository to every worker, installs it with libtpu, and mounts the bucket
# with gcsfuse at $MOUNT on each worker (checkpoints must be on storage every host sees).
#   BUCKET=gs://my-bucket bash experiments/launch/deploy.sh
source "$(dirname "$0")/common.sh"
cd "$(dirname "$0")/../.."
git archive --format=tar.gz -o /tmp/genie_jax.tar.gz HEAD
gcloud compute tpus tpu-vm scp /tmp/genie_jax.tar.gz "$TPU_NAME": --zone "$ZONE" --worker=all
on_all_workers "set -e; rm -rf $CODE_DIR && mkdir -p $CODE_DIR && tar -xzf genie_jax.tar.gz -C $CODE_DIR
  cd $CODE_DIR && pip install -q -e '.[tpu]'
  if ! mountpoint -q $MOUNT; then
    (command -v gcsfuse >/dev/null || (sudo apt-get update -q && sudo apt-get install -yq gcsfuse))
    sudo mkdir -p $MOUNT && sudo chown \$USER $MOUNT && gcsfuse --implicit-dirs ${BUCKET#gs://} $MOUNT
  fi"
