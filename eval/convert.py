"""The Megatron GPT (Llama layer spec) -> Hugging Face ``LlamaForCausalLM`` weight mapping
(``Qwen2ForCausalLM`` for a model with q/k/v biases: Qwen2 is Llama plus exactly those).

Input: the full (TP=1, PP=1) state dict of a model built by ``megatron_ext.model`` with the local
layer spec. The two fused Megatron weights are split as Megatron computes with them:

* ``linear_qkv`` rows are grouped per KV head g: ``[q heads of group g; k_g; v_g]``
  (``Attention.get_query_key_value_tensors``), so they regroup into HF ``q_proj``/``k_proj``/
  ``v_proj``, where query head j uses KV head ``j // (heads / groups)`` as in HF's ``repeat_kv``;
* ``linear_fc1`` rows are ``[gate; up]`` (Megatron's SwiGLU applies SiLU to the first half).

``megatron_state_dict`` is the inverse (``make import``), from the same key table.

RoPE needs no permutation: Megatron's non-interleaved rotary embedding rotates halves, exactly
like HF Llama's ``rotate_half``. The vocabulary is kept padded (see ``hf_config``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import PretrainedConfig, Qwen2Config

from megatron_ext.config import LlamaConfig

# llama3 RoPE scaling as Megatron 0.19.2 applies it: only the factor varies
# (megatron/core/models/common/embeddings/rotary_pos_embedding.py _apply_scaling)
LLAMA3_FIXED = {"low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192}  # fmt: skip


def split_qkv(
    qkv: torch.Tensor, cfg: LlamaConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Megatron ``linear_qkv.weight`` ``[(heads + 2 groups) d, h]`` -> HF q, k, v weights."""
    groups, d = cfg.num_query_groups, cfg.kv_channels
    per_group = cfg.num_attention_heads // groups
    expected = ((per_group + 2) * groups * d, cfg.hidden_size)
    if tuple(qkv.shape) != expected:
        raise ValueError(f"linear_qkv.weight has shape {tuple(qkv.shape)}, expected {expected}")
    grouped = qkv.reshape(groups, per_group + 2, d, cfg.hidden_size)
    q = grouped[:, :per_group].reshape(-1, cfg.hidden_size)
    k = grouped[:, per_group].reshape(-1, cfg.hidden_size)
    v = grouped[:, per_group + 1].reshape(-1, cfg.hidden_size)
    return q, k, v


def split_fc1(fc1: torch.Tensor, cfg: LlamaConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Megatron SwiGLU ``linear_fc1.weight`` ``[2 ffn, h]`` -> HF gate, up weights."""
    if tuple(fc1.shape) != (2 * cfg.ffn_hidden_size, cfg.hidden_size):
        raise ValueError(f"linear_fc1.weight has shape {tuple(fc1.shape)}, expected [2 ffn, h]")
    gate, up = fc1.chunk(2, dim=0)
    return gate, up


# Per-layer weights that map one to one: Megatron suffix -> HF suffix (both directions use it).
LAYER_KEYS = {
    "input_layernorm.weight": "input_layernorm.weight",
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "mlp.linear_fc2.weight": "mlp.down_proj.weight",
}
TOP_KEYS = {
    "embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "decoder.final_layernorm.weight": "model.norm.weight",
    "output_layer.weight": "lm_head.weight",
}


def merge_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: LlamaConfig) -> torch.Tensor:
    """HF q, k, v weights (or biases) -> Megatron ``linear_qkv``: the inverse of ``split_qkv``."""
    groups, d = cfg.num_query_groups, cfg.kv_channels
    per_group = cfg.num_attention_heads // groups
    rest = q.shape[1:]
    parts = (q.reshape(groups, per_group, d, *rest), k.reshape(groups, 1, d, *rest),
             v.reshape(groups, 1, d, *rest))  # fmt: skip
    return torch.cat(parts, dim=1).reshape(-1, *rest)


def _split_qkv_bias(bias: torch.Tensor, cfg: LlamaConfig) -> tuple[torch.Tensor, ...]:
    groups, d = cfg.num_query_groups, cfg.kv_channels
    per_group = cfg.num_attention_heads // groups
    grouped = bias.reshape(groups, per_group + 2, d)
    return (grouped[:, :per_group].reshape(-1), grouped[:, per_group].reshape(-1),
            grouped[:, per_group + 1].reshape(-1))  # fmt: skip


def hf_state_dict(megatron_sd: dict[str, torch.Tensor], cfg: LlamaConfig) -> dict:
    """HF ``LlamaForCausalLM`` weights from a full Megatron state dict (contiguous copies)."""
    sd = {k: v for k, v in megatron_sd.items() if not k.endswith("_extra_state")}
    out = {hf: sd.pop(meg) for meg, hf in TOP_KEYS.items() if meg in sd}
    if cfg.tie_embeddings:
        out.pop("lm_head.weight", None)
    for i in range(cfg.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        q, k, v = split_qkv(sd.pop(src + "self_attention.linear_qkv.weight"), cfg)
        gate, up = split_fc1(sd.pop(src + "mlp.linear_fc1.weight"), cfg)
        out.update({dst + hf: sd.pop(src + meg) for meg, hf in LAYER_KEYS.items()})
        out.update({
            dst + "self_attn.q_proj.weight": q,
            dst + "self_attn.k_proj.weight": k,
            dst + "self_attn.v_proj.weight": v,
            dst + "mlp.gate_proj.weight": gate,
            dst + "mlp.up_proj.weight": up,
        })  # fmt: skip
        if cfg.qkv_bias:
            qb, kb, vb = _split_qkv_bias(sd.pop(src + "self_attention.linear_qkv.bias"), cfg)
            out.update({dst + "self_attn.q_proj.bias": qb, dst + "self_attn.k_proj.bias": kb,
                        dst + "self_attn.v_proj.bias": vb})  # fmt: skip
    if sd:
        raise ValueError(f"unmapped Megatron weights: {', '.join(sorted(sd)[:5])}")
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def megatron_state_dict(hf_sd: dict[str, torch.Tensor], cfg: LlamaConfig, vocab_size: int) -> dict:
    """Full (TP=1, PP=1) Megatron weights from HF Llama/Qwen2 weights; the embedding (and output
    layer) rows beyond the HF vocabulary are padded with zeros up to ``vocab_size``."""
    sd = dict(hf_sd)
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    out = {}
    for meg, hf in TOP_KEYS.items():
        if hf == "lm_head.weight" and cfg.tie_embeddings:
            continue
        out[meg] = _pad_rows(sd.pop(hf), vocab_size) if "norm" not in hf else sd.pop(hf)
    for i in range(cfg.num_layers):
        src, dst = f"model.layers.{i}.", f"decoder.layers.{i}."
        out.update({dst + meg: sd.pop(src + hf) for meg, hf in LAYER_KEYS.items()})
        attn = src + "self_attn."
        qkv = [sd.pop(f"{attn}{x}_proj.weight") for x in "qkv"]
        out[dst + "self_attention.linear_qkv.weight"] = merge_qkv(*qkv, cfg)
        if cfg.qkv_bias:
            biases = [sd.pop(f"{attn}{x}_proj.bias") for x in "qkv"]
            out[dst + "self_attention.linear_qkv.bias"] = merge_qkv(*biases, cfg)
        gate, up = sd.pop(src + "mlp.gate_proj.weight"), sd.pop(src + "mlp.up_proj.weight")
        out[dst + "mlp.linear_fc1.weight"] = torch.cat([gate, up], dim=0)
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}
    if sd:
        raise ValueError(f"weights the Llama builder has no place for: {', '.join(sorted(sd)[:5])}")
    return {k: v.contiguous() for k, v in out.items()}


def _pad_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    if weight.shape[0] > rows:
        raise ValueError(f"vocabulary of {weight.shape[0]} rows exceeds the padded size {rows}")
    pad = weight.new_zeros(rows - weight.shape[0], *weight.shape[1:])
    return torch.cat([weight, pad], dim=0)


def hf_config(
    cfg: LlamaConfig, vocab_size: int, dtype: torch.dtype, token_ids: dict[str, int | None]
) -> PretrainedConfig:
    """The HF config of the same model: Llama, or Qwen2 with q/k/v biases (HF Llama's
    ``attention_bias`` would add an o_proj bias too; Qwen2 has q/k/v biases and nothing else).

    ``vocab_size`` is the padded Megatron vocabulary: the model was trained with a softmax over
    all of it, so keeping the padding rows keeps every log-probability identical to training's
    (trimming would leave real-token logits unchanged but renormalise the softmax).
    """
    rope = {"rope_type": "default", "rope_theta": float(cfg.rotary_base)}
    if cfg.rope_scaling_factor is not None:
        rope.update(rope_type="llama3", factor=cfg.rope_scaling_factor, **LLAMA3_FIXED)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.ffn_hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_query_groups,
        max_position_embeddings=cfg.seq_length,
        rms_norm_eps=cfg.norm_epsilon,
        rope_parameters=rope,
        hidden_act="silu",
        tie_word_embeddings=cfg.tie_embeddings,
        initializer_range=cfg.init_method_std,
        dtype=dtype,
        **token_ids,
    )
    if cfg.qkv_bias:  # head_dim is hidden / heads in Qwen2, as in every LlamaConfig
        return Qwen2Config(**common, use_sliding_window=False, architectures=["Qwen2ForCausalLM"])
    return HFLlamaConfig(**common, head_dim=cfg.kv_channels, attention_bias=False, mlp_bias=False,
                         architectures=["LlamaForCausalLM"])  # fmt: skip


def legacy_keys(config: dict) -> dict:
    """``config.json`` keys in transformers 4.x spelling next to the 5.x ones.

    transformers 5 writes the RoPE base only inside ``rope_parameters`` and the dtype as
    ``dtype``; a 4.x reader (older vLLM or lm-eval installs) looks up ``rope_theta`` and
    ``torch_dtype`` and falls back to a base of 10000 without a word. Both spellings say the same.
    """
    out = dict(config)
    rope = out.get("rope_parameters") or {}
    if "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") == "default":
            out.setdefault("rope_scaling", None)
    if "dtype" in out:
        out["torch_dtype"] = out["dtype"]
    return out


def write_hf_config(folder: Path, config: PretrainedConfig) -> Path:
    """``config.json`` of ``config`` in ``folder``, readable by transformers 4.x and 5.x."""
    config.save_pretrained(folder)
    path = folder / "config.json"
    path.write_text(json.dumps(legacy_keys(json.loads(path.read_text())), indent=2) + "\n")
    return path
