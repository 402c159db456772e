#!/bin/bash
#PBS -q rt_HF
#PBS -l select=1
#PBS -l walltime=24:00:00
#PBS -j oe
#PBS -m n
#PBS -N jreg-pretrain
# JREG pretraining on N nodes of ABCI 3.0 (8x H200 per node, PBS Professional).
#
# Submit it with `make submit SIZE=8b REG=jreg NODES=4 GROUP=gXXXXX` (README "Run on ABCI"): that
# checks the settings on the login node, prints the qsub line (-P GROUP -l select=NODES
# -l walltime=... -v SIZE=...,REG=...) and submits it with SUBMIT=1. The -l/-P given to qsub win
# over the #PBS lines above.
#
# Each node runs jobs/local.sh, the launcher `make pretrain` uses, once (mpirun -npernode 1);
# its torchrun starts one rank per GPU. Node ranks follow the order of the hosts in
# $PBS_NODEFILE; the first host is the rendezvous (MASTER_ADDR), MASTER_PORT comes from the job
# id. DRY_RUN=1 prints each node's command and starts nothing (no GPU, modules or mpirun needed):
#   PBS_NODEFILE=hosts PBS_JOBID=123.pbs1 DRY_RUN=1 SIZE=8b jobs/abci/pretrain.sh
#
# ---- modules: the one place to configure them (environment or qsub -v overrides; "" skips) ----
# HPC-X provides mpirun (Open MPI) and NCCL's InfiniBand/SHARP plugin. The locked torch wheels
# bring their own CUDA 13 runtime, cuDNN 9 and NCCL 2.30 (uv.lock), and an older site library
# earlier on LD_LIBRARY_PATH shadows them (undefined-symbol errors at `import torch`), so CUDA,
# cuDNN and NCCL modules are off by default. Names as on ABCI 3.0 (llm-jp's environment:
# cuda/12.6/12.6.1 cudnn/9.5/9.5.1 nccl/2.25/2.25.1-1 hpcx/2.20); `module avail nccl` lists them.
CUDA_MODULE=${CUDA_MODULE-}
CUDNN_MODULE=${CUDNN_MODULE-}
NCCL_MODULE=${NCCL_MODULE-}
HPCX_MODULE=${HPCX_MODULE-hpcx/2.20}
set -euo pipefail

# qsub runs a copy of this script: the repo is where make submit ran qsub.
REPO=${JOB_REPO:-${PBS_O_WORKDIR:-$PWD}}
if [[ ! -f $REPO/jobs/lib.sh ]]; then
  echo "error: $REPO is not the repository; submit from its root (make submit) or qsub -v JOB_REPO=/path/to/repo" >&2
  exit 2
fi
# shellcheck source=jobs/lib.sh
source "$REPO/jobs/lib.sh"

[[ -n ${PBS_NODEFILE:-} && -r ${PBS_NODEFILE:-} ]] ||
  die "no readable \$PBS_NODEFILE: not inside a PBS job; submit with make submit (README \"Run on ABCI\")"
jobid=${PBS_JOBID:-}
[[ -n $jobid ]] || die "no \$PBS_JOBID: not inside a PBS job; submit with make submit"
# PBS lists each host once per slot (8 times on rt_HF): keep the first occurrence of each.
mapfile -t hosts < <(awk 'NF && !seen[$1]++ { print $1 }' "$PBS_NODEFILE")
((${#hosts[@]} > 0)) || die "\$PBS_NODEFILE ($PBS_NODEFILE) lists no hosts"
dry_run=${DRY_RUN:-0}

run_dir=$(job_run_dir "$REPO")
if [[ $dry_run == 0 ]]; then job_log "$run_dir" "$jobid"; fi
# Stop (with a checkpoint) STOP_MARGIN minutes before the walltime (lib.sh job_time_limit).
job_time_limit "$(qstat -f "$jobid" 2>/dev/null | awk -F' = ' '/Resource_List.walltime/ { print $2 }')"
job_plan pbs "$jobid" "$REPO/jobs/local.sh" "${hosts[@]}"
modules=()
for m in "$CUDA_MODULE" "$CUDNN_MODULE" "$NCCL_MODULE" "$HPCX_MODULE"; do
  if [[ -n $m ]]; then modules+=("$m"); fi
done
echo "modules: ${modules[*]:-none}"
if [[ $dry_run != 0 ]]; then exit 0; fi

# Environment modules (module scripts are not `set -u` clean).
set +u
if ! type module >/dev/null 2>&1 && [[ -r /etc/profile.d/modules.sh ]]; then
  # shellcheck source=/dev/null
  source /etc/profile.d/modules.sh
fi
if ((${#modules[@]})); then
  type module >/dev/null 2>&1 || die "the module command is missing; cannot load ${modules[*]}"
  module load "${modules[@]}"
fi
set -u
job_activate "$REPO"
job_env
# InfiniBand: a longer IB retry timeout (4.096 us x 2^22, ~17 s) so a transient link stall on a
# multi-node job does not abort NCCL (the Swallow ABCI 3.0 scripts use 22; NCCL's default is 20).
# NCCL finds the HCAs itself; set NCCL_IB_HCA/NCCL_SOCKET_IFNAME here only to pin them.
export NCCL_IB_TIMEOUT=${NCCL_IB_TIMEOUT:-22}

# One launcher per node: ranks are mapped to the hosts in file order (rank i on host i), which is
# the NODE_RANK order printed above; -bind-to none leaves torchrun's 8 ranks free to use every core.
hostfile=$run_dir/logs/$jobid.hosts
printf '%s slots=1\n' "${hosts[@]}" >"$hostfile"
# Never CUDA_VISIBLE_DEVICES: it names this node's GPUs (if set at all), and another node given
# it sees none, or the wrong ones (the launcher then refuses to run: no GPU in a job).
exports=()
for name in $(compgen -e); do
  if [[ $name == CUDA_VISIBLE_DEVICES ]]; then continue; fi
  if [[ $name =~ ^(PATH|LD_LIBRARY_PATH|VIRTUAL_ENV|LAUNCH_PYTHON|PYTHON.*|OMP_NUM_THREADS|ALLOW_CPU|CUDA_.*|NCCL_.*|TORCH_.*|TRITON_CACHE_DIR|TORCHINDUCTOR_CACHE_DIR|NVTE_.*|UCX_.*|HF_.*|WANDB_.*)$ ]]; then
    exports+=(-x "$name")
  fi
done
# shellcheck disable=SC2016 # the rank variable expands on each node, not here
cmd=(mpirun -np "${#hosts[@]}" -npernode 1 -hostfile "$hostfile" -bind-to none "${exports[@]}"
  bash -c 'exec "$0" "$@" "NODE_RANK=${OMPI_COMM_WORLD_RANK:?not started by mpirun}"'
  "${node_args[@]}")
echo "+ $(quote "${cmd[@]}")"
"${cmd[@]}"
