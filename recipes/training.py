"""Training recipes: the base schedule plus what a size changes.

Which size uses which recipe, and its GPU layout, is the size table (``recipes.sizes``);
``recipes.parallel_defaults`` decides TP/PP/CP for a size and a GPU count, and users override any
of it with TP=, PP=, ... .
"""

from __future__ import annotations

from megatron_ext.config import TrainConfig


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


def large_mbs(micro_batch_size: int):
    """``large`` with the micro-batch size that suits an H200 (141 GB) for one size.

    Activations are ~34 x seq x hidden bytes per layer and sequence (Korthikanti et al., bf16,
    flash attention, no recompute; / TP with SP; ``launcher.memory.gpu_activations``). 1b (16 x
    2048, seq 4096) ~4.6 GB per sequence, so mbs 8 ~37 GB; 3b (28 x 3072, seq 4096) ~12 GB per
    sequence, mbs 4 ~48 GB; 8b (32 x 4096, seq 8192, TP=2+SP) ~18 GB per sequence per GPU, mbs 2
    ~37 GB next to ~36 GB of bf16 weights, fp32 gradients and the DP-sharded Adam state. Larger GEMMs per step, fewer microbatches; all leave
    room for the [s, b, vocab] logits of a 128k vocabulary. Untested on an H200 so far: `make
    preflight` measures the peak memory of the 1b shape.
    """

    def recipe() -> TrainConfig:
        return large().replace(micro_batch_size=micro_batch_size)

    recipe.__doc__ = f"{large.__doc__} Micro batch {micro_batch_size} (H200)."
    return recipe


def continued(seq_length: int = 2048, tokens: int = 10_000_000) -> TrainConfig:
    """Continued pretraining of an imported model (``INIT=``), the self-distillation paper's
    setting (Llama-3.2-1B + 10M tokens): batch 128, peak lr 1e-4 (a tenth of from-scratch: the
    model is already trained), cosine to 1e-5, ``tokens`` in all at ``seq_length``."""
    global_batch = 128
    iters = max(1, tokens // (global_batch * seq_length))
    return base().replace(
        micro_batch_size=2, global_batch_size=global_batch, train_iters=iters, lr=1e-4,
        min_lr=1e-5, save_interval=max(1, iters // 4), eval_interval=max(1, iters // 4),
    )  # fmt: skip
