#!/usr/bin/env bash
# Cloud TPU VM life cycle for backtal_jax: create (retrying while capacity is short), set up every
# worker, run the trainer on every worker, follow worker 0's log, stop, delete.
#
# A pod slice has several hosts ("workers"); each runs the same program and JAX's multi-controller
# runtime (`--distributed`) joins them, so every remote step here targets `--worker=all`.
# Run `launch/tpu_vm.sh --help` for the settings; launch/README.md has worked examples.
set -euo pipefail

if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 404)); then
  echo "${0##*/}: needs bash >= 4.4, this is $BASH_VERSION (macOS: brew install bash)" >&2
  exit 2
fi

readonly PROG="${0##*/}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
# shellcheck source=launch/common.sh
source "$REPO_ROOT/launch/common.sh"

usage() {
  cat <<EOF
Usage: $PROG COMMAND [options] [-- --config.a.b=value ...]

Commands
  create   create the TPU VM; retries with backoff while the zone is out of capacity
  setup    on every worker: copy (or clone) the repo, make a Python venv, install the package
           with its gcs extra (gs:// workdirs) and the TPU build of JAX
  run      start 'python -m backtal_jax.main --config=... --workdir=... --distributed' on every
           worker (in the background, each writing its own log), then stream worker 0's log; the
           exit status is worker 0's
  logs     stream worker 0's log of a run again (after Ctrl-C, or from another terminal)
  stop     stop the run on every worker
  delete   delete the TPU VM (no prompt)
  bench    on worker 0 of a set-up single-host TPU VM: the affinity microbenchmark (the XLA forms,
           the fused Pallas kernel and the dense matmul of equal FLOPs, timed;
           benchmarks/affinity_kernel.py) and the train-step benchmark (benchmarks/train_step.py),
           then copy their JSON files here, into --bench-out
  preflight  on THIS machine, no TPU needed (pip install 'jax[tpu]' for libtpu): compile the
           whole train step for --accelerator-type with the TPU compiler and report per chip
           FLOPs, bytes, HBM use against capacity and the roofline step time, so you learn the
           program fits before paying for the slice (benchmarks/tpu_compile.py; datasets from
           BACKTAL_PREFLIGHT_DATASETS, default thumos14; --config.a.b=value overrides pass on)

Options (flag / environment variable / default)
  --name NAME              TPU_NAME               required: the TPU VM's name
  --zone ZONE              TPU_ZONE               required: e.g. us-central2-b
  --project PROJECT        TPU_PROJECT            gcloud's configured project
  --accelerator-type TYPE  TPU_ACCELERATOR_TYPE   v4-8 (a pod slice: v4-32, v5p-16, ...)
  --version VERSION        TPU_VERSION            tpu-ubuntu2204-base (v5e: v2-alpha-tpuv5-lite,
                                                  v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e)
  --spot                   TPU_SPOT=1             off: create a spot TPU VM
  --preemptible            TPU_PREEMPTIBLE=1      off: create a preemptible TPU VM
  --attempts N             TPU_CREATE_ATTEMPTS    10: create tries while capacity is short
  --retry-sleep SECONDS    TPU_RETRY_SLEEP        60: first wait, doubled after each try ...
  --max-retry-sleep SEC    TPU_MAX_RETRY_SLEEP    600: ... up to this
  --repo URL               BACKTAL_REPO           none: copy this checkout (tracked and untracked,
                                                  not ignored files); with a URL: git clone it
  --ref REF                BACKTAL_REF            none: with --repo, the commit/tag/origin/branch
                                                  to check out (default: the default branch)
  --remote-dir DIR         BACKTAL_REMOTE_DIR     backtal_jax (relative paths: under \$HOME)
  --venv DIR               BACKTAL_VENV           backtal_venv (relative paths: under \$HOME)
  --python-version X.Y     BACKTAL_PYTHON_VERSION 3.12 (JAX needs >= 3.11; the TPU VM images have
                                                  3.10, so setup makes a venv with uv)
  --jax-spec SPEC          BACKTAL_JAX_SPEC       jax[tpu]
  --config PATH[:VARIANT]  BACKTAL_CONFIG         required by run: relative to the repo
  --workdir DIR            BACKTAL_WORKDIR        required by run: gs://bucket/path on a pod slice
  --run-id ID              BACKTAL_RUN_ID         run: UTC date-time; logs/stop: the latest run
  --log-dir DIR            BACKTAL_LOG_DIR        backtal_logs: per-run logs on each worker
  --bench-dir DIR          BACKTAL_BENCH_DIR      backtal_bench: bench's JSON files on worker 0
  --bench-out DIR          BACKTAL_BENCH_OUT      tpu_bench: where bench copies them on this machine
  --dry-run                DRY_RUN=1              print the commands, run none of them
  -h, --help                                      this help

  Arguments '--config.a.b=value' (anywhere) and everything after '--' go to backtal_jax.main.
  The global batch (config.train.batch_size) must be divisible by the total device count.

Examples
  $PROG create --name=tal --zone=us-central2-b --accelerator-type=v4-32 --spot
  $PROG setup  --name=tal --zone=us-central2-b
  $PROG run    --name=tal --zone=us-central2-b --config=configs/thumos.py \\
               --workdir=gs://my-bucket/thumos/run1 --config.train.batch_size=64
  $PROG delete --name=tal --zone=us-central2-b
EOF
}

require() {
  local value=$1 flag=$2 env=$3 what=$4
  [[ -n $value ]] || die "missing $flag (or the environment variable $env): $what"
}

# A remote path as shell text for the worker's shell: relative paths are taken under $HOME there.
remote_path() {
  if [[ $1 == /* ]]; then
    printf '%q' "$1"
  else
    # shellcheck disable=SC2016  # $HOME is for the worker's shell
    printf '"$HOME"/%q' "$1"
  fi
}

gcloud_tpu() {
  local verb=$1
  shift
  local cmd=(gcloud compute tpus tpu-vm "$verb" "$@" "--zone=$ZONE")
  [[ -z $PROJECT ]] || cmd+=("--project=$PROJECT")
  run_cmd "${cmd[@]}"
}

# Runs one shell command line on every worker (or on the worker given as $2).
on_workers() {
  gcloud_tpu ssh "$NAME" "--worker=${2:-all}" "--command=$1"
}

is_capacity_error() {
  grep -qiE 'resource_exhausted|resources? (are |is )?exhausted|capacity|not have enough resources' "$1"
}

# Runs "$@" showing its stderr live while keeping a copy in file $1; returns the command's status.
run_keeping_stderr() {
  local errfile=$1
  shift
  { "$@" 2>&1 1>&3 3>&- | tee "$errfile" >&2 3>&-; } 3>&1
}

cmd_create() {
  require "$NAME" --name TPU_NAME "the TPU VM's name"
  require "$ZONE" --zone TPU_ZONE "the zone, e.g. us-central2-b"
  [[ $ATTEMPTS =~ ^[1-9][0-9]*$ ]] || die "--attempts must be a positive integer, got '$ATTEMPTS'"
  local cmd=(gcloud compute tpus tpu-vm create "$NAME" "--zone=$ZONE"
    "--accelerator-type=$ACCELERATOR_TYPE" "--version=$VERSION")
  [[ -z $PROJECT ]] || cmd+=("--project=$PROJECT")
  ! is_true "$SPOT" || cmd+=(--spot)
  ! is_true "$PREEMPTIBLE" || cmd+=(--preemptible)
  if [[ $DRY_RUN == 1 ]]; then
    show_cmd "${cmd[@]}"
    echo "# retried up to $ATTEMPTS times while the zone reports no capacity"
    return 0
  fi
  local errfile attempt sleep_s=$RETRY_SLEEP
  errfile="$(mktemp)"
  # shellcheck disable=SC2064  # expand now: the local is gone when the trap fires
  trap "rm -f '$errfile'" EXIT
  for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
    show_cmd "${cmd[@]}"
    if run_keeping_stderr "$errfile" "${cmd[@]}"; then
      echo "$PROG: created $NAME in $ZONE (attempt $attempt of $ATTEMPTS)" >&2
      return 0
    fi
    if ! is_capacity_error "$errfile"; then
      echo "$PROG: create failed, and not for lack of capacity: not retrying" >&2
      return 1
    fi
    if ((attempt < ATTEMPTS)); then
      echo "$PROG: no capacity (attempt $attempt of $ATTEMPTS); retrying in ${sleep_s}s" >&2
      sleep "$sleep_s"
      sleep_s=$((sleep_s * 2 > MAX_RETRY_SLEEP ? MAX_RETRY_SLEEP : sleep_s * 2))
    fi
  done
  echo "$PROG: gave up after $ATTEMPTS attempts: no capacity for $ACCELERATOR_TYPE in $ZONE" \
    "(try another zone, --spot, or a queued resource)" >&2
  return 1
}

# Packs this checkout's tracked and untracked-but-not-ignored files into tarball $1.
pack_checkout() {
  local tarball=$1
  if [[ $DRY_RUN == 1 ]]; then
    echo "+ git -C $(printf '%q' "$REPO_ROOT") ls-files -z --cached --others --exclude-standard" \
      "| tar -C $(printf '%q' "$REPO_ROOT") --null -T - -czf $(printf '%q' "$tarball")"
    return 0
  fi
  git -C "$REPO_ROOT" rev-parse --git-dir >/dev/null 2>&1 \
    || die "$REPO_ROOT is not a git checkout: pass --repo URL to clone instead"
  git -C "$REPO_ROOT" ls-files -z --cached --others --exclude-standard \
    | tar -C "$REPO_ROOT" --null -T - -czf "$tarball"
}

cmd_setup() {
  require "$NAME" --name TPU_NAME "the TPU VM's name"
  require "$ZONE" --zone TPU_ZONE "the zone, e.g. us-central2-b"
  local dir venv fetch_code
  dir="$(remote_path "$REMOTE_DIR")"
  venv="$(remote_path "$VENV")"
  if [[ -n $REPO ]]; then
    local update='git -C '"$dir"' pull --ff-only --quiet'
    [[ -z $REF ]] || update="git -C $dir checkout --quiet --force $(printf '%q' "$REF")"
    fetch_code="if [ -d $dir/.git ]; then git -C $dir fetch --quiet --tags origin && $update;"
    fetch_code+=" else git clone --quiet $(printf '%q' "$REPO") $dir"
    [[ -z $REF ]] || fetch_code+=" && git -C $dir checkout --quiet $(printf '%q' "$REF")"
    fetch_code+="; fi"
  else
    local tarball remote_tar='backtal_jax-src.tar.gz'
    if [[ $DRY_RUN == 1 ]]; then
      tarball="/tmp/$remote_tar"
    else
      tarball="$(mktemp -d)/$remote_tar"
    fi
    pack_checkout "$tarball"
    gcloud_tpu scp "$tarball" "$NAME:$remote_tar" --worker=all
    [[ $DRY_RUN == 1 ]] || rm -rf "$(dirname "$tarball")"
    fetch_code="mkdir -p $dir && tar -xzf \"\$HOME\"/$remote_tar -C $dir"
  fi
  local install=(
    "$fetch_code"
    "python3 -m pip install --user --quiet --upgrade uv"
    "{ [ -x $venv/bin/python ] || python3 -m uv venv --quiet --python $(printf '%q' "$PYTHON_VERSION") $venv; }"
    # the gcs extra: gcsfs, through which etils.epath writes to a gs:// workdir
    "python3 -m uv pip install --quiet --python $venv/bin/python --upgrade -e $dir'[gcs]' $(printf '%q' "$JAX_SPEC")"
    "$venv/bin/python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
  )
  local joined
  joined="$(printf ' && %s' "${install[@]}")"
  on_workers "set -e; ${joined# && }"
}

# Shell text, for a worker, naming the directory of run $1 (or of the latest run).
run_dir() {
  printf '%s/%q' "$(remote_path "$LOG_DIR")" "${1:-latest}"
}

# Worker-0 command: wait for the run to start, follow its log until it ends, exit with its status.
stream_command() {
  local d
  d="$(run_dir "$1")"
  printf '%s' "for i in \$(seq 60); do [ -s $d/pid ] && break; sleep 1; done;" \
    " tail -n +1 --pid=\"\$(cat $d/pid)\" -F $d/main.log;" \
    " for i in \$(seq 30); do [ -s $d/rc ] && break; sleep 1; done;" \
    " exit \"\$(cat $d/rc 2>/dev/null || echo 1)\""
}

cmd_run() {
  require "$NAME" --name TPU_NAME "the TPU VM's name"
  require "$ZONE" --zone TPU_ZONE "the zone, e.g. us-central2-b"
  require "$CONFIG" --config BACKTAL_CONFIG "the config file, e.g. configs/thumos.py"
  require "$WORKDIR" --workdir BACKTAL_WORKDIR "where checkpoints and logs go, e.g. gs://bucket/run"
  [[ $WORKDIR == gs://* ]] || echo "$PROG: note: a local --workdir is per worker; a pod slice" \
    "needs one shared workdir (gs://...)" >&2
  local run_id=${RUN_ID:-$(date -u +%Y%m%d-%H%M%S)}
  local main=("$(remote_path "$VENV")/bin/python" -m backtal_jax.main "--config=$CONFIG"
    "--workdir=$WORKDIR" --distributed)
  local main_text arg
  main_text="${main[0]}"
  for arg in "${main[@]:1}" "${PASSTHROUGH[@]}"; do
    main_text+=" $(printf '%q' "$arg")"
  done
  local logs d
  logs="$(remote_path "$LOG_DIR")"
  d="$(run_dir "$run_id")"
  # Each worker: its own log; the trainer ignores SIGHUP so it outlives this ssh session; pid and
  # exit status are written next to the log for `logs` and `stop`.
  on_workers "mkdir -p $d && ln -sfn $(printf '%q' "$run_id") $logs/latest && cd $(remote_path "$REMOTE_DIR") && { ( trap '' HUP; $main_text & echo \$! > $d/pid; wait \$!; echo \$? > $d/rc ) > $d/main.log 2>&1 < /dev/null & }"
  [[ $DRY_RUN == 1 ]] || echo "$PROG: run $run_id started on every worker; following worker 0 (Ctrl-C detaches," \
    "'$PROG logs' re-attaches, '$PROG stop' stops)" >&2
  on_workers "$(stream_command "$run_id")" 0
}

cmd_logs() {
  require "$NAME" --name TPU_NAME "the TPU VM's name"
  require "$ZONE" --zone TPU_ZONE "the zone, e.g. us-central2-b"
  on_workers "$(stream_command "$RUN_ID")" 0
}

cmd_stop() {
  require "$NAME" --name TPU_NAME "the TPU VM's name"
  require "$ZONE" --zone TPU_ZONE "the zone, e.g. us-central2-b"
  local d
  d="$(run_dir "$RUN_ID")"
  on_workers "if [ -s $d/pid ]; then kill \"\$(cat $d/pid)\" 2>/dev/null || true; fi"
}

cmd_preflight() {
  local sets=() arg
  for arg in "${PASSTHROUGH[@]}"; do
    [[ $arg == --config.*=* ]] || die "preflight passes on --config.a.b=value only, got '$arg'"
    sets+=("--set=${arg#--config.}")
  done
  cd "$REPO_ROOT"
  run_cmd python -m benchmarks.tpu_compile "--accelerator_type=$ACCELERATOR_TYPE" \
    "--datasets=${BACKTAL_PREFLIGHT_DATASETS:-thumos14}" "${sets[@]}"
}

cmd_bench() {
  require "$NAME" --name TPU_NAME "the TPU VM's name"
  require "$ZONE" --zone TPU_ZONE "the zone, e.g. us-central2-b"
  local python out status=0
  python="$(remote_path "$VENV")/bin/python"
  out="$(remote_path "$BENCH_DIR")"
  # Both benchmarks run even when the first fails (it exits 1 when a form misses its tolerance, and
  # still writes its JSON); the worst status is the command's.
  on_workers "mkdir -p $out && cd $(remote_path "$REMOTE_DIR") && { $python -m benchmarks.affinity_kernel --json_out=$out/affinity_tpu.json; a=\$?; $python -m benchmarks.train_step --json_out=$out/train_step_tpu.json; t=\$?; exit \$((a > t ? a : t)); }" 0 || status=$?
  run_cmd mkdir -p "$BENCH_OUT"
  gcloud_tpu scp "$NAME:$BENCH_DIR/affinity_tpu.json" "$NAME:$BENCH_DIR/train_step_tpu.json" \
    "$BENCH_OUT/" --worker=0
  return "$status"
}

cmd_delete() {
  require "$NAME" --name TPU_NAME "the TPU VM's name"
  require "$ZONE" --zone TPU_ZONE "the zone, e.g. us-central2-b"
  gcloud_tpu delete "$NAME" --quiet
}

set_switch() {
  case $1 in
    --spot) SPOT=1 ;;
    --preemptible) PREEMPTIBLE=1 ;;
    *) return 1 ;;
  esac
}

set_word() {
  [[ -z $COMMAND ]] || die "unexpected argument '$1' (one command at a time)"
  COMMAND=$1
}

set_option() {
  case $1 in
    --name) NAME=$2 ;;
    --zone) ZONE=$2 ;;
    --project) PROJECT=$2 ;;
    --accelerator-type) ACCELERATOR_TYPE=$2 ;;
    --version) VERSION=$2 ;;
    --attempts) ATTEMPTS=$2 ;;
    --retry-sleep) RETRY_SLEEP=$2 ;;
    --max-retry-sleep) MAX_RETRY_SLEEP=$2 ;;
    --repo) REPO=$2 ;;
    --ref) REF=$2 ;;
    --remote-dir) REMOTE_DIR=$2 ;;
    --venv) VENV=$2 ;;
    --python-version) PYTHON_VERSION=$2 ;;
    --jax-spec) JAX_SPEC=$2 ;;
    --config) CONFIG=$2 ;;
    --workdir) WORKDIR=$2 ;;
    --run-id) RUN_ID=$2 ;;
    --log-dir) LOG_DIR=$2 ;;
    --bench-dir) BENCH_DIR=$2 ;;
    --bench-out) BENCH_OUT=$2 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
}

main() {
  NAME=${TPU_NAME:-}
  ZONE=${TPU_ZONE:-}
  PROJECT=${TPU_PROJECT:-}
  ACCELERATOR_TYPE=${TPU_ACCELERATOR_TYPE:-v4-8}
  VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
  SPOT=${TPU_SPOT:-0}
  PREEMPTIBLE=${TPU_PREEMPTIBLE:-0}
  ATTEMPTS=${TPU_CREATE_ATTEMPTS:-10}
  RETRY_SLEEP=${TPU_RETRY_SLEEP:-60}
  MAX_RETRY_SLEEP=${TPU_MAX_RETRY_SLEEP:-600}
  REPO=${BACKTAL_REPO:-}
  REF=${BACKTAL_REF:-}
  REMOTE_DIR=${BACKTAL_REMOTE_DIR:-backtal_jax}
  VENV=${BACKTAL_VENV:-backtal_venv}
  PYTHON_VERSION=${BACKTAL_PYTHON_VERSION:-3.12}
  JAX_SPEC=${BACKTAL_JAX_SPEC:-jax[tpu]}
  CONFIG=${BACKTAL_CONFIG:-}
  WORKDIR=${BACKTAL_WORKDIR:-}
  RUN_ID=${BACKTAL_RUN_ID:-}
  LOG_DIR=${BACKTAL_LOG_DIR:-backtal_logs}
  BENCH_DIR=${BACKTAL_BENCH_DIR:-backtal_bench}
  BENCH_OUT=${BACKTAL_BENCH_OUT:-tpu_bench}
  COMMAND=''
  parse_options "$@"
  case $COMMAND in
    create | setup | run | logs | stop | delete | preflight | bench) "cmd_$COMMAND" ;;
    '') usage >&2; die "no command given (create, setup, run, logs, stop, delete, preflight, bench)" ;;
    *) die "unknown command '$COMMAND' (create, setup, run, logs, stop, delete, preflight, bench)" ;;
  esac
}

main "$@"
