#!/usr/bin/env bash
#SBATCH --job-name=backtal
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
#
# backtal_jax on several GPUs, on one or more nodes, under SLURM: ONE TASK PER GPU.
#
# Why one task per GPU: under SLURM, `jax.distributed.initialize()` takes the coordinator, the
# process count and the process id from srun's environment, and it also gives each process the
# single local GPU numbered SLURM_LOCALID. One task per node would therefore leave every GPU but
# the first idle. The tasks must see all the node's GPUs (no --gpus-per-task, and srun gets
# --gpu-bind=none), since JAX picks GPU SLURM_LOCALID itself.
#
# Two ways in:
#   outside a job, the script submits itself with sbatch (settings below become sbatch flags);
#   inside a job (sbatch ran it, or you are in an salloc allocation), it runs
#   `srun python -m backtal_jax.main --config=... --workdir=... --distributed`.
# `sbatch launch/slurm_multi_gpu.sh --config=... --workdir=...` also works, with the header above.
# Activate the environment that has backtal_jax and jax[cuda12] before submitting: sbatch passes
# the environment on, or name the interpreter with --python.
set -euo pipefail

readonly PROG="${0##*/}"
# Inside a job this file is sbatch's spooled copy, run with --chdir at the checkout (or in the
# folder sbatch was called from, the checkout), so the helpers are found from there.
if [[ -n ${SLURM_JOB_ID:-} ]]; then
  source launch/common.sh
else
  # shellcheck source=launch/common.sh
  source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
fi

usage() {
  cat <<EOF
Usage: $PROG [options] [-- --config.a.b=value ...]

Options (flag / environment variable / default)
  --config PATH[:VARIANT]  BACKTAL_CONFIG         required: relative to the repo, e.g. configs/thumos.py
  --workdir DIR            BACKTAL_WORKDIR        required: a directory every node can reach
  --nodes N                BACKTAL_NODES          2
  --gpus-per-node G        BACKTAL_GPUS_PER_NODE  8 (also the tasks per node: one per GPU)
  --cpus-per-task C        BACKTAL_CPUS_PER_TASK  8
  --time T                 BACKTAL_TIME           24:00:00
  --partition P            BACKTAL_PARTITION      the cluster's default
  --account A              BACKTAL_ACCOUNT        the cluster's default
  --job-name NAME          BACKTAL_JOB_NAME       backtal
  --log-dir DIR            BACKTAL_LOG_DIR        slurm_logs (under the repo): %x-%j.out files
  --python PY              BACKTAL_PYTHON         python
  --dry-run                DRY_RUN=1              print the sbatch/srun commands, run none
  -h, --help                                      this help

  Arguments '--config.a.b=value' (anywhere) and everything after '--' go to backtal_jax.main.
  The global batch (config.train.batch_size) must be divisible by nodes x gpus-per-node;
  each process feeds batch_size / (nodes x gpus-per-node) examples.

Example
  $PROG --nodes=2 --gpus-per-node=4 --partition=gpu --config=configs/thumos.py \\
        --workdir=/shared/runs/thumos1 --config.train.batch_size=64
EOF
}

is_count() {
  [[ $1 =~ ^[1-9][0-9]*$ ]]
}

# The training command every task runs.
main_command() {
  MAIN=("$PYTHON" -m backtal_jax.main "--config=$CONFIG" "--workdir=$WORKDIR" --distributed
    "${PASSTHROUGH[@]}")
}

srun_command() {
  SRUN=(srun --kill-on-bad-exit=1 --gpu-bind=none)
  # srun does not inherit sbatch's --cpus-per-task (Slurm >= 22.05).
  [[ -z ${SLURM_CPUS_PER_TASK:-} ]] || SRUN+=("--cpus-per-task=$SLURM_CPUS_PER_TASK")
  main_command
  SRUN+=("${MAIN[@]}")
}

submit() {
  is_count "$NODES" || die "--nodes must be a positive integer, got '$NODES'"
  is_count "$GPUS_PER_NODE" || die "--gpus-per-node must be a positive integer, got '$GPUS_PER_NODE'"
  is_count "$CPUS_PER_TASK" || die "--cpus-per-task must be a positive integer, got '$CPUS_PER_TASK'"
  local here root script log_dir
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  root="$(dirname "$here")"
  script="$here/$(basename "${BASH_SOURCE[0]}")"
  log_dir=$LOG_DIR
  [[ $log_dir == /* ]] || log_dir="$root/$log_dir"
  local cmd=(sbatch "--job-name=$JOB_NAME" "--nodes=$NODES" "--ntasks-per-node=$GPUS_PER_NODE"
    "--gpus-per-node=$GPUS_PER_NODE" "--cpus-per-task=$CPUS_PER_TASK" "--time=$TIME")
  [[ -z $PARTITION ]] || cmd+=("--partition=$PARTITION")
  [[ -z $ACCOUNT ]] || cmd+=("--account=$ACCOUNT")
  cmd+=("--chdir=$root" "--output=$log_dir/%x-%j.out" "$script" "--config=$CONFIG"
    "--workdir=$WORKDIR" "--python=$PYTHON" -- "${PASSTHROUGH[@]}")
  echo "$PROG: $((NODES * GPUS_PER_NODE)) processes, one per GPU: config.train.batch_size must" \
    "be divisible by $((NODES * GPUS_PER_NODE))" >&2
  run_cmd mkdir -p "$log_dir"
  run_cmd "${cmd[@]}"
  if [[ $DRY_RUN == 1 ]]; then
    srun_command
    echo "# then, inside the job:"
    show_cmd "${SRUN[@]}"
  fi
}

run_in_job() {
  echo "$PROG: job ${SLURM_JOB_ID}: ${SLURM_NTASKS:-?} tasks on ${SLURM_JOB_NUM_NODES:-?} nodes" >&2
  srun_command
  run_cmd "${SRUN[@]}"
}

set_option() {
  case $1 in
    --config) CONFIG=$2 ;;
    --workdir) WORKDIR=$2 ;;
    --nodes) NODES=$2 ;;
    --gpus-per-node) GPUS_PER_NODE=$2 ;;
    --cpus-per-task) CPUS_PER_TASK=$2 ;;
    --time) TIME=$2 ;;
    --partition) PARTITION=$2 ;;
    --account) ACCOUNT=$2 ;;
    --job-name) JOB_NAME=$2 ;;
    --log-dir) LOG_DIR=$2 ;;
    --python) PYTHON=$2 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
}

main() {
  CONFIG=${BACKTAL_CONFIG:-}
  WORKDIR=${BACKTAL_WORKDIR:-}
  NODES=${BACKTAL_NODES:-2}
  GPUS_PER_NODE=${BACKTAL_GPUS_PER_NODE:-8}
  CPUS_PER_TASK=${BACKTAL_CPUS_PER_TASK:-8}
  TIME=${BACKTAL_TIME:-24:00:00}
  PARTITION=${BACKTAL_PARTITION:-}
  ACCOUNT=${BACKTAL_ACCOUNT:-}
  JOB_NAME=${BACKTAL_JOB_NAME:-backtal}
  LOG_DIR=${BACKTAL_LOG_DIR:-slurm_logs}
  PYTHON=${BACKTAL_PYTHON:-python}
  parse_options "$@"
  [[ -n $CONFIG ]] || die "missing --config (or the environment variable BACKTAL_CONFIG):" \
    "the config file, e.g. configs/thumos.py"
  [[ -n $WORKDIR ]] || die "missing --workdir (or the environment variable BACKTAL_WORKDIR):" \
    "a directory every node can reach"
  if [[ -n ${SLURM_JOB_ID:-} ]]; then
    run_in_job
  else
    submit
  fi
}

main "$@"
