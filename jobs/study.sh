#!/bin/bash
#PBS -N jreg-study
#PBS -l select=1
#PBS -l walltime=12:00:00
#PBS -j oe
#SBATCH --job-name=jreg-study
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --time=12:00:00
# The study's analyze, eval, plots and report stages as one PBS (ABCI) or Slurm job, submitted by
# `make study SCHEDULER=pbs|slurm` (study/cluster.py) after the training jobs. Its settings are
# the file STUDY_ARGS names, one `KEY=value` of `python -m study` a line. DRY_RUN=1 prints the
# command and starts nothing. Bad input: one line `error: ...`, exit code 2.
MODULES=${MODULES-}
set -euo pipefail

REPO=${JOB_REPO:-${PBS_O_WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}}
if [[ ! -f $REPO/jobs/lib.sh ]]; then
  echo "error: $REPO is not the repository; submit from its root or export JOB_REPO=/path/to/repo" >&2
  exit 2
fi
# shellcheck source=jobs/lib.sh
source "$REPO/jobs/lib.sh"

[[ -f ${STUDY_ARGS:-} ]] || die "STUDY_ARGS must name the study's settings file, got '${STUDY_ARGS:-}'"
mapfile -t settings <"$STUDY_ARGS"
py=${LAUNCH_PYTHON:-$REPO/.venv/bin/python}
cmd=("$py" -m study "${settings[@]}")
echo "study job ${PBS_JOBID:-${SLURM_JOB_ID:-local}}: $(quote "${cmd[@]}")"
if [[ ${DRY_RUN:-0} != 0 ]]; then exit 0; fi
[[ -x $py ]] || die "no environment at $REPO/.venv; run 'uv sync --locked --extra gpu' in $REPO first (README)"
job_modules "$MODULES"
job_activate "$REPO"
cd "$REPO"
exec "${cmd[@]}"
