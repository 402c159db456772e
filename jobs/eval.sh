#!/bin/bash
#PBS -N jreg-eval
#PBS -l select=1
#PBS -l walltime=12:00:00
#PBS -j oe
#SBATCH --job-name=jreg-eval
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-node=8
#SBATCH --time=12:00:00
# `make eval` for every checkpoint of a run as a one-node PBS (ABCI) or Slurm job: one checkpoint
# per GPU at a time, the GPUs in parallel. The checkpoints (ITER=, default all) are dealt out
# round-robin to GPUS lanes (default: the GPUs nvidia-smi lists); each lane is one
# `python -m eval eval ITER=<its checkpoints> DEVICE=cuda` on its own GPU (it exports, then scores,
# each of them), and when every lane is done `python -m eval scores` rebuilds the table and plot
# from all results and adds them to the run's TensorBoard and W&B run. The make eval settings
# (RUN ITER TASKS NUM_FEWSHOT LIMIT BATCH DTYPE DOCS KEEP_EXPORTS OUT LAYERS) travel as the job's
# environment (a TASKS list has commas, which qsub -v and sbatch --export cannot pass plainly):
#   export RUN=8b-jreg TASKS=hellaswag,arc_easy NUM_FEWSHOT=5 KEEP_EXPORTS=0
#   qsub -P <group> -V jobs/eval.sh          (PBS, e.g. ABCI)
#   sbatch --export=ALL jobs/eval.sh         (Slurm)
# (standard lm-eval tasks need the HF datasets cache filled on a login node first; README
# "Evaluation"). DRY_RUN=1 prints each GPU's command and starts nothing (no GPU needed):
#   DRY_RUN=1 RUN=8b-jreg GPUS=8 jobs/eval.sh
# Bad input: one line `error: ...`, exit code 2.
MODULES=${MODULES-}
set -euo pipefail

REPO=${JOB_REPO:-${PBS_O_WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}}
if [[ ! -f $REPO/jobs/lib.sh ]]; then
  echo "error: $REPO is not the repository; submit from its root or export JOB_REPO=/path/to/repo" >&2
  exit 2
fi
# shellcheck source=jobs/lib.sh
source "$REPO/jobs/lib.sh"

# make eval's settings (eval/cli.py COMMANDS["eval"]) a job passes on; RUN is required.
EVAL_SETTINGS=(TASKS NUM_FEWSHOT LIMIT BATCH DTYPE DOCS KEEP_EXPORTS OUT LAYERS)
[[ -n ${RUN:-} ]] || die "RUN is required: the run whose checkpoints to evaluate (RUN=8b-jreg)"
dry_run=${DRY_RUN:-0}
gpus=${GPUS:-}
if [[ -z $gpus ]]; then
  gpus=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
  if [[ $gpus == 0 && $dry_run != 0 ]]; then gpus=1; fi
fi
[[ $gpus =~ ^[1-9][0-9]*$ ]] || die "no GPU visible (nvidia-smi -L); set GPUS= or run make eval on CPU"
jobid=${PBS_JOBID:-${SLURM_JOB_ID:-local}}
py=${LAUNCH_PYTHON:-$REPO/.venv/bin/python}
[[ -x $py ]] || die "no environment at $REPO/.venv; run 'uv sync --locked --extra gpu' in $REPO first (README)"

run_dir=$(job_run_dir "$REPO")
if [[ $dry_run == 0 ]]; then
  job_log "$run_dir" "$jobid.eval"
  job_modules "$MODULES"
  job_activate "$REPO"
fi
cd "$REPO"
# The complete checkpoints, by the rule make eval uses (eval/rundir.py); its error line if none.
mapfile -t iterations < <("$py" -m eval checkpoints "RUN=$RUN" "ITER=${ITER:-all}" || echo FAILED)
if [[ ${iterations[-1]:-FAILED} == FAILED ]]; then exit 2; fi

settings=("RUN=$RUN" DEVICE=cuda)
for name in "${EVAL_SETTINGS[@]}"; do
  if [[ -n ${!name:-} ]]; then settings+=("$name=${!name}"); fi
done
lanes=$((gpus < ${#iterations[@]} ? gpus : ${#iterations[@]}))
echo "eval job $jobid: ${#iterations[@]} checkpoint(s) of $run_dir on $lanes GPU(s)"
declare -a lane_cmds=()
for ((g = 0; g < lanes; g++)); do
  mine=()
  for ((i = g; i < ${#iterations[@]}; i += lanes)); do mine+=("${iterations[i]}"); done
  list=$(
    IFS=,
    echo "${mine[*]}"
  )
  lane_cmds[g]=$(quote "$py" -m eval eval "${settings[@]}" "ITER=$list")
  echo "gpu $g: CUDA_VISIBLE_DEVICES=$g $(quote "$py" -m eval eval "${settings[@]}" "ITER=$list")"
done
scores=("$py" -m eval scores "RUN=$RUN")
if [[ -n ${OUT:-} ]]; then scores+=("OUT=$OUT"); fi
echo "then: $(quote "${scores[@]}")"
if [[ $dry_run != 0 ]]; then exit 0; fi

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
pids=()
for ((g = 0; g < lanes; g++)); do
  # W&B once, from the scores step below (lanes writing one W&B run at the same time could clash)
  CUDA_VISIBLE_DEVICES=$g WANDB_MODE=disabled bash -c "${lane_cmds[g]}" \
    >"$run_dir/logs/$jobid.eval.gpu$g.log" 2>&1 &
  pids+=($!)
done
failed=0
for ((g = 0; g < lanes; g++)); do
  if ! wait "${pids[g]}"; then
    echo "gpu $g failed: $(tail -n 1 "$run_dir/logs/$jobid.eval.gpu$g.log")"
    failed=1
  fi
done
"${scores[@]}"
exit $failed
