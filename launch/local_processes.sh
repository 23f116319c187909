#!/usr/bin/env bash
# Several JAX processes on this machine, as on several hosts: each process owns
# DEVICES_PER_PROCESS CPU devices and reads its own shard of every batch; collectives run over
# gloo. The same code path as a TPU pod or a GPU cluster, testable on a laptop.
#
#   usage: launch/local_processes.sh NUM_PROCESSES --config=configs/demo.py --workdir=runs/mp [...]
#
# Environment: PORT (the coordinator's port on 127.0.0.1; default: a free one), PYTHON (default:
# the checkout's .venv/bin/python, else python3), DEVICES_PER_PROCESS (default 2), STOP_GRACE_S
# (default 5). When a process fails, the others are stopped (SIGTERM, then SIGKILL after
# STOP_GRACE_S: a JAX process that joined the job only notes SIGTERM) and the script exits with
# the failed process's status; Ctrl-C stops them all. A rerun of the same command resumes.
set -euo pipefail

prog=launch/local_processes.sh
die() { echo "$prog: error: $1" >&2; exit 2; }
((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 403)) ||
  die "needs bash >= 4.3 (wait -n), this is $BASH_VERSION (macOS: brew install bash)"
num=${1:-}
[[ $num =~ ^[1-9][0-9]*$ ]] ||
  die "NUM_PROCESSES must be a positive integer, not '$num'
usage: $prog NUM_PROCESSES --config=... --workdir=... [agg_jax.main flags]"
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x $repo/.venv/bin/python ]]; then python=$repo/.venv/bin/python; else python=python3; fi
fi
grace=${STOP_GRACE_S:-5}
[[ $grace =~ ^[0-9]+$ ]] || die "STOP_GRACE_S must be whole seconds, not '$grace'"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -n ${PORT:-} ]]; then
  [[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "PORT must be 1-65535"
  ! listening "$PORT" || die "port $PORT is in use (leave PORT unset to get a free one)"
  port=$PORT
else
  for _ in {1..100}; do
    port=$((20000 + RANDOM % 40000))
    listening "$port" || break
  done
fi
echo "$prog: $num processes, coordinator 127.0.0.1:$port" >&2

export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-2}"
pids=()
stop_all() {  # SIGTERM, then SIGKILL what is left after the grace period
  local pid deadline=$((SECONDS + grace))
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap 'echo "$prog: interrupted, stopping the processes" >&2; stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

for ((i = 0; i < num; i++)); do
  "$python" -m agg_jax.main "$@" --distributed --coordinator_address="127.0.0.1:$port" \
    --num_processes="$num" --process_id="$i" &
  pids+=($!)
done
for ((i = 0; i < num; i++)); do
  status=0
  wait -n || status=$?
  if ((status != 0)); then
    echo "$prog: a process exited with status $status; stopping the others" >&2
    stop_all
    exit "$status"
  fi
done
