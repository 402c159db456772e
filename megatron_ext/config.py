"""Model architecture config (a dataclass with no Megatron import, so launchers stay light)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


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

    def __post_init__(self):
        for name in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads",
                     "num_query_groups", "seq_length"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
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
    return [
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
        "--swiglu", "--disable-bias-linear", "--untie-embeddings-and-output-weights",
        "--attention-dropout", "0", "--hidden-dropout", "0",
        "--init-method-std", str(cfg.init_method_std),
    ]  # fmt: skip
