"""Llama-architecture GPT models from a recipe: RMSNorm, SwiGLU, RoPE, GQA, untied embeddings,
no biases, no dropout, with the JREG layer in every transformer block.

``LlamaConfig`` is the architecture a recipe states; ``transformer_config`` turns it plus a
parallel layout into Megatron's ``TransformerConfig`` (used by tests and custom loops), and
``megatron_flags`` into the Megatron-LM command-line flags the ``pretrain()`` entry point parses,
so both paths describe the same model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer import TransformerConfig

from megatron_ext.layer import jreg_layer_spec
from megatron_ext.reg import JregRuntime


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


def _p2p_flags(pp: int, vpp: int | None) -> dict:
    # Interleaved PP with PP=2 and batched p2p pairs two sends and two receives with the same
    # peer in one batch and matches them in the wrong order: silently wrong losses and gradients
    # (megatron/training/arguments.py:972 refuses it, core's TransformerConfig does not).
    if vpp and pp == 2:
        return {"batch_p2p_comm": False, "overlap_p2p_comm": False}
    return {}


def transformer_config(
    cfg: LlamaConfig,
    *,
    tp: int = 1,
    pp: int = 1,
    vpp: int | None = None,
    cp: int = 1,
    sequence_parallel: bool = False,
    params_dtype: torch.dtype = torch.float32,
    **overrides,
) -> TransformerConfig:
    """Megatron TransformerConfig for ``cfg`` on a TP x PP (x VPP) x CP layout."""
    cfg.check_layout(tp, pp, vpp)
    kwargs = dict(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        ffn_hidden_size=cfg.ffn_hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        num_query_groups=cfg.num_query_groups,
        kv_channels=cfg.kv_channels,
        init_method_std=cfg.init_method_std,
        layernorm_epsilon=cfg.norm_epsilon,
        normalization="RMSNorm",
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=vpp,
        context_parallel_size=cp,
        sequence_parallel=sequence_parallel,
        params_dtype=params_dtype,
        pipeline_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        use_cpu_initialization=True,
        gradient_accumulation_fusion=False,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        **_p2p_flags(pp, vpp),
    )
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)


def build_gpt_model(
    cfg: LlamaConfig,
    config: TransformerConfig,
    runtime: JregRuntime,
    vocab_size: int,
    *,
    pre_process: bool = True,
    post_process: bool = True,
    vp_stage: int | None = None,
    use_te: bool | None = None,
) -> GPTModel:
    """One GPT model chunk with JREG layers; registers the runtime's loss-scale hook."""
    config.experimental_attention_variant_loss_scale_func = runtime.set_loss_scale
    return GPTModel(
        config=config,
        transformer_layer_spec=jreg_layer_spec(runtime, use_te),
        vocab_size=vocab_size,
        max_sequence_length=cfg.seq_length,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=False,
        position_embedding_type="rope",
        rotary_base=cfg.rotary_base,
        vp_stage=vp_stage,
    )


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
