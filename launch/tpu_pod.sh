#!/usr/bin/env bash
# The same command on every host of a Cloud TPU pod slice. jax.distributed.initialize() finds
# the coordinator and process ids by itself on TPU VMs; each host reads its own data shard.
#   usage: launch/tpu_pod.sh TPU_NAME ZONE --config=configs/default.py --workdir=gs://.../run [...]
# The repository must be checked out at ~/agg_jax on every host (and `make install` run there).
set -euo pipefail
tpu=${1:?usage: $0 TPU_NAME ZONE --config=... --workdir=...}
zone=${2:?usage: $0 TPU_NAME ZONE --config=... --workdir=...}
shift 2
args=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command \
  "cd ~/agg_jax && .venv/bin/python -m agg_jax.main --distributed ${args}"
