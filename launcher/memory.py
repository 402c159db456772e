"""Rough training-memory estimates: a CPU run's, so ``make pretrain`` refuses what cannot fit,
and a GPU's activations (``gpu_activations``: the figures README "Throughput settings" states).

A CPU machine trains in fp32 with Adam, without activation recompute unless asked: per parameter
4 (weights) + 4 (main gradients) + 8 (Adam moments) bytes, and per layer and micro batch the
activations Korthikanti et al. (2022, "Reducing Activation Recomputation in Large Transformer
Models", eq. 1) count for 16-bit training, ``s b h (34 + 5 a s / h)`` bytes, doubled for fp32,
plus the fp32 logits and their gradient. Tensor parallelism splits both (approximately), pipeline
parallelism splits the layers but keeps up to PP micro batches in flight on the first stage. The
estimate is deliberately rough (within ~2x): it separates "fits easily" from "eats all memory",
not 20 GiB from 22 GiB. REG=selfdistill adds its logit-lens pieces: about 16 fp32
``[chunk, vocab / tp]`` tensors at once (measured, ``megatron_ext/selfdistill.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from launcher.checks import flag_value
from launcher.planner import Plan
from launcher.settings import LaunchError
from megatron_ext.config import LlamaConfig, num_parameters
from recipes import SIZES, model_recipe, train_recipe

GiB = 1024**3
BYTES_PER_PARAM = 16  # fp32 weights + fp32 main grads + Adam exp_avg + exp_avg_sq
# Python, torch, Megatron and data-loader state per rank: the tiny default run's trainer peaked at
# 1.37 GiB resident (of which ~0.1 GiB model and activations)
PROCESS_OVERHEAD = 3 * GiB // 2


@dataclass(frozen=True, kw_only=True)
class MemoryEstimate:
    """Bytes one rank needs, split by what needs them."""

    params_and_optimizer: int
    """Weights, gradients and Adam moments of this rank's shard."""
    activations: int
    """Activations kept for backward (all micro batches in flight) plus logits."""

    @property
    def per_process(self) -> int:
        """Everything one rank holds, with the interpreter and libraries."""
        return self.params_and_optimizer + self.activations + PROCESS_OVERHEAD


def estimate(
    model: LlamaConfig,
    *,
    vocab: int,
    micro_batch_size: int,
    seq_length: int,
    tp: int = 1,
    pp: int = 1,
    full_recompute: bool = False,
    lens_chunk: int | None = None,
) -> MemoryEstimate:
    """Per-rank training memory of an fp32 CPU run (see the module docstring); ``lens_chunk``:
    REG=selfdistill's tokens per lens piece (None: not selfdistill)."""
    s, b, h = seq_length, micro_batch_size, model.hidden_size
    a, layers = model.num_attention_heads, model.num_layers
    full_layer = 2 * s * b * h * (34 + 5 * a * s / h)  # fp32: twice the 16-bit count
    if full_recompute:  # each layer keeps its input; one layer at a time is recomputed in full
        layer_stack = layers * 4 * s * b * h + full_layer
    else:
        layer_stack = layers * full_layer
    # 1F1B: stage 0 holds PP micro batches of L/PP layers each, i.e. about L layers' worth
    logits = 3 * 4 * s * b * vocab  # fp32 logits, softmax and its gradient
    lens = 16 * 4 * min(lens_chunk, s * b) * vocab if lens_chunk else 0
    activations = (layer_stack + logits + lens) / tp
    params = num_parameters(model, vocab) * BYTES_PER_PARAM / (tp * pp)
    return MemoryEstimate(params_and_optimizer=int(params), activations=int(activations))


@dataclass(frozen=True, kw_only=True)
class GpuActivations:
    """Activation bytes of one GPU (stage 0) in bf16 training on the size's GPU layout."""

    layers: int
    """Kept for backward by the transformer layers, all micro batches in flight."""
    pinned_stage_outputs: int
    """JREG with PP > 1: the stage outputs the pipeline cannot free (see ``gpu_activations``)."""

    @property
    def total(self) -> int:
        return self.layers + self.pinned_stage_outputs


def gpu_activations(model: LlamaConfig, *, micro_batch_size: int, tp: int = 1,
                    pp: int = 1) -> GpuActivations:  # fmt: skip
    """Per-GPU activations of bf16 training with fused attention and sequence parallelism:
    Korthikanti et al.'s ``34 s b h`` bytes per layer and micro batch, split over TP (SP); in
    1F1B stage 0 holds PP micro batches of L/PP layers, L layers' worth. At the model's own
    sequence length (8b: 8192). Logits come on top (the launcher's fused cross entropy).

    JREG adds one term with PP > 1: the fused displacement saves the layer output ``h_out`` for
    its backward, and the tensor a stage sends on is a viewless alias of it
    (megatron_ext/layer.py), so Megatron's ``deallocate_output_tensor`` (schedules.py), which
    frees a sent output's storage, frees nothing: one ``[s/tp, b, h]`` bf16 tensor per micro batch
    in flight stays (PP of them on stage 0). Under 1% of the layers' figure (2 against 34 x L/PP
    bytes per token and h), so it is counted rather than worked around.
    """
    s, b, h = model.seq_length, micro_batch_size, model.hidden_size
    layers = 34 * s * b * h * model.num_layers // tp
    pinned = 2 * s * b * h * pp // tp if pp > 1 else 0
    return GpuActivations(layers=layers, pinned_stage_outputs=pinned)


def available_memory() -> int:
    """Bytes of memory available to new processes now (psutil: free + reclaimable cache)."""
    import psutil

    return psutil.virtual_memory().available


def check_cpu_memory(p: Plan, available: int) -> None:
    """Refuse a CPU run whose estimated memory (all ranks of this node) exceeds ``available``."""
    extra = p.extra
    try:
        check_fits(
            p.size, nproc=p.nproc, tp=p.layout.tp, pp=p.layout.pp,
            vocab=p.model_vocab, available=available,
            micro_batch_size=flag_value(extra, "--micro-batch-size"),
            seq_length=flag_value(extra, "--seq-length"),
            full_recompute=flag_value(extra, "--recompute-granularity") == "full",
            lens_chunk=None if p.selfdistill is None else p.selfdistill.get("chunk_tokens", 512),
        )  # fmt: skip
    except ValueError as err:
        raise LaunchError(str(err)) from None


def check_fits(
    size: str,
    *,
    nproc: int,
    tp: int,
    pp: int,
    vocab: int,
    available: int,
    micro_batch_size: int | str | None = None,
    seq_length: int | str | None = None,
    full_recompute: bool = False,
    lens_chunk: int | None = None,
) -> None:
    """ValueError (one line: why, and what to run instead) unless ``nproc`` ranks of SIZE, with
    the recipe's micro batch and sequence unless given, fit in ``available`` bytes."""

    def per_rank(name, micro, seq, tp=1, pp=1, full=False):
        model = model_recipe(name)
        micro = int(micro or train_recipe(name).micro_batch_size)
        seq = int(seq or model.seq_length)
        return micro, seq, estimate(model, vocab=vocab, micro_batch_size=micro, seq_length=seq,
                                    tp=tp, pp=pp, full_recompute=full,
                                    lens_chunk=lens_chunk)  # fmt: skip

    micro, seq, est = per_rank(size, micro_batch_size, seq_length, tp, pp, full_recompute)
    need = nproc * est.per_process
    if need <= available:
        return
    fitting = [n for n in SIZES if per_rank(n, None, None)[2].per_process <= available]
    here = f"SIZE={' or SIZE='.join(fitting)}" if fitting else "nothing (free some memory)"
    raise ValueError(
        f"SIZE={size} needs ~{need / GiB:.0f} GiB to train on this CPU machine ({nproc} "
        f"process(es) x [{est.params_and_optimizer / GiB:.1f} GiB weights+grads+Adam, "
        f"{est.activations / GiB:.1f} GiB activations of a {micro} x {seq}-token micro batch]) "
        f"but {available / GiB:.1f} GiB is available. Train {here} here, SIZE={size} on GPUs "
        f"(make submit SIZE={size} NODES=1 GROUP=...), shrink it with "
        "ARGS='--micro-batch-size 1 --seq-length 256', or add FORCE_CPU=1 to try anyway"
    )
