"""make export: a TP=2 x PP=2 checkpoint becomes an HF LlamaForCausalLM with the same logits."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from eval.rundir import load_run
from tests.eval.conftest import eval_ok

pytestmark = pytest.mark.slow


def test_hf_logits_equal_megatron_logits(tp_pp_run, exported, tp_pp_logits, tmp_path):
    ref = torch.load(tp_pp_logits)
    model = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(ref["tokens"]).logits
    assert logits.shape == ref["logits"].shape
    torch.testing.assert_close(logits, ref["logits"], rtol=1e-4, atol=1e-4)
    assert ref["logits"].std() > 1e-2  # real predictions, not a constant

    # DTYPE=bfloat16 (the cast path that bf16 runs take the other way): close, not equal
    eval_ok("export", f"RUN={tp_pp_run}", "ITER=2", "DTYPE=bfloat16", f"OUT={tmp_path}")
    folder = tmp_path / "hf" / "iter_0000002"
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    bf16 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        logits_bf16 = bf16(ref["tokens"]).logits
    torch.testing.assert_close(logits_bf16, ref["logits"], rtol=0.05, atol=0.05)
    assert not torch.allclose(logits_bf16, ref["logits"], rtol=1e-4, atol=1e-4)


def test_export_folder_is_complete(tp_pp_run, exported):
    config = json.loads((exported / "config.json").read_text())
    launch = json.loads((tp_pp_run / "launch.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["num_key_value_heads"]) == (4, 2)
    assert config["vocab_size"] == launch["vocab"]  # padded vocabulary kept (see eval.convert)
    record = json.loads((exported / "export.json").read_text())
    assert record["iteration"] == 2 and record["checkpoint"].endswith("iter_0000002")
    # the manifest's BOS decision and what conditions a text's first token (eval.export_tokenizer)
    assert record["bos_prepended"] is False and record["prefix_token_id"] == config["eos_token_id"]
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]  # 4.x readers
    assert config["torch_dtype"] == config["dtype"]
    assert not exported.with_name("iter_0000002.partial").exists()
    data_tok = load_run(str(tp_pp_run)).tokenizer_dir
    ours, theirs = AutoTokenizer.from_pretrained(exported), AutoTokenizer.from_pretrained(data_tok)
    text = "def main():\n    return 42  # the answer"
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]
