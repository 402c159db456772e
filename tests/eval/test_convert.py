"""The Megatron -> HF Llama (Qwen2 with q/k/v biases) weight mapping on synthetic tensors (the
end-to-end logits check is in test_export.py), and a random HF Qwen2 / Llama-3 model mapped to
Megatron and back (import's table, then export's config and weights) computes the same logits."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig as HFLlamaConfig
from transformers import LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from eval.convert import hf_config, hf_state_dict, megatron_state_dict, split_fc1, split_qkv
from eval.import_hf import model_config
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
        if cfg.qkv_bias:
            sd[p + "self_attention.linear_qkv.bias"] = torch.randn(qkv_rows)
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


@pytest.mark.parametrize(
    ("cfg", "hf_model"),
    [(CFG, LlamaForCausalLM), (CFG.replace(qkv_bias=True), Qwen2ForCausalLM)],
    ids=["llama", "qwen2"],
)
def test_state_dict_fills_every_hf_weight_with_the_right_shape(cfg, hf_model):
    config = hf_config(cfg, 64, torch.float32, {"bos_token_id": 1, "eos_token_id": 2})
    reference = hf_model(config).state_dict()
    ours = hf_state_dict(megatron_state(cfg), cfg)
    assert ours.keys() == reference.keys()
    assert all(ours[k].shape == reference[k].shape for k in ours)
    hf_model(config).load_state_dict(ours, strict=True)


TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            rms_norm_eps=1e-5)  # fmt: skip
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}  # fmt: skip


@pytest.mark.parametrize(
    ("config", "hf_model"),
    [(Qwen2Config(**TINY, tie_word_embeddings=True, architectures=["Qwen2ForCausalLM"]),
      Qwen2ForCausalLM),
     (Qwen2Config(**TINY, architectures=["Qwen2ForCausalLM"]), Qwen2ForCausalLM),
     (HFLlamaConfig(**TINY, tie_word_embeddings=True, rope_parameters=LLAMA3,
                    architectures=["LlamaForCausalLM"]), LlamaForCausalLM)],
    ids=["qwen2_tied", "qwen2_untied", "llama3_tied_rope"],
)  # fmt: skip
def test_import_then_export_is_the_same_hf_model(config, hf_model):
    """What a run continued from an imported model exports: the same architecture and weights."""
    torch.manual_seed(0)
    model = hf_model(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):  # HF starts biases at zero: random ones show their mapping
                param.normal_(0, 0.5)
    cfg = model_config(config.to_dict())
    megatron = megatron_state_dict(model.state_dict(), cfg, TINY["vocab_size"])
    exported = hf_config(cfg, TINY["vocab_size"], torch.float32, {})
    assert type(exported) is type(config) and model_config(exported.to_dict()) == cfg
    back = hf_model(exported).eval()
    back.load_state_dict(hf_state_dict(megatron, cfg), strict=not cfg.tie_embeddings)
    tokens = torch.randint(0, TINY["vocab_size"], (2, 16))
    with torch.no_grad():
        ref, got = model(tokens).logits, back(tokens).logits
    assert ref.std() > 1e-2
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_unmapped_weights_are_an_error():
    sd = megatron_state()
    sd["decoder.layers.0.self_attention.q_layernorm.weight"] = torch.randn(32)
    with pytest.raises(ValueError, match="unmapped.*q_layernorm"):
        hf_state_dict(sd, CFG)
