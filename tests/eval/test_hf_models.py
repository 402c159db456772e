"""Random-initialised HF models of several architectures (no download) through the HF adapter:
h_0 is what enters layer 1 (Gemma's scaled embeddings), the lens at h_L is the model's own output
(final norm, tied or untied unembedding, Gemma-2 soft-capping), and a full record comes out."""

from __future__ import annotations

import math

import pytest
import torch
import transformers as tf

from eval.depth import bucket_table
from eval.hf_model import HFAdapter
from eval.stats import Stats

VOCAB, LAYERS = 96, 3
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
ARCHS = {
    "llama": (tf.LlamaConfig, {}),
    "qwen2": (tf.Qwen2Config, {}),
    "mistral": (tf.MistralConfig, {"sliding_window": None}),
    "gemma": (tf.GemmaConfig, {"head_dim": 8}),  # tied embeddings, sqrt(h)-scaled inputs
    "gemma2": (tf.Gemma2Config, {"head_dim": 8, "final_logit_softcapping": 3.0}),
    "phi3": (tf.Phi3Config, {"pad_token_id": 0}),
    "gpt2": (tf.GPT2Config, {}),
}


def build(arch: str, dtype=torch.float32):
    config_cls, extra = ARCHS[arch]
    if arch == "gpt2":
        config = config_cls(vocab_size=VOCAB, n_embd=32, n_layer=LAYERS, n_head=4, n_positions=64)
    else:
        config = config_cls(**COMMON, **extra)
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config).to(dtype).eval()
    with torch.no_grad():  # larger weights than the init: lens and depth far from trivial
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return model


def batch(b=2, s=12):
    torch.manual_seed(1)
    tokens = torch.randint(1, VOCAB, (b, s + 1))
    return {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": torch.ones(b, s),
            "position_ids": torch.arange(s).expand(b, -1)}  # fmt: skip


@pytest.mark.parametrize("arch", list(ARCHS))
def test_residual_stream_and_lens_match_the_model(arch):
    model = build(arch)
    adapter = HFAdapter(model)
    assert adapter.num_layers == LAYERS
    x = batch()
    hidden = adapter.hidden_states(x)
    assert len(hidden) == LAYERS + 1 and all(h.shape == (2, 12, 32) for h in hidden)
    with torch.no_grad():
        logits = model(input_ids=x["tokens"], position_ids=x["position_ids"]).logits
    lens_final = adapter.head(hidden[-1].reshape(-1, 32)).reshape(logits.shape)
    torch.testing.assert_close(lens_final, logits.float(), rtol=1e-5, atol=1e-5)
    if arch.startswith("gemma"):
        embed = model.get_input_embeddings().weight[x["tokens"]]
        scaled = embed * torch.tensor(32**0.5, dtype=embed.dtype)
        torch.testing.assert_close(hidden[0], scaled)
        assert not torch.allclose(hidden[0], embed)
    if arch == "gemma":
        assert adapter.unembed.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    if arch == "gemma2":
        assert logits.abs().max() <= 3.0  # soft-capped, and the lens reproduced it


@pytest.mark.parametrize("arch", list(ARCHS))
def test_full_record(arch):
    model = build(arch)
    adapter = HFAdapter(model)
    stats = Stats(LAYERS, torch.full((LAYERS,), 1 / LAYERS), massive=True,
                  buckets=bucket_table(torch.arange(VOCAB).flip(0), VOCAB))  # fmt: skip
    for _ in range(2):
        x = batch()
        stats.add(adapter.hidden_states(x), adapter.head, x["labels"], x["loss_mask"])
    out = stats.summary()
    assert out["num_sequences"] == 4 and out["num_tokens"] == 48
    assert len(out["D"]) == LAYERS and all(0 < v <= 1 for v in out["D"])
    assert len(out["rel_l2"]) == LAYERS and all(0 < v < math.inf for v in out["rel_l2"])
    assert len(out["hidden_norm"]) == LAYERS + 1
    assert out["zeta_L"] == pytest.approx(100 * max(0.0, out["D"][-1] - out["D"][-2]))
    assert math.isfinite(out["jump_ratio"]) and 0 <= out["S_model"] <= 1
    assert out["lens"]["loss"][-1] == pytest.approx(out["lm_loss"])
    assert out["lens"]["agree_with_final"][-1] == 1.0
    assert len(out["massive"]["top"]) == LAYERS + 1 and out["massive"]["num_sequences"] == 4
    assert len(out["voids"]["layer_rate"]) == LAYERS
    depth = out["decision_depth"]
    assert sum(depth["num_tokens"].values()) == 48
    assert 0 <= depth["mean_all"] <= LAYERS


def test_bf16_weights_computed_in_the_stats_as_fp32():
    """DTYPE=bfloat16: the head takes fp32 states back to the weights' dtype; numbers are close
    to the fp32 model's."""
    x = batch()
    records = []
    for dtype in (torch.float32, torch.bfloat16):
        adapter = HFAdapter(build("llama", dtype))
        stats = Stats(LAYERS, torch.ones(LAYERS))
        hidden = [h.float() for h in adapter.hidden_states(x)]
        stats.add(hidden, adapter.head, x["labels"], x["loss_mask"])
        records.append(stats.summary())
    assert records[1]["D"] == pytest.approx(records[0]["D"], rel=0.05)
    assert records[1]["lm_loss"] == pytest.approx(records[0]["lm_loss"], rel=0.05)
