"""The Megatron -> HF Llama weight mapping on synthetic tensors (the end-to-end logits check is
in test_export.py)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from eval.convert import hf_config, hf_state_dict, split_fc1, split_qkv
from recipes import model_recipe

CFG = model_recipe("tiny")  # 4 heads, 2 KV groups, head dim 32


def megatron_state(cfg=CFG, vocab=64) -> dict[str, torch.Tensor]:
    h, d, f = cfg.hidden_size, cfg.kv_channels, cfg.ffn_hidden_size
    qkv_rows = (cfg.num_attention_heads + 2 * cfg.num_query_groups) * d
    sd = {
        "embedding.word_embeddings.weight": torch.randn(vocab, h),
        "decoder.final_layernorm.weight": torch.randn(h),
        "output_layer.weight": torch.randn(vocab, h),
    }
    for i in range(cfg.num_layers):
        p = f"decoder.layers.{i}."
        sd.update({
            p + "input_layernorm.weight": torch.randn(h),
            p + "self_attention.linear_qkv.weight": torch.randn(qkv_rows, h),
            p + "self_attention.linear_qkv._extra_state": None,
            p + "self_attention.linear_proj.weight": torch.randn(h, h),
            p + "pre_mlp_layernorm.weight": torch.randn(h),
            p + "mlp.linear_fc1.weight": torch.randn(2 * f, h),
            p + "mlp.linear_fc2.weight": torch.randn(h, f),
        })  # fmt: skip
    return sd


def test_split_qkv_regroups_per_kv_head():
    d, h, per = CFG.kv_channels, CFG.hidden_size, 2
    q, k, v = torch.randn(4 * d, h), torch.randn(2 * d, h), torch.randn(2 * d, h)
    # Megatron rows: for each KV group g, [its query heads; k_g; v_g].
    fused = torch.cat([torch.cat([q[g * per * d : (g + 1) * per * d], k[g * d : (g + 1) * d],
                                  v[g * d : (g + 1) * d]]) for g in range(2)])  # fmt: skip
    q2, k2, v2 = split_qkv(fused, CFG)
    assert torch.equal(q2, q) and torch.equal(k2, k) and torch.equal(v2, v)
    with pytest.raises(ValueError, match="expected"):
        split_qkv(fused[:-1], CFG)


def test_split_fc1_is_gate_then_up():
    fc1 = torch.randn(2 * CFG.ffn_hidden_size, CFG.hidden_size)
    gate, up = split_fc1(fc1, CFG)
    assert torch.equal(gate, fc1[: CFG.ffn_hidden_size]) and torch.equal(
        up, fc1[CFG.ffn_hidden_size :]
    )


def test_state_dict_fills_every_hf_weight_with_the_right_shape():
    config = hf_config(CFG, 64, torch.float32, {"bos_token_id": 1, "eos_token_id": 2})
    reference = LlamaForCausalLM(config).state_dict()
    ours = hf_state_dict(megatron_state(), CFG)
    assert ours.keys() == reference.keys()
    assert all(ours[k].shape == reference[k].shape for k in ours)
    LlamaForCausalLM(config).load_state_dict(ours, strict=True)


def test_unmapped_weights_are_an_error():
    sd = megatron_state()
    sd["decoder.layers.0.self_attention.q_layernorm.weight"] = torch.randn(32)
    with pytest.raises(ValueError, match="unmapped.*q_layernorm"):
        hf_state_dict(sd, CFG)
