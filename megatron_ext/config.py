"""Model architecture config (a dataclass with no Megatron import, so launchers stay light)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass

BATCH_KEYS = ("tokens", "labels", "loss_mask", "position_ids")
"""Keys of a GPT microbatch dict (Megatron's GPTDataset samples; ``megatron_ext.step`` moves them
to the device, eval/ stacks them)."""


def te_available() -> bool:
    """True when Transformer Engine is installed (GPU machines with the ``gpu`` extra). A presence
    check, cheap enough for any machine; ``te_import_error`` is the real test on a GPU node."""
    return importlib.util.find_spec("transformer_engine") is not None


def te_import_error() -> str | None:
    """None when ``transformer_engine.pytorch`` imports, else why not (one line). Installed is not
    enough: a TE built for another torch or CUDA is found by ``te_available`` and then fails at
    the trainer's first TE import (or, with a presence check alone, trains on the slow path).
    Tried in a child process: a TE whose libraries crash the interpreter becomes a message, and
    the launcher (alive for the whole run) holds none of TE's CUDA state."""
    if not te_available():
        return "transformer_engine is not installed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        proc = subprocess.run([sys.executable, "-c", "import transformer_engine.pytorch"],
                              capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "import transformer_engine.pytorch did not finish in 600 s"
    if proc.returncode == 0:
        return None
    lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    why = lines[-1].strip() if lines else f"exit code {proc.returncode}"
    return f"import transformer_engine.pytorch failed: {why}"[:300]


def apex_wgrad_available() -> bool:
    """True when Apex's fused weight-gradient kernel imports. Megatron's own ColumnParallelLinear
    (the output layer, with the TE spec too: gpt_model.py:264) raises at construction when
    gradient_accumulation_fusion is on and it does not (tensor_parallel/layers.py:1070); Megatron
    turns the fusion on by default, so the launcher passes --no-gradient-accumulation-fusion
    unless this is True."""
    if importlib.util.find_spec("fused_weight_gradient_mlp_cuda") is None:
        return False
    import torch  # noqa: F401  (the extension links against it: import it first)

    try:
        import fused_weight_gradient_mlp_cuda  # noqa: F401
    except Exception:
        return False
    return True


def _check_positive_ints(cfg, *names: str, label=lambda name: name) -> None:
    """ValueError naming the first field that is not a positive integer."""
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{label(name)} must be a positive integer, got {value!r}")


@dataclass(kw_only=True)
class LlamaConfig:
    """Architecture of a Llama-style decoder (what a model-size recipe states)."""

    num_layers: int
    """Transformer layers (all pipeline stages together)."""
    hidden_size: int
    """Residual-stream width h."""
    ffn_hidden_size: int
    """SwiGLU inner width (per gate/up half)."""
    num_attention_heads: int
    """Query heads; must divide hidden_size."""
    num_query_groups: int
    """Key/value heads (GQA); must divide num_attention_heads."""
    seq_length: int
    """Training sequence length (also the max position for RoPE)."""
    rotary_base: int = 500_000
    """RoPE base (Llama 3: 500000; Llama 2: 10000)."""
    init_method_std: float = 0.02
    """Std of the normal init; output projections use std / sqrt(2 * num_layers)."""
    norm_epsilon: float = 1e-5
    """RMSNorm epsilon."""
    tie_embeddings: bool = False
    """Output layer shares the input embedding (Llama 3.2 1B/3B, small Qwen2; imported models)."""
    qkv_bias: bool = False
    """Biases on the query/key/value projections (Qwen2; imported models)."""
    rope_scaling_factor: float | None = None
    """Llama 3.x RoPE scaling factor, None for none. Megatron fixes the other llama3 parameters
    (low/high frequency factors 1 and 4, original context 8192): ``eval.import_hf`` refuses others."""

    def __post_init__(self):
        _check_positive_ints(self, "num_layers", "hidden_size", "ffn_hidden_size",
                             "num_attention_heads", "num_query_groups", "seq_length")  # fmt: skip
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} must divide "
                f"hidden_size={self.hidden_size}"
            )
        if self.num_attention_heads % self.num_query_groups:
            raise ValueError(
                f"num_query_groups={self.num_query_groups} must divide "
                f"num_attention_heads={self.num_attention_heads}"
            )

    def check_layout(self, tp: int = 1, pp: int = 1, vpp: int | None = None) -> None:
        """Raise ValueError unless this model splits over TP x PP (x VPP)."""
        chunks = pp * (vpp or 1)
        if self.num_layers % chunks:
            vpp_text = f" x VPP={vpp}" if vpp else ""
            raise ValueError(
                f"num_layers={self.num_layers} is not divisible by PP={pp}{vpp_text}; "
                f"choose PP/VPP whose product divides {self.num_layers}"
            )
        if vpp and pp < 2:
            raise ValueError("VPP needs PP >= 2 (interleaved pipeline); unset VPP or raise PP")
        if self.num_query_groups % tp or self.num_attention_heads % tp:
            raise ValueError(
                f"TP={tp} must divide num_query_groups={self.num_query_groups} "
                f"and num_attention_heads={self.num_attention_heads}"
            )
        if self.ffn_hidden_size % tp:
            raise ValueError(f"TP={tp} must divide ffn_hidden_size={self.ffn_hidden_size}")

    def replace(self, **changes) -> LlamaConfig:
        """A validated copy with ``changes`` applied (recipes are written as differences)."""
        return dataclasses.replace(self, **changes)

    @property
    def kv_channels(self) -> int:
        """Head dimension."""
        return self.hidden_size // self.num_attention_heads


def megatron_flags(cfg: LlamaConfig) -> list[str]:
    """The Megatron-LM flags that describe ``cfg`` (for ``megatron.training`` argument parsing)."""
    flags = [
        "--num-layers", str(cfg.num_layers),
        "--hidden-size", str(cfg.hidden_size),
        "--ffn-hidden-size", str(cfg.ffn_hidden_size),
        "--num-attention-heads", str(cfg.num_attention_heads),
        "--group-query-attention", "--num-query-groups", str(cfg.num_query_groups),
        "--kv-channels", str(cfg.kv_channels),
        "--seq-length", str(cfg.seq_length),
        "--max-position-embeddings", str(cfg.seq_length),
        "--position-embedding-type", "rope", "--rotary-base", str(cfg.rotary_base),
        "--normalization", "RMSNorm", "--norm-epsilon", str(cfg.norm_epsilon),
        "--swiglu", "--disable-bias-linear",
        "--attention-dropout", "0", "--hidden-dropout", "0",
        "--init-method-std", str(cfg.init_method_std),
    ]  # fmt: skip
    if not cfg.tie_embeddings:
        flags.append("--untie-embeddings-and-output-weights")
    if cfg.qkv_bias:
        flags.append("--add-qkv-bias")
    if cfg.rope_scaling_factor is not None:
        flags += ["--use-rope-scaling", "--rope-scaling-factor", str(cfg.rope_scaling_factor)]
    return flags


@dataclass(kw_only=True)
class TrainConfig:
    """Optimisation and schedule of a pretraining run (what a training recipe states)."""

    micro_batch_size: int
    """Sequences per microbatch per data-parallel rank."""
    global_batch_size: int
    """Sequences per optimizer step (all data-parallel ranks and microbatches)."""
    train_iters: int
    """Optimizer steps."""
    lr: float = 3e-4
    """Peak learning rate."""
    min_lr: float = 3e-5
    """Learning rate at the end of the decay."""
    lr_warmup_fraction: float = 0.02
    """Share of train_iters spent in linear warmup."""
    lr_decay_style: str = "cosine"
    """Megatron's --lr-decay-style."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    adam_beta2: float = 0.95
    """AdamW beta2 (beta1 stays 0.9)."""
    clip_grad: float = 1.0
    """Global gradient-norm clip."""
    log_interval: int = 10
    """Iterations between log lines (console, TensorBoard, W&B, metrics.jsonl)."""
    save_interval: int = 1000
    """Iterations between checkpoints."""
    eval_interval: int = 1000
    """Iterations between validation passes."""
    eval_iters: int = 10
    """Validation batches per pass."""

    def __post_init__(self):
        _check_positive_ints(self, "micro_batch_size", "global_batch_size", "train_iters",
                             "log_interval", "save_interval", "eval_interval", "eval_iters")  # fmt: skip
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} must divide "
                f"global_batch_size={self.global_batch_size}"
            )
        if not 0 < self.min_lr <= self.lr:
            raise ValueError(f"need 0 < min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")

    def replace(self, **changes) -> TrainConfig:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def warmup_iters(self) -> int:
        """lr_warmup_fraction of train_iters, at least 1, but below train_iters: Megatron asserts
        lr_warmup_steps < lr_decay_steps (``optimizer_param_scheduler.py``), so ITERS=1 gets 0."""
        return min(max(1, round(self.lr_warmup_fraction * self.train_iters)), self.train_iters - 1)

    def megatron_flags(self) -> list[str]:
        """The Megatron-LM flags for this schedule."""
        return [
            "--micro-batch-size", str(self.micro_batch_size),
            "--global-batch-size", str(self.global_batch_size),
            "--train-iters", str(self.train_iters),
            "--lr", str(self.lr), "--min-lr", str(self.min_lr),
            "--lr-decay-style", self.lr_decay_style,
            "--lr-warmup-iters", str(self.warmup_iters()),
            "--weight-decay", str(self.weight_decay),
            "--adam-beta1", "0.9", "--adam-beta2", str(self.adam_beta2),
            "--clip-grad", str(self.clip_grad),
            "--log-interval", str(self.log_interval),
            "--save-interval", str(self.save_interval),
            "--eval-interval", str(self.eval_interval),
            "--eval-iters", str(self.eval_iters),
        ]  # fmt: skip


@dataclass(kw_only=True)
class ParallelConfig:
    """A parallel layout: one place decides it (``recipes.parallel_defaults``, from the size table)."""

    tp: int = 1
    """Tensor parallel size."""
    pp: int = 1
    """Pipeline parallel size."""
    vpp: int | None = None
    """Virtual pipeline stages per PP rank (interleaved schedule); None for none."""
    cp: int = 1
    """Context parallel size (needs Transformer Engine)."""
    sequence_parallel: bool | None = None
    """Split activations over TP ranks; None = on whenever tp > 1."""
    distributed_optimizer: bool = False
    """Shard optimizer state over data-parallel ranks."""

    def __post_init__(self):
        _check_positive_ints(self, "tp", "pp", "cp", label=str.upper)
        if self.vpp is not None and (not isinstance(self.vpp, int) or self.vpp < 1):
            raise ValueError(f"VPP must be a positive integer, got {self.vpp!r}")
        if self.vpp == 1:
            self.vpp = None
        if self.sequence_parallel is None:
            self.sequence_parallel = self.tp > 1

    @property
    def model_parallel_size(self) -> int:
        """Ranks that hold one model replica (TP x PP x CP)."""
        return self.tp * self.pp * self.cp

    def check_world(self, world_size: int) -> None:
        """Raise ValueError unless TP x PP x CP divides the number of processes."""
        if world_size % self.model_parallel_size:
            raise ValueError(
                f"TP={self.tp} x PP={self.pp} x CP={self.cp} = {self.model_parallel_size} does not "
                f"divide the world size {world_size} (NPROC x NNODES); change TP/PP/CP or NPROC"
            )

    def megatron_flags(self, num_layers: int) -> list[str]:
        """The Megatron-LM flags for this layout."""
        flags = [
            "--tensor-model-parallel-size", str(self.tp),
            "--pipeline-model-parallel-size", str(self.pp),
            "--context-parallel-size", str(self.cp),
        ]  # fmt: skip
        if self.vpp:
            flags += [
                "--num-layers-per-virtual-pipeline-stage",
                str(num_layers // self.pp // self.vpp),
            ]
        if self.sequence_parallel:
            flags.append("--sequence-parallel")
        if self.distributed_optimizer:
            flags.append("--use-distributed-optimizer")
        return flags


def num_parameters(model: LlamaConfig, vocab: int) -> int:
    """Parameters of the Llama model (embedding, layers, final norm, output layer unless tied)."""
    h, heads, groups = model.hidden_size, model.num_attention_heads, model.num_query_groups
    head_dim = h // heads
    attention = h * (heads + 2 * groups) * head_dim + heads * head_dim * h
    if model.qkv_bias:
        attention += (heads + 2 * groups) * head_dim
    mlp = 3 * h * model.ffn_hidden_size  # SwiGLU: gate, up, down
    per_layer = attention + mlp + 2 * h  # two RMSNorms
    return model.num_layers * per_layer + (1 if model.tie_embeddings else 2) * vocab * h + h
