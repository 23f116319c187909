#!/usr/bin/env bash
# One agg_jax.main command on every host of a Cloud TPU pod slice, from this git checkout:
#   1. `git archive HEAD` (the last commit, never uncommitted edits) is copied to every worker
#      (`gcloud compute tpus tpu-vm scp --worker=all`);
#   2. each worker unpacks it into ~/agg_jax/<commit> and installs it there in its own venv
#      (python3 -m venv, pip install -e . "jax[tpu]"), once per commit: a later launch of the
#      same commit skips this;
#   3. every worker runs `.venv/bin/python -m agg_jax.main --distributed ARGS` in that folder
#      (`gcloud compute tpus tpu-vm ssh --worker=all`); jax.distributed.initialize() finds the
#      coordinator and the process ids by itself on TPU VMs. The job lives as long as these ssh
#      connections: launch from tmux or screen. A rerun of the same command resumes.
# The run directory must be one that every host sees: --workdir=gs://bucket/run.
#
#   usage: launch/tpu_pod.sh [--dry-run] [--allow-dirty] TPU_NAME ZONE [agg_jax.main flags]
#   e.g.   DRY_RUN=1 launch/tpu_pod.sh my-tpu us-central2-b --config=configs/default.py \
#              --workdir=gs://my-bucket/runs/v2s --config.train.batch_size=256
#
# Options, as leading flags or in the environment:
#   --dry-run, DRY_RUN=1          print the commands, one a line, and run none of them
#   --allow-dirty, ALLOW_DIRTY=1  launch although tracked files have uncommitted changes (which
#                                 are not shipped: the workers run HEAD)
#   PROJECT                       gcloud --project (default: gcloud's configured project)
#   REMOTE_DIR                    the code folders on the workers (default: agg_jax, under the
#                                 home directory; an absolute path also works, `~` does not)
#   REMOTE_PYTHON                 the workers' Python >= 3.11 (default: python3)
#   PIP_EXTRA                     installed beside the code (default: jax[tpu]; empty: nothing)
# Exit status: 2 on a usage mistake (nothing was run), else that of the failing command.
set -euo pipefail

prog=launch/tpu_pod.sh
usage="usage: $prog [--dry-run] [--allow-dirty] TPU_NAME ZONE [agg_jax.main flags]"
die() { echo "$prog: error: $1" >&2; exit 2; }

dry_run=${DRY_RUN:-0}
allow_dirty=${ALLOW_DIRTY:-0}
while (($#)) && [[ $1 == -* ]]; do
  case $1 in
    --dry-run) dry_run=1 ;;
    --allow-dirty) allow_dirty=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option $1 (the agg_jax.main flags come after TPU_NAME ZONE)
$usage" ;;
  esac
  shift
done
(($# >= 2)) || die "TPU_NAME and ZONE are required
$usage"
tpu=$1 zone=$2
shift 2
[[ $dry_run == [01] ]] || die "DRY_RUN must be 0 or 1, not '$dry_run'"
[[ $allow_dirty == [01] ]] || die "ALLOW_DIRTY must be 0 or 1, not '$allow_dirty'"

# One word for a POSIX shell: bare when safe, else in single quotes (after a --flag=).
q() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$1"
  elif [[ $1 =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"; q "${BASH_REMATCH[2]}"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
words() { local w out=(); for w in "$@"; do out+=("$(q "$w")"); done; echo "${out[*]-}"; }
# Runs a command, or prints it (one line, copyable) on a dry run.
run() {
  if ((dry_run)); then words "$@"; else echo "+ $(words "$@")" >&2; "$@"; fi
}

repo=$(cd "$(dirname "$0")/.." && pwd)
commit=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null) ||
  die "$repo is not a git checkout with a commit: the workers get \`git archive HEAD\`"
if [[ -n $(git -C "$repo" status --porcelain --untracked-files=no) ]]; then
  ((allow_dirty)) || die "tracked files have uncommitted changes, and the workers would run \
commit $commit without them: commit them, or pass --allow-dirty (ALLOW_DIRTY=1)"
  echo "$prog: warning: uncommitted changes are not shipped; the workers run commit $commit" >&2
fi
workdir_on_gcs=0 prev=
for arg in "$@"; do
  if [[ $arg == --workdir=gs://* || ($prev == --workdir && $arg == gs://*) ]]; then
    workdir_on_gcs=1
  fi
  prev=$arg
done
((workdir_on_gcs)) || echo "$prog: warning: no --workdir=gs://...: every host must see the \
same run directory" >&2

gcloud_flags=(--worker=all "--zone=$zone")
if [[ -n ${PROJECT:-} ]]; then gcloud_flags+=("--project=$PROJECT"); fi
dir=${REMOTE_DIR:-agg_jax}/$commit
archive=agg_jax-$commit.tar.gz  # in the workers' home directory until it is unpacked
read -r -a extra <<<"${PIP_EXTRA-jax[tpu]}"
local_tmp=$(mktemp -d)
trap 'rm -rf "$local_tmp"' EXIT

run git -C "$repo" archive --format=tar.gz "--output=$local_tmp/$archive" "$commit"
run gcloud compute tpus tpu-vm scp "$local_tmp/$archive" "$tpu:$archive" "${gcloud_flags[@]}"
# Each worker: unpack and install, unless this commit is installed there already.
d=$(q "$dir")
pip=".venv/bin/python -m pip install --quiet --disable-pip-version-check -e ."
if ((${#extra[@]})); then pip+=" $(words "${extra[@]}")"; fi
install="tar -xzf \"\$HOME\"/$archive && $(q "${REMOTE_PYTHON:-python3}") -m venv .venv && $pip \
&& touch .venv/.installed"
run gcloud compute tpus tpu-vm ssh "$tpu" "${gcloud_flags[@]}" --command="mkdir -p $d && cd $d \
&& if [ -e .venv/.installed ]; then echo \"\$(hostname): $d is installed\"; else $install; fi \
&& rm -f \"\$HOME\"/$archive"
run gcloud compute tpus tpu-vm ssh "$tpu" "${gcloud_flags[@]}" \
  --command="cd $d && .venv/bin/python -m agg_jax.main --distributed $(words "$@")"
