# Shared by jobs/abci/pretrain.sh, jobs/slurm/pretrain.sbatch and jobs/submit.sh (sourced, not run).
#
# A cluster job is N copies of one per-node command, `jobs/local.sh <settings> NNODES=N
# MASTER_ADDR=<first host> MASTER_PORT=<from the job id> NPROC=<GPUs per node> NODE_RANK=<i>`,
# started once per node by mpirun or srun. jobs/local.sh is what `make pretrain` runs too, so a
# job's flags are the launcher's flags (launcher/settings.py), never a copy of them.
# shellcheck shell=bash

# The `make pretrain` settings a job carries (launcher/settings.py VARIABLES, minus the
# rendezvous ones the job sets itself).
JOB_SETTINGS=(RUN SIZE INIT TRAIN REG LAMBDA WEIGHTS SD_K SD_ALPHA SD_DIRECTION SD_TEACHER SD_CHUNK
  ITERS SAVE_INTERVAL LOG_INTERVAL SEED DATA TP PP VPP CP FP8 TE ARGS COLLECTIVE_TIMEOUT CKPT_FALLBACK
  ALLOW_DATA_CHANGE TIME_LIMIT)

die() {
  echo "error: $*" >&2
  exit 2
}

# job_settings_args: the settings present in the environment as launcher arguments VAR=value.
job_settings_args() {
  local name
  settings_args=()
  for name in "${JOB_SETTINGS[@]}"; do
    if [[ -n ${!name:-} ]]; then settings_args+=("$name=${!name}"); fi
  done
}

# job_run_dir REPO: the run directory the launcher will use (its rule, common/files.py run_dir: RUN
# is a name under runs/ or, with a '/', a path; relative paths are relative to the repo; default
# <SIZE>-<REG> with common/settings.py's defaults). A shell copy because it runs before the job has
# a Python; tests/launcher/test_rules.py checks that the two agree.
job_run_dir() {
  local run=${RUN:-${SIZE:-tiny}-${REG:-jreg}}
  case $run in */*) ;; *) run=runs/$run ;; esac
  case $run in /*) echo "$run" ;; *) echo "$1/$run" ;; esac
}

# job_time_limit TIME_LEFT: set TIME_LIMIT (minutes) to the job's time left minus STOP_MARGIN
# (default 10 minutes), so training saves a checkpoint and exits before the scheduler ends the job
# (SIGTERM at the walltime, then SIGKILL seconds later: too soon to save a large model). TIME_LEFT
# is [[D-]H:]M:S as qstat/squeue print it; an empty one, or a TIME_LIMIT already given, sets none.
job_time_limit() {
  local text=$1 margin=${STOP_MARGIN:-10} days=0 parts minutes
  if [[ -n ${TIME_LIMIT:-} ]]; then return 0; fi
  [[ $margin =~ ^[0-9]+$ ]] || die "STOP_MARGIN must be whole minutes, got '$margin'"
  if [[ ! $text =~ ^([0-9]+-)?[0-9]+(:[0-9]+){0,2}$ ]]; then
    echo "warning: job time limit unknown ('$text'); training will not stop itself before it" \
      "(set TIME_LIMIT=minutes)"
    return 0
  fi
  if [[ $text == *-* ]]; then days=${text%%-*} text=${text#*-}; fi
  IFS=: read -r -a parts <<<"$text"
  while ((${#parts[@]} < 3)); do parts=(0 "${parts[@]}"); done
  minutes=$((10#$days * 1440 + 10#${parts[0]} * 60 + 10#${parts[1]} - margin))
  if ((minutes < 1)); then
    echo "warning: the job's time left ($1) is within STOP_MARGIN=$margin minutes; no TIME_LIMIT"
    return 0
  fi
  export TIME_LIMIT=$minutes
}

# job_port JOBID: a rendezvous port in 10000-59999 from the job id's number, so two jobs that
# share a first node rarely collide, and every node of one job computes the same port.
job_port() {
  local digits=${1%%.*}
  digits=${digits//[^0-9]/}
  [[ -n $digits ]] || die "cannot derive a port from job id '$1'; set MASTER_PORT"
  if ((${#digits} > 9)); then digits=${digits: -9}; fi
  echo $((10000 + 10#$digits % 50000))
}

# quote WORD...: the words as one shell command line, quoted only where needed (printf %q
# escapes every comma, which makes qsub -v lists unreadable).
quote() {
  local word out=()
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=("$word")
    else
      out+=("'${word//\'/\'\\\'\'}'")
    fi
  done
  echo "${out[*]}"
}

# job_plan SCHEDULER JOBID LAUNCHER HOST...: print the plan (one header line, then one line per
# host with that node's exact command) and set `node_args`, the command without NODE_RANK.
job_plan() {
  local scheduler=$1 jobid=$2 launcher=$3
  shift 3
  local hosts=("$@") nnodes=$# i
  local nproc=${GPUS_PER_NODE:-8}
  local addr=${MASTER_ADDR:-${hosts[0]}} port=${MASTER_PORT:-$(job_port "$jobid")}
  [[ $nproc =~ ^[1-9][0-9]*$ ]] || die "GPUS_PER_NODE must be a positive integer, got '$nproc'"
  job_settings_args
  node_args=("$launcher" "${settings_args[@]}" "NNODES=$nnodes" "MASTER_ADDR=$addr"
    "MASTER_PORT=$port" "NPROC=$nproc")
  echo "$scheduler job $jobid: $nnodes node(s) x $nproc GPU(s), rendezvous $addr:$port"
  for ((i = 0; i < nnodes; i++)); do
    echo "node $i/$nnodes host ${hosts[i]}: $(quote "${node_args[@]}" "NODE_RANK=$i")"
  done
}

# job_env: the CUDA/NCCL settings Megatron needs on every node (exported; mpirun/srun pass them).
job_env() {
  # Megatron overlaps TP/SP communication with compute and relies on kernels reaching the GPU
  # in issue order: one hardware queue per device (the launcher sets it too; stated here so the
  # job log shows it).
  export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
  # Free NCCL buffers when the collective finishes rather than via record_stream (less memory
  # fragmentation with Megatron's overlapped gradient reduce; as in the Swallow ABCI scripts).
  export TORCH_NCCL_AVOID_RECORD_STREAMS=${TORCH_NCCL_AVOID_RECORD_STREAMS:-1}
  # Warnings only; set NCCL_DEBUG=INFO to see the chosen transport (IB/NVLink) and NCCL version.
  export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
  # Python tracebacks of every thread on a crash or hang signal.
  export PYTHONFAULTHANDLER=1
  # One rank must not oversubscribe the node's cores (torchrun would set 1 and warn).
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
  # Triton's and Inductor's compiled-kernel caches default to $HOME (~/.triton, /tmp for
  # Inductor): on a cluster $HOME is the shared file system, where every rank of every node
  # writes, locks and reads its kernels at the first step. Put both on node-local storage (PBS's
  # per-job $PBS_LOCALDIR on ABCI, else $TMPDIR or /tmp; the same path on every node).
  local cache_root=${PBS_LOCALDIR:-${TMPDIR:-/tmp}}/jreg-cache-${USER:-$(id -u)}
  export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$cache_root/triton}
  export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$cache_root/inductor}
  echo "kernel caches (node-local): $TRITON_CACHE_DIR $TORCHINDUCTOR_CACHE_DIR"
}

# job_modules "LIST": `module load` a space-separated list (nothing when it is empty).
job_modules() {
  [[ -n $1 ]] || return 0
  set +u # module scripts are not `set -u` clean
  # shellcheck disable=SC2086 # a space-separated list by design
  module load $1
  set -u
}

# job_activate REPO: use the project's environment (made by `uv sync --locked --extra gpu`); its
# python runs the launcher on every node unless LAUNCH_PYTHON names another.
job_activate() {
  [[ -x $1/.venv/bin/python ]] ||
    die "no environment at $1/.venv; run 'uv sync --locked --extra gpu' in $1 first (README)"
  # shellcheck source=/dev/null
  source "$1/.venv/bin/activate"
  export LAUNCH_PYTHON=${LAUNCH_PYTHON:-$1/.venv/bin/python}
}

# job_log RUN_DIR JOBID: copy everything this script prints into RUN_DIR/logs/<JOBID>.log.
job_log() {
  mkdir -p "$1/logs"
  log=$1/logs/$2.log
  exec > >(tee -a "$log") 2>&1
  echo "log: $log"
}
