"""Training recipes per model size: schedule and the parallel layout for one 8-GPU node.

Each is the base schedule plus what the size changes. ``parallel_defaults`` is the one place that
decides TP/PP/CP for a size and a GPU count; users override any of it with TP=, PP=, ... .
"""

from __future__ import annotations

from megatron_ext.config import ParallelConfig, TrainConfig


def base() -> TrainConfig:
    """AdamW (0.9, 0.95), wd 0.1, cosine to lr/10, 2% warmup, clip 1.0."""
    return TrainConfig(micro_batch_size=4, global_batch_size=256, train_iters=10_000)


def tiny() -> TrainConfig:
    """The laptop/CPU default: 300 steps of 8 x 128 tokens, checkpoints every 100."""
    return base().replace(
        micro_batch_size=4, global_batch_size=8, train_iters=300, lr=3e-3, min_lr=3e-4,
        lr_warmup_fraction=0.05, log_interval=10, save_interval=100, eval_interval=100,
        eval_iters=4,
    )  # fmt: skip


def study() -> TrainConfig:
    """`make study`: tiny's schedule for 3000 steps of 8 x 128 tokens (3.1M tokens), 10
    checkpoints, each followed by a validation pass."""
    iters = 3000
    return tiny().replace(train_iters=iters, save_interval=iters // 10, eval_interval=iters // 10)


def small() -> TrainConfig:
    """125m / 350m: 512 x 2048 tokens per step (~1M)."""
    return base().replace(micro_batch_size=8, global_batch_size=512, lr=6e-4, min_lr=6e-5)


def large() -> TrainConfig:
    """1b-8b: 512 sequences per step (2M tokens at 4096), Llama 3 style peak lr."""
    return base().replace(micro_batch_size=2, global_batch_size=512, lr=3e-4, min_lr=3e-5)


TRAIN = {"tiny": tiny, "125m": small, "350m": small, "1b": large, "3b": large, "8b": large,
         "study": study}  # fmt: skip

# Per size on one node of 8 GPUs (80-141 GB each): TP within NVLink only where memory needs it.
_GPU_LAYOUT = {
    "tiny": ParallelConfig(),
    "study": ParallelConfig(),
    "125m": ParallelConfig(),
    "350m": ParallelConfig(),
    "1b": ParallelConfig(distributed_optimizer=True),
    "3b": ParallelConfig(distributed_optimizer=True),
    "8b": ParallelConfig(tp=2, distributed_optimizer=True),
}


def train_recipe(size: str) -> TrainConfig:
    """The training schedule for SIZE."""
    if size not in TRAIN:
        raise ValueError(f"unknown SIZE {size!r}; valid: {', '.join(TRAIN)}")
    return TRAIN[size]()


def parallel_defaults(size: str, num_gpus: int) -> ParallelConfig:
    """Layout for SIZE on ``num_gpus`` GPUs per node (0: CPU, where everything is 1)."""
    if num_gpus == 0:
        return ParallelConfig()
    layout = _GPU_LAYOUT[size]
    if num_gpus % layout.model_parallel_size:
        return ParallelConfig(distributed_optimizer=layout.distributed_optimizer)
    return layout
