"""Decisions a GPU plan needs beyond the layout: Transformer Engine or not, and the batch over DP.

Pure functions of plain values (the probes run in the planner), so the CPU tests can call them
with a GPU node's values. Both exist because the silent choice was the wrong one: a Hopper node
whose TE did not import trained in bf16 on the local spec, several times slower, without a word;
and a global batch smaller than micro batch x DP was rounded up (1b on 32 nodes: 512 -> 2048
sequences per step), changing the tokens per step the recipe's schedule was tuned for.
"""

from __future__ import annotations

from launcher.settings import LaunchError
from megatron_ext.config import LlamaConfig, num_parameters

TE_SETTINGS = ("auto", "1", "0")


def te_choice(setting: str, *, num_gpus: int, capability: int, problem: str | None,
              preview: bool) -> bool:  # fmt: skip
    """Whether the run uses the Transformer Engine spec.

    ``setting``: TE (auto, 1, 0); ``problem``: why TE cannot be used here (None: it imports);
    ``preview``: a plan for other machines (PLAN_GPUS), where TE's import cannot be tried and
    ``problem`` only says whether it is installed. On a GPU, TE=auto requires TE from Hopper
    (capability 9) on: without it, the run would be bf16 on the local spec, without FP8 or the
    fused kernels. TE=0 is the explicit way to train so; TE=1 requires it on any GPU.
    """
    if setting not in TE_SETTINGS:
        raise LaunchError(f"TE must be auto, 1 or 0, got {setting!r}")
    if not num_gpus or setting == "0":
        return False
    if problem is None:
        return True
    if preview:  # the job's node decides; describe() says what it will do
        return False
    if setting == "1" or capability >= 9:
        return _refuse(problem, capability)
    return False  # pre-Hopper, TE=auto: the local spec (no FP8 there anyway)


def _refuse(problem: str, capability: int) -> bool:
    raise LaunchError(
        f"Transformer Engine is needed on this sm{capability}0 GPU node but cannot be used "
        f'({problem}); install it (make setup GPU=1, README "Run on ABCI") or train without '
        "it, in bf16 on the slower local spec without FP8: TE=0"
    )


def fit_batch(global_batch: int, micro_batch: int, dp: int) -> tuple[int, int]:
    """(micro batch, global batch) for ``dp`` data-parallel ranks, never changing the global
    batch: the recipe's micro batch, else the largest smaller one with micro x DP dividing the
    global batch. LaunchError when even micro batch 1 does not (too many ranks for the batch)."""
    for micro in range(micro_batch, 0, -1):
        if global_batch % (micro * dp) == 0:
            return micro, global_batch
    raise LaunchError(
        f"the global batch of {global_batch} sequences does not split over {dp} data-parallel "
        f"ranks (micro batch 1 x DP {dp} must divide it); use fewer nodes or processes, a "
        f"model-parallel layout (TP/PP) that leaves a DP dividing {global_batch}, or "
        "--global-batch-size in ARGS (this changes the tokens per step)"
    )


GIB = 1024**3
GPU_OVERHEAD = 4 * GIB  # CUDA context, NCCL and cuBLAS workspaces, allocator fragmentation
GPU_USABLE = 0.9  # of the GPU's memory


def local_spec_bytes(model: LlamaConfig, *, micro: int, vocab: int, tp: int, pp: int, cp: int,
                     dp: int, distributed_optimizer: bool) -> int:  # fmt: skip
    """Per-GPU memory of bf16 training on Megatron's local spec (no TE): per parameter 2 (bf16
    weights) + 4 (fp32 main gradients) + 12 (fp32 master weights and Adam moments, split over DP
    with the distributed optimizer) bytes; per layer and micro batch Korthikanti et al.'s
    ``s b h (34 + 5 a s / h)`` bytes (the second term is the unfused attention's scores and
    probabilities; no SP on the local spec), L layers' worth in flight on stage 0; the logits
    with their fp32 softmax and gradient, 10 bytes each. Deliberately rough (within ~1.5x)."""
    s, h, a = model.seq_length // cp, model.hidden_size, model.num_attention_heads
    optimizer = 12 / dp if distributed_optimizer else 12
    params = num_parameters(model, vocab) / (tp * pp) * (2 + 4 + optimizer)
    layers = model.num_layers * s * micro * h * (34 + 5 * a * s / h) / tp
    logits = 10 * s * micro * vocab / tp
    return int(params + layers + logits) + GPU_OVERHEAD


def local_attention_micro_batch(model: LlamaConfig, *, micro: int, global_batch: int, dp: int,
                                gpu_bytes: int, **layout) -> int:  # fmt: skip
    """The largest micro batch <= ``micro`` whose ``local_spec_bytes`` fit the GPU and whose
    micro x DP divides the global batch (more accumulation steps, the same tokens per step);
    LaunchError (one line) when micro batch 1 does not fit either."""
    usable = GPU_USABLE * gpu_bytes
    for m in range(micro, 0, -1):
        if (
            global_batch % (m * dp) == 0
            and local_spec_bytes(model, micro=m, dp=dp, **layout) <= usable
        ):
            return m
    need = local_spec_bytes(model, micro=1, dp=dp, **layout)
    raise LaunchError(
        f"without Transformer Engine (local spec, unfused attention) even micro batch 1 needs "
        f"~{need / GIB:.0f} GiB per GPU of {gpu_bytes / GIB:.0f} GiB: install TE (make setup "
        "GPU=1), or use more TP/PP, or ARGS='--recompute-granularity full --recompute-method "
        "uniform --recompute-num-layers 1'"
    )
