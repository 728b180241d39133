#!/usr/bin/env bash
# Create, set up and run jaxlm on a Cloud TPU VM or pod slice, on every worker. See --help.
set -euo pipefail

readonly SCRIPT_NAME="tpu_setup.sh"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly REPO_ROOT
# Remote layout, the same on every worker (paths relative to the worker's home directory).
readonly REMOTE_DIR="jaxlm"
readonly REMOTE_VENV="jaxlm-venv"
readonly REMOTE_TARBALL="jaxlm.tar.gz"

DRY_RUN=0
NAME="${TPU_NAME:-jaxlm-tpu}"
ZONE="${TPU_ZONE:-us-central2-b}"
PROJECT="${TPU_PROJECT:-}"

usage() {
  cat <<EOF
Usage: bash $SCRIPT_NAME [--dry-run] [COMMON OPTIONS] SUBCOMMAND [OPTIONS] [ARGS]

Cloud TPU VMs and pod slices for jaxlm. Every gcloud call names the TPU, its zone and (if given)
the project; setup and run act on all workers of a slice at once (--worker=all).

Subcommands:
  create    create the TPU VM / pod slice (skipped when it already exists)
  setup     on every worker: Python venv, jax[tpu], this checkout (local changes included)
  run CMD   run CMD on every worker inside the project directory, one log per worker
  status    state, accelerator type and health of the TPU
  delete    delete the TPU (skipped when it does not exist)

Global options (before the subcommand):
  --dry-run          print every gcloud command instead of running it
  -h, --help         this help; 'bash $SCRIPT_NAME SUBCOMMAND --help' for a subcommand

Common options (before or after the subcommand):
  --name NAME        TPU name (default \$TPU_NAME or jaxlm-tpu)
  --zone ZONE        zone (default \$TPU_ZONE or us-central2-b)
  --project PROJECT  GCP project (default \$TPU_PROJECT, else gcloud's configured project)

Example (a v4-32 slice, 4 workers):
  bash $SCRIPT_NAME create --name=lm --zone=us-central2-b --accelerator-type=v4-32 --spot
  bash $SCRIPT_NAME setup --name=lm --zone=us-central2-b
  bash $SCRIPT_NAME run --name=lm --zone=us-central2-b experiments/pretrain.py --multihost \\
      --workdir=gs://BUCKET/runs/span --config.objective=span_corruption --config.data.shards=-1
  bash $SCRIPT_NAME delete --name=lm --zone=us-central2-b
EOF
}

usage_create() {
  cat <<EOF
Usage: bash $SCRIPT_NAME [--dry-run] create [--name NAME] [--zone ZONE] [--project P]
           [--accelerator-type TYPE] [--runtime-version VERSION] [--spot]

  --accelerator-type TYPE   e.g. v4-8, v4-32, v5litepod-16, v5p-8, v6e-8 (default v4-8)
  --runtime-version VERSION TPU VM image (default per generation: v2/v3 tpu-ubuntu2204-base,
                            v4 tpu-ubuntu2204-base, v5litepod v2-alpha-tpuv5-lite,
                            v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e)
  --spot                    a Spot VM: much cheaper, preemptible (runs resume from checkpoints)
Describes the TPU first and does nothing if it already exists.
EOF
}

usage_setup() {
  cat <<EOF
Usage: bash $SCRIPT_NAME [--dry-run] setup [--name NAME] [--zone ZONE] [--project P] [--git URL]

On every worker: a venv ~/$REMOTE_VENV, this project in ~/$REMOTE_DIR and 'pip install -e .[tpu]'
(jax[tpu] and the project's dependencies). By default the local checkout travels as a tarball
(tracked and untracked, not ignored, files: local changes included) through
'gcloud compute tpus tpu-vm scp --worker=all'; --git URL clones URL instead (pulls if present).
Safe to rerun: the project directory is replaced, the venv reused.
EOF
}

usage_run() {
  cat <<EOF
Usage: bash $SCRIPT_NAME [--dry-run] run [--name NAME] [--zone ZONE] [--project P]
           [--log-dir DIR] [--] CMD [ARGS...]

Runs CMD on every worker (--worker=all) in ~/$REMOTE_DIR with the venv active; CMD starting with
a .py file runs with python. Each worker keeps its output in DIR/<time>/<worker host>.log (DIR
default ~/jaxlm-logs, on the worker); the combined stream is also kept locally in
./tpu_logs/NAME-<time>.log. Give runs a gs:// --workdir: every worker writes its part of the
checkpoints there, and it outlives the VM.
EOF
}

usage_status() {
  echo "Usage: bash $SCRIPT_NAME [--dry-run] status [--name NAME] [--zone ZONE] [--project P]"
}

usage_delete() {
  echo "Usage: bash $SCRIPT_NAME [--dry-run] delete [--name NAME] [--zone ZONE] [--project P]"
}

die() {  # die STATUS MESSAGE
  echo "$SCRIPT_NAME: $2" >&2
  exit "$1"
}

# Prints a command as a shell would read it back (arguments with spaces or quotes single-quoted).
print_cmd() {
  local out="" arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./=:@,+%-]+$ ]]; then
      out+="$arg "
    else
      out+="'${arg//\'/\'\\\'\'}' "
    fi
  done
  echo "${out% }"
}

# Runs a command, or prints it under --dry-run.
run_cmd() {
  if ((DRY_RUN)); then
    print_cmd "$@"
  else
    "$@"
  fi
}

gcloud_tpu() {  # gcloud compute tpus tpu-vm ARGS... with the zone and project
  local cmd=(gcloud compute tpus tpu-vm "$@" "--zone=$ZONE")
  if [[ -n "$PROJECT" ]]; then
    cmd+=("--project=$PROJECT")
  fi
  run_cmd "${cmd[@]}"
}

# True when the TPU exists. Under --dry-run the check is printed and the TPU assumed absent, so
# the commands that would follow are printed too.
tpu_exists() {
  if ((DRY_RUN)); then
    gcloud_tpu describe "$NAME" --format=value\(state\)
    return 1
  fi
  gcloud_tpu describe "$NAME" --format=value\(state\) >/dev/null 2>&1
}

# Parses --name/--zone/--project (as --opt VALUE or --opt=VALUE); sets SHIFT to the words used.
parse_common() {
  SHIFT=0
  local opt="$1" value
  case "$opt" in
    --name=* | --zone=* | --project=*) value="${opt#*=}" opt="${opt%%=*}" SHIFT=1 ;;
    --name | --zone | --project)
      [[ $# -ge 2 ]] || die 2 "$opt needs a value"
      value="$2" SHIFT=2 ;;
    *) return 0 ;;
  esac
  [[ -n "$value" ]] || die 2 "$opt needs a value"
  case "$opt" in
    --name) NAME="$value" ;;
    --zone) ZONE="$value" ;;
    --project) PROJECT="$value" ;;
  esac
}

default_runtime() {  # default_runtime ACCELERATOR_TYPE
  case "$1" in
    v2-* | v3-* | v4-*) echo "tpu-ubuntu2204-base" ;;
    v5litepod-* | v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    *) die 2 "unknown accelerator type '$1': expected e.g. v4-8, v5litepod-16, v5p-8, v6e-8" ;;
  esac
}

cmd_create() {
  local accelerator="v4-8" runtime="" spot=0
  while [[ $# -gt 0 ]]; do
    parse_common "$@"
    if ((SHIFT)); then shift "$SHIFT"; continue; fi
    case "$1" in
      -h | --help) usage_create; exit 0 ;;
      --accelerator-type=*) accelerator="${1#*=}"; shift ;;
      --accelerator-type) [[ $# -ge 2 ]] || die 2 "$1 needs a value"; accelerator="$2"; shift 2 ;;
      --runtime-version=*) runtime="${1#*=}"; shift ;;
      --runtime-version) [[ $# -ge 2 ]] || die 2 "$1 needs a value"; runtime="$2"; shift 2 ;;
      --spot) spot=1; shift ;;
      *) die 2 "create: unknown option '$1' (see: bash $SCRIPT_NAME create --help)" ;;
    esac
  done
  runtime="${runtime:-$(default_runtime "$accelerator")}"
  if tpu_exists; then
    echo "TPU $NAME already exists in $ZONE; nothing to create."
    return 0
  fi
  local args=(create "$NAME" "--accelerator-type=$accelerator" "--version=$runtime")
  if ((spot)); then
    args+=(--spot)
  fi
  gcloud_tpu "${args[@]}"
}

cmd_setup() {
  local git_url=""
  while [[ $# -gt 0 ]]; do
    parse_common "$@"
    if ((SHIFT)); then shift "$SHIFT"; continue; fi
    case "$1" in
      -h | --help) usage_setup; exit 0 ;;
      --git=*) git_url="${1#*=}"; shift ;;
      --git) [[ $# -ge 2 ]] || die 2 "$1 needs a value"; git_url="$2"; shift 2 ;;
      *) die 2 "setup: unknown option '$1' (see: bash $SCRIPT_NAME setup --help)" ;;
    esac
  done
  local fetch
  if [[ -n "$git_url" ]]; then
    local url
    url="$(printf %q "$git_url")"
    fetch="if [ -d ~/$REMOTE_DIR/.git ]; then git -C ~/$REMOTE_DIR pull --ff-only;"
    fetch+=" else rm -rf ~/$REMOTE_DIR && git clone $url ~/$REMOTE_DIR; fi"
  else
    local tarball="${TMPDIR:-/tmp}/jaxlm-$NAME.tar.gz"
    # Tracked and untracked-but-not-ignored files: local edits travel, build outputs do not.
    if ((DRY_RUN)); then
      echo "(cd $REPO_ROOT && git ls-files -co --exclude-standard -z" \
        "| tar -czf $tarball --null -T -)"
    else
      (cd "$REPO_ROOT" && git ls-files -co --exclude-standard -z \
        | tar -czf "$tarball" --null -T -)
    fi
    gcloud_tpu scp "$tarball" "$NAME:~/$REMOTE_TARBALL" --worker=all
    # Unpacked beside the old copy, then swapped: a rerun never leaves a half-updated tree.
    fetch="rm -rf ~/$REMOTE_DIR.new && mkdir -p ~/$REMOTE_DIR.new"
    fetch+=" && tar -xzf ~/$REMOTE_TARBALL -C ~/$REMOTE_DIR.new"
    fetch+=" && rm -rf ~/$REMOTE_DIR && mv ~/$REMOTE_DIR.new ~/$REMOTE_DIR"
  fi
  local install="set -euo pipefail; $fetch"
  install+="; if [ ! -x ~/$REMOTE_VENV/bin/python ]; then"
  install+=" python3 -m venv ~/$REMOTE_VENV || { sudo apt-get update -qq"
  install+=" && sudo apt-get install -y -qq python3-venv && python3 -m venv ~/$REMOTE_VENV; }; fi"
  install+="; ~/$REMOTE_VENV/bin/python -m pip install -q --upgrade pip"
  install+="; cd ~/$REMOTE_DIR && ~/$REMOTE_VENV/bin/python -m pip install -q -e '.[tpu]'"
  install+="; ~/$REMOTE_VENV/bin/python -c 'import jax; print(jax.process_index(),"
  install+=" jax.local_device_count(), jax.device_count())'"
  gcloud_tpu ssh "$NAME" --worker=all "--command=$install"
}

cmd_run() {
  # Expanded on the worker, not here.
  # shellcheck disable=SC2088
  local log_dir="~/jaxlm-logs"
  while [[ $# -gt 0 ]]; do
    parse_common "$@"
    if ((SHIFT)); then shift "$SHIFT"; continue; fi
    case "$1" in
      -h | --help) usage_run; exit 0 ;;
      --log-dir=*) log_dir="${1#*=}"; shift ;;
      --log-dir) [[ $# -ge 2 ]] || die 2 "$1 needs a value"; log_dir="$2"; shift 2 ;;
      --) shift; break ;;
      -*) die 2 "run: unknown option '$1' (see: bash $SCRIPT_NAME run --help)" ;;
      *) break ;;
    esac
  done
  [[ $# -gt 0 ]] || die 2 "run: no command given (e.g. run experiments/pretrain.py ...)"
  local words=("$@")
  if [[ "${words[0]}" == *.py ]]; then
    words=(python "${words[@]}")
  fi
  local stamp quoted
  stamp="$(date +%Y%m%d-%H%M%S)"
  quoted="$(printf '%q ' "${words[@]}")"
  local remote="set -o pipefail; cd ~/$REMOTE_DIR && source ~/$REMOTE_VENV/bin/activate"
  remote+=" && mkdir -p $log_dir/$stamp"
  remote+=" && ${quoted% } 2>&1 | tee $log_dir/$stamp/\$(hostname).log"
  if ((DRY_RUN)); then
    gcloud_tpu ssh "$NAME" --worker=all "--command=$remote"
    return 0
  fi
  mkdir -p tpu_logs
  echo "logs: $log_dir/$stamp/<worker>.log on each worker; tpu_logs/$NAME-$stamp.log here"
  gcloud_tpu ssh "$NAME" --worker=all "--command=$remote" 2>&1 | tee "tpu_logs/$NAME-$stamp.log"
}

cmd_status() {
  while [[ $# -gt 0 ]]; do
    parse_common "$@"
    if ((SHIFT)); then shift "$SHIFT"; continue; fi
    case "$1" in
      -h | --help) usage_status; exit 0 ;;
      *) die 2 "status: unknown option '$1'" ;;
    esac
  done
  gcloud_tpu describe "$NAME" \
    "--format=table(name.basename(),state,acceleratorType,health,schedulingConfig.spot)"
}

cmd_delete() {
  while [[ $# -gt 0 ]]; do
    parse_common "$@"
    if ((SHIFT)); then shift "$SHIFT"; continue; fi
    case "$1" in
      -h | --help) usage_delete; exit 0 ;;
      *) die 2 "delete: unknown option '$1'" ;;
    esac
  done
  if tpu_exists || ((DRY_RUN)); then
    gcloud_tpu delete "$NAME" --quiet
  else
    echo "TPU $NAME does not exist in $ZONE; nothing to delete."
  fi
}

main() {
  while [[ $# -gt 0 ]]; do
    parse_common "$@"
    if ((SHIFT)); then shift "$SHIFT"; continue; fi
    case "$1" in
      --dry-run) DRY_RUN=1; shift ;;
      -h | --help) usage; exit 0 ;;
      -*) usage >&2; die 2 "unknown option '$1'" ;;
      *) break ;;
    esac
  done
  [[ $# -gt 0 ]] || { usage >&2; die 2 "no subcommand given"; }
  local sub="$1"
  shift
  case "$sub" in
    create | setup | run | status | delete) "cmd_$sub" "$@" ;;
    help) usage ;;
    *) die 2 "unknown subcommand '$sub': expected create, setup, run, status or delete" ;;
  esac
}

main "$@"
