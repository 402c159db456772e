#!/usr/bin/env bash
# `make submit`: check a multi-node run's settings here (login node), print the qsub (ABCI) or
# sbatch (Slurm) line, and submit it only with SUBMIT=1.
#   jobs/submit.sh SIZE=8b REG=jreg NODES=4 GROUP=gXXXXX [WALLTIME=24:00:00 QUEUE=... SUBMIT=1]
#   jobs/submit.sh CLUSTER=slurm SIZE=8b NODES=4 [GROUP=account PARTITION=p GPUS_PER_NODE=8]
# Besides those, it takes the `make pretrain` settings (RUN SIZE REG ... ARGS; README "Settings")
# and, for ABCI, CUDA_MODULE/CUDNN_MODULE/NCCL_MODULE/HPCX_MODULE (jobs/abci/pretrain.sh).
# Bad input: one line `error: ...` on stderr, exit code 2, nothing submitted.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=jobs/lib.sh
source "$repo/jobs/lib.sh"

OWN=(CLUSTER NODES GROUP WALLTIME QUEUE PARTITION GPUS_PER_NODE SUBMIT)
MODULE_VARS=(CUDA_MODULE CUDNN_MODULE NCCL_MODULE HPCX_MODULE)
JOB_ENV=(STOP_MARGIN) # read by the job itself (lib.sh job_time_limit), passed like a setting
# Only the arguments count: the job settings start empty whatever this shell exported.
unset "${OWN[@]}" "${JOB_SETTINGS[@]}" "${MODULE_VARS[@]}" "${JOB_ENV[@]}"
for arg in "$@"; do
  name=${arg%%=*}
  case " ${OWN[*]} ${JOB_SETTINGS[*]} ${MODULE_VARS[*]} ${JOB_ENV[*]} " in
    *" $name "*) [[ $arg == *=* ]] || die "expected VAR=value, got '$arg'" ;;
    *)
      case $name in
        NNODES | NPROC | NODE_RANK | MASTER_ADDR | MASTER_PORT)
          die "$name is set by the job itself; give NODES= (and GPUS_PER_NODE= on Slurm)" ;;
        *) die "unknown setting '$arg'; valid: ${OWN[*]} ${JOB_SETTINGS[*]} ${MODULE_VARS[*]} ${JOB_ENV[*]}" ;;
      esac
      ;;
  esac
  printf -v "$name" '%s' "${arg#*=}"
done

cluster=${CLUSTER:-abci}
nodes=${NODES:-}
walltime=${WALLTIME:-24:00:00}
gpus=${GPUS_PER_NODE:-8}
[[ $cluster == abci || $cluster == slurm ]] || die "CLUSTER must be abci or slurm, got '$cluster'"
[[ -n $nodes ]] || die "NODES is required: the number of ${gpus}-GPU nodes, e.g. NODES=4"
[[ $nodes =~ ^[1-9][0-9]*$ ]] || die "NODES must be a positive integer (${gpus}-GPU nodes), got '$nodes'"
[[ $gpus =~ ^[1-9][0-9]*$ ]] || die "GPUS_PER_NODE must be a positive integer, got '$gpus'"
[[ $walltime =~ ^([0-9]+-)?[0-9]+(:[0-9]{2}){0,2}$ ]] ||
  die "WALLTIME must be HH:MM:SS (e.g. 24:00:00), got '$walltime'"
if [[ $cluster == abci ]]; then
  [[ -n ${GROUP:-} ]] || die "GROUP is required on ABCI: your ABCI group for qsub -P (e.g. GROUP=gXXXXX; 'groups' lists yours)"
  [[ $gpus == 8 ]] || die "ABCI rt_HF nodes have 8 GPUs; drop GPUS_PER_NODE=$gpus"
fi
[[ ${GROUP:-} =~ ^[A-Za-z0-9_.-]*$ ]] || die "GROUP must be a group/account name, got '$GROUP'"

job_settings_args
# Settings travel as environment variables of the job (qsub -v / sbatch --export).
passed=("${settings_args[@]}")
for name in "${JOB_ENV[@]}"; do
  if [[ -n ${!name:-} ]]; then passed+=("$name=${!name}"); fi
done
if [[ $cluster == abci ]]; then
  for name in "${MODULE_VARS[@]}"; do
    if [[ -n ${!name:-} ]]; then passed+=("$name=${!name}"); fi
  done
fi
vlist=""
for kv in "${passed[@]}"; do
  if [[ $kv == *,* ]]; then
    # qsub -v takes a value with commas inside quotes; sbatch --export cannot pass one at all.
    [[ $cluster == abci ]] ||
      die "${kv%%=*} contains a comma, which sbatch --export cannot pass; rewrite it without one"
    [[ $kv != *[\'\"]* ]] ||
      die "${kv%%=*} contains a comma and a quote, which qsub -v cannot pass; drop one of them"
    kv="${kv%%=*}='${kv#*=}'"
  fi
  vlist+=${vlist:+,}$kv
done

# The launcher checks every setting exactly as each node will (SIZE, REG, layout over
# NODES x GPUs, data, resume), planning for GPUs this machine may lack. DATA is passed explicitly
# so a missing data/default is an error here, not a corpus build on the login node.
if ! plan=$(PLAN_GPUS="$gpus:9" "$repo/jobs/local.sh" "${settings_args[@]}" \
  "DATA=${DATA:-data/default}" "NNODES=$nodes" "NPROC=$gpus" DRY_RUN=1); then
  exit 2 # the launcher printed its one-line error
fi
echo "plan: ${plan%%$'\n'*}" # its description line (the next is the full torchrun command)

if [[ $cluster == abci ]]; then
  cmd=(qsub -P "$GROUP" -l "select=$nodes" -l "walltime=$walltime")
  if [[ -n ${QUEUE:-} ]]; then cmd+=(-q "$QUEUE"); fi
  if [[ -n $vlist ]]; then cmd+=(-v "$vlist"); fi
  cmd+=(jobs/abci/pretrain.sh)
else
  cmd=(sbatch "--nodes=$nodes" "--time=$walltime" "--gpus-per-node=$gpus")
  if [[ -n ${GROUP:-} ]]; then cmd+=("--account=$GROUP"); fi
  if [[ -n ${PARTITION:-} ]]; then cmd+=("--partition=$PARTITION"); fi
  cmd+=("--export=ALL,GPUS_PER_NODE=$gpus${vlist:+,$vlist}" jobs/slurm/pretrain.sbatch)
fi
quote "${cmd[@]}"
if [[ ${SUBMIT:-0} != 1 ]]; then
  echo "not submitted: add SUBMIT=1 to submit it"
  exit 0
fi
cd "$repo" # the job finds the repo through the submission directory (PBS_O_WORKDIR)
command -v "${cmd[0]}" >/dev/null || die "${cmd[0]} not found: submit from a login node of the cluster"
"${cmd[@]}"
