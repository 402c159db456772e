"""Which device a rank computes on, and refusing CPU training where a GPU was meant.

Both are decided from plain values (environment, GPU count) so the launcher can call them before
torch starts and tests can call them without a GPU.

- ``rank_device``: Megatron binds each rank to ``cuda:LOCAL_RANK`` inside ``pretrain()``
  (megatron/training/initialize.py:282, ``local_rank`` from $LOCAL_RANK in
  training/config/common_config.py:85). Buffers made before that (the jump tracker's) must name
  that device explicitly: ``torch.cuda.current_device()`` is still 0 on every rank then.
- ``cluster_without_gpu``: torch seeing no GPU inside a cluster job is a broken node or
  environment, never a wish to train on CPU; without this check the launcher would fall back to
  gloo and train slowly and silently on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

ALLOW_CPU_VAR = "ALLOW_CPU"
"""Set to 1 to train on CPU inside a cluster job anyway (tests, users who mean it)."""


def rank_device(cuda_available: bool, env: Mapping[str, str] = os.environ) -> str:
    """The device this rank uses: ``cuda:<LOCAL_RANK>`` with GPUs (as Megatron binds it), else
    ``cpu``."""
    if not cuda_available:
        return "cpu"
    return f"cuda:{int(env.get('LOCAL_RANK', '0'))}"


def cluster_job(env: Mapping[str, str], nnodes: int) -> str | None:
    """A short description of the cluster job we are in (None outside one)."""
    if env.get("PBS_JOBID"):
        return f"PBS job {env['PBS_JOBID']}"
    if env.get("SLURM_JOB_ID"):
        return f"Slurm job {env['SLURM_JOB_ID']}"
    if nnodes > 1:
        return f"a {nnodes}-node run"
    return None


def cluster_without_gpu(
    num_gpus: int, nnodes: int, env: Mapping[str, str] = os.environ, torch_cuda: str | None = None
) -> str | None:
    """The error line when a cluster job sees no GPU (None when all is well or allowed).

    ``torch_cuda``: the CUDA version the torch wheels were built for (``torch.version.cuda``).
    """
    job = cluster_job(env, nnodes)
    if num_gpus or job is None or env.get(ALLOW_CPU_VAR, "") == "1":
        return None
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        cause = (
            f"CUDA_VISIBLE_DEVICES={visible!r} is set; if it was exported from another node (or a "
            "login shell), unset it: the scheduler sets it per node"
        )
    else:
        wheels = f"CUDA {torch_cuda}" if torch_cuda else "its CUDA"
        cause = (
            f"the NVIDIA driver may be too old for torch's {wheels} (nvidia-smi shows the "
            "highest CUDA the driver supports), or the job did not request GPUs"
        )
    return (
        f"no GPU visible to torch inside {job}: {cause}. To train on CPU in a job anyway, set "
        f"{ALLOW_CPU_VAR}=1"
    )
