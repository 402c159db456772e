"""Llama-architecture GPT models from a recipe: RMSNorm, SwiGLU, RoPE, GQA, untied embeddings
(tied, q/k/v biases and llama3 RoPE scaling for imported models), no other biases, no dropout,
with the JREG layer in every transformer block.

``LlamaConfig`` (config.py) is the architecture a recipe states; ``transformer_config`` turns it
plus a parallel layout into Megatron's ``TransformerConfig`` (tests, custom loops), and
``config.megatron_flags`` into the Megatron-LM flags that the ``pretrain()`` entry point parses,
so both paths describe the same model.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from megatron.core import dist_checkpointing
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer import TransformerConfig

from megatron_ext.config import LlamaConfig
from megatron_ext.layer import jreg_layer_spec
from megatron_ext.reg import JregRuntime


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
        add_qkv_bias=cfg.qkv_bias,
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
        transformer_layer_spec=jreg_layer_spec(runtime, use_te, config),
        vocab_size=vocab_size,
        max_sequence_length=cfg.seq_length,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=cfg.tie_embeddings,
        position_embedding_type="rope",
        rotary_base=cfg.rotary_base,
        rope_scaling=cfg.rope_scaling_factor is not None,
        rope_scaling_factor=cfg.rope_scaling_factor or 8.0,
        vp_stage=vp_stage,
    )


def load_weights(gpt: GPTModel, ckpt: str | Path) -> list[str]:
    """Read the model weights of the checkpoint folder ``ckpt`` (``iter_NNNNNNN``) into ``gpt``,
    resharded to its layout (every rank of ``gpt``'s groups calls it); returns the names the
    checkpoint lacks (TE's ``_extra_state`` aside). Reader errors propagate."""
    meta = dist_checkpointing.load_content_metadata(str(ckpt))
    state = dist_checkpointing.load({"model": gpt.sharded_state_dict(metadata=meta)}, str(ckpt))
    result = gpt.load_state_dict(state["model"], strict=False)
    return [k for k in result.missing_keys if not k.endswith("_extra_state")]
