#!/usr/bin/env bash
# Several JAX processes on this machine, as on several hosts: each process owns
# DEVICES_PER_PROCESS CPU devices and reads its own shard of every batch; collectives run over
# gloo. The same code path as a TPU pod or a GPU cluster, testable on a laptop.
#   usage: launch/local_processes.sh NUM_PROCESSES --config=configs/demo.py --workdir=runs/mp [...]
set -euo pipefail
num=${1:?usage: $0 NUM_PROCESSES --config=... --workdir=... [overrides]}
shift
port=${PORT:-12355}
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-2}"
pids=()
for ((i = 0; i < num; i++)); do
  python -m agg_jax.main "$@" --distributed --coordinator_address="127.0.0.1:${port}" \
    --num_processes="$num" --process_id="$i" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
