"""make import: random tiny HF Llama / Qwen2 models become Megatron checkpoints with HF's logits,
and what the Llama builder cannot reproduce exactly is refused with one line."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from eval.convert import hf_config
from eval.import_hf import model_config
from eval.rundir import EvalError
from tests.helpers import run_checked

TINY = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5)  # fmt: skip
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}  # fmt: skip
CASES = {
    "llama_untied_gqa": (LlamaConfig, LlamaForCausalLM, dict(num_key_value_heads=2)),
    "llama_tied": (LlamaConfig, LlamaForCausalLM, dict(tie_word_embeddings=True)),
    "llama3_rope": (LlamaConfig, LlamaForCausalLM,
                    dict(num_key_value_heads=1, tie_word_embeddings=True, rope_parameters=LLAMA3)),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(num_key_value_heads=2, tie_word_embeddings=True)),
}  # fmt: skip


def _randomise_biases(model) -> None:
    """HF initialises biases to zero: random ones make a wrong bias mapping visible."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)


@pytest.mark.slow
def test_imported_logits_equal_hf(tmp_path):
    torch.manual_seed(0)
    tokens = torch.randint(0, TINY["vocab_size"], (2, 24))
    torch.save(tokens, tmp_path / "tokens.pt")
    expected = {}
    for name, (config_cls, model_cls, extra) in CASES.items():
        model = model_cls(config_cls(**TINY, **extra)).eval()
        _randomise_biases(model)
        model.save_pretrained(tmp_path / name / "hf")
        with torch.no_grad():
            expected[name] = model(tokens).logits
    cmd = [sys.executable, "-m", "tests.eval.import_logits", str(tmp_path), *CASES]
    code, out = run_checked(cmd, timeout=300)
    assert code == 0 and "error:" not in out, out[-4000:]
    for name, ref in expected.items():
        logits = torch.load(tmp_path / name / "logits.pt")
        vocab = ref.shape[-1]
        padded = 384  # 300 rounded up to a multiple of 128 (eval.import_hf.VOCAB_MULTIPLE)
        assert logits.shape[-1] == padded
        torch.testing.assert_close(logits[..., :vocab], ref, rtol=1e-4, atol=1e-4, msg=name)
        assert torch.all(logits[..., vocab:] == 0), name  # zero padding rows
        assert ref.std() > 1e-2
        record = json.loads((tmp_path / name / "megatron" / "import.json").read_text())
        assert record["hf_vocab_size"] == vocab and record["vocab_size"] == padded
    # the features really differ (else equality would prove nothing about their mapping)
    assert not torch.allclose(expected["llama_tied"], expected["llama3_rope"], atol=1e-2)


def _config(**changes) -> dict:
    config = {**TINY, "architectures": ["LlamaForCausalLM"], "num_key_value_heads": 2}
    return {**config, **changes}


def test_model_config_of_each_family():
    cfg = model_config(_config(tie_word_embeddings=True, rope_parameters=LLAMA3))
    assert (cfg.num_query_groups, cfg.tie_embeddings, cfg.qkv_bias) == (2, True, False)
    assert (cfg.rotary_base, cfg.rope_scaling_factor) == (500000, 8.0)
    # the exporter writes the config the importer reads back (tied, llama3 RoPE)
    exported = hf_config(cfg, 1024, torch.float32, {}).to_dict()
    assert model_config(exported) == cfg.replace(seq_length=exported["max_position_embeddings"])
    qwen = model_config(_config(architectures=["Qwen2ForCausalLM"], rope_theta=1e6))
    assert qwen.qkv_bias and qwen.rotary_base == 1_000_000 and qwen.rope_scaling_factor is None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        (dict(architectures=["GPTNeoXForCausalLM"]), "architecture GPTNeoXForCausalLM"),
        (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0}), "RoPE scaling type 'yarn'"),
        (dict(rope_parameters={**LLAMA3, "high_freq_factor": 2.0}), "high_freq_factor=2.0"),
        (dict(architectures=["Qwen2ForCausalLM"], use_sliding_window=True), "sliding-window"),
        (dict(attention_bias=True), "biases"),
        (dict(hidden_act="gelu"), "activation gelu"),
    ],
)
def test_refusals_are_one_line(changes, words):
    with pytest.raises(EvalError) as err:
        model_config(_config(**changes))
    assert words in str(err.value) and "\n" not in str(err.value)
