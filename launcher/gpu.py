"""Decisions a GPU plan needs beyond the layout: Transformer Engine or not, and the batch over DP.

Pure functions of plain values (the probes run in the planner), so the CPU tests can call them
with a GPU node's values. Both exist because the silent choice was the wrong one: a Hopper node
whose TE did not import trained in bf16 on the local spec, several times slower, without a word;
and a global batch smaller than micro batch x DP was rounded up (1b on 32 nodes: 512 -> 2048
sequences per step), changing the tokens per step the recipe's schedule was tuned for.
"""

from __future__ import annotations

from launcher.settings import LaunchError

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
