#!/usr/bin/env bash
# Keeps a run going through preemption: while the run's command fails, waits for the slice,
# recreates it if it was preempted or deleted, redeploys, and reruns train.sh, which resumes
# from the last complete checkpoint (SIGTERM on preemption makes the trainer save first).
#   BUCKET=gs://my-bucket SPOT=1 bash experiments/launch/resume.sh CONFIG RUN [DATA] [flags]
source "$(dirname "$0")/common.sh"
HERE=$(dirname "$0")
until bash "$HERE/train.sh" "$@"; do
  state=$(gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" --format="value(state)" 2>/dev/null || echo MISSING)
  echo "run stopped; slice state: $state"
  if [ "$state" = "PREEMPTED" ] || [ "$state" = "MISSING" ]; then
    [ "$state" = "PREEMPTED" ] && gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone "$ZONE" --quiet
    bash "$HERE/create.sh" && bash "$HERE/deploy.sh"
  fi
  sleep 60
done
