# Shared settings of the Cloud TPU launch scripts; every value can be overridden from the
# environment, e.g.  TPU_NAME=genie-11b ACCELERATOR=v5p-256 BUCKET=gs://my-bucket bash create.sh
set -euo pipefail
TPU_NAME=${TPU_NAME:-genie}
ZONE=${ZONE:-us-east5-a}
ACCELERATOR=${ACCELERATOR:-v5p-256}
# the TPU VM software version matching the generation (Cloud TPU docs, "TPU VM images")
case "$ACCELERATOR" in
  v5p-*) RUNTIME=${RUNTIME:-v2-alpha-tpuv5} ;;
  v5e-*|v5litepod-*) RUNTIME=${RUNTIME:-v2-alpha-tpuv5-lite} ;;
  v6e-*) RUNTIME=${RUNTIME:-v2-alpha-tpuv6e} ;;
  *) RUNTIME=${RUNTIME:-tpu-ubuntu2204-base} ;;
esac
BUCKET=${BUCKET:?set BUCKET=gs://your-bucket (datasets and runs live there)}
MOUNT=/gcs/${BUCKET#gs://}   # where every worker mounts the bucket (gcsfuse)
CODE_DIR=genie_jax           # the repository's copy in each worker's home
on_all_workers() { gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$1"; }
