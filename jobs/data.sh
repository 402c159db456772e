#!/bin/bash
#PBS -q rt_HF
#PBS -l select=1
#PBS -l walltime=12:00:00
#PBS -j oe
#PBS -m n
#PBS -N jreg-data
#SBATCH --job-name=jreg-data
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --exclusive
#SBATCH --time=12:00:00
# Data preparation as a batch job: `make data` on one node with all its cores (PBS or Slurm; each
# scheduler reads its own directives above and ignores the other's).
#
# Settings are `make data`'s (data_prep/settings.py: CORPUS NAME VOCAB TOKENIZER TEXT_FIELD SPLIT
# OUT_ROOT FORCE WORKERS ADOPT), given as job environment variables:
#   qsub -P gXXXXX -v CORPUS='/groups/x/ja/*.jsonl.gz',NAME=ja jobs/data.sh
#   sbatch --export=ALL,CORPUS=/data/ja,NAME=ja jobs/data.sh
# WORKERS defaults to the node's cores. An interrupted job (walltime, preemption) resumes where it
# stopped when submitted again with the same settings. DRY_RUN=1 prints the command and starts
# nothing (no scheduler needed):
#   DRY_RUN=1 CORPUS=... NAME=ja jobs/data.sh
set -euo pipefail

REPO=${JOB_REPO:-${PBS_O_WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}}
if [[ ! -f $REPO/jobs/lib.sh ]]; then
  echo "error: $REPO is not the repository; submit from its root or set JOB_REPO=/path/to/repo" >&2
  exit 2
fi
# shellcheck source=jobs/lib.sh
source "$REPO/jobs/lib.sh"

DATA_SETTINGS=(CORPUS NAME VOCAB TOKENIZER TEXT_FIELD SPLIT OUT_ROOT FORCE WORKERS ADOPT)
args=()
for name in "${DATA_SETTINGS[@]}"; do
  if [[ -n ${!name:-} ]]; then args+=("$name=${!name}"); fi
done
# the cores this job may use (its CPU affinity); nproc alone would follow OMP_NUM_THREADS
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
if [[ -z ${WORKERS:-} ]]; then args+=("WORKERS=$cores"); fi
jobid=${PBS_JOBID:-${SLURM_JOB_ID:-local}}
python=${LAUNCH_PYTHON:-$REPO/.venv/bin/python}
cmd=("$python" -m data_prep make "${args[@]}")
echo "data job $jobid on $(hostname) ($cores cores): $(quote "${cmd[@]}")"
if [[ ${DRY_RUN:-0} != 0 ]]; then exit 0; fi

[[ -x $python ]] || die "no environment at $REPO/.venv; run 'uv sync --locked' in $REPO first (README)"
cd "$REPO"
logs=${OUT_ROOT:-data}/logs # the job's output next to the datasets: <OUT_ROOT>/logs/<job id>.log
mkdir -p "$logs"
exec > >(tee -a "$logs/$jobid.log") 2>&1
export PYTHONDONTWRITEBYTECODE= # (data_prep's workers set their own one-thread limits)
exec "${cmd[@]}"
