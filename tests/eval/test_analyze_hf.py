"""make analyze MODEL=: bad input fails with one line; random-init models and text files give a
full record; our HF export analysed with MODEL= equals make analyze RUN= on the same sequences."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.eval.conftest import eval_cli, eval_ok, read_jsonl
from tests.eval.test_hf_models import build

# fp32 both ways (measured: 1.6e-7 at most); Megatron and HF attention sum in different orders
RTOL = 1e-5


def last_line(out: str) -> str:
    return out.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["MODEL={tmp}/nope"], "error: MODEL={tmp}/nope: no such folder"),
     (["MODEL={tmp}"], "has no config.json"),
     (["MODEL=a b"], "is neither a local folder nor a hub id"),
     (["MODEL=x/y", "RUN=other"], "error: give RUN= (our checkpoints) or MODEL="),
     (["MODEL=x/y", "ITER=5"], "error: ITER apply to RUN=, not MODEL="),
     (["SEQ=128"], "error: SEQ apply to MODEL=, not RUN="),
     (["MODEL=x/y", "TEXT={tmp}/missing.txt"], "not a dataset folder or an existing .txt/.jsonl"),
     (["MODEL=x/y", "TEXT={tmp}"], "folder without manifest.json"),
     (["MODEL=x/y", "DTYPE=fp8"], "error: DTYPE must be one of float32"),
     (["MODEL=x/y", "DEVICE=gpu"], "error: DEVICE must be cpu or cuda, got 'gpu'"),
     (["MODEL=x/y", "SEQ=0"], "error: SEQ must be a positive integer")],
)  # fmt: skip
def test_bad_model_and_text_one_line(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, out = eval_cli("analyze", *args, timeout=120)
    assert code == 2 and message.replace("{tmp}", str(tmp_path)) in last_line(out), out
    assert "Traceback" not in out


def test_hub_id_without_cache_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    code, out = eval_cli("analyze", "MODEL=meta-llama/Llama-3.2-1B", f"OUT={tmp_path}", timeout=180)
    line = last_line(out)
    assert code == 2 and line.startswith("error: cannot load MODEL=meta-llama/Llama-3.2-1B"), out
    assert "HF_HUB_OFFLINE=1" in line and "local folder" in line


@pytest.mark.slow
def test_random_models_on_a_dataset_folder_and_a_text_file(smoke_data, tmp_path):
    """A model without tokenizer reads our dataset's ids; with the dataset's tokenizer it reads
    a .jsonl file; a Gemma (tied, scaled embeddings) gives the same record keys."""
    llama, gemma = tmp_path / "llama", tmp_path / "gemma"
    for arch, folder in (("llama", llama), ("gemma", gemma)):
        model = build(arch)
        model.resize_token_embeddings(1024)
        model.save_pretrained(folder)
    shutil.copytree(smoke_data / "tokenizer", gemma, dirs_exist_ok=True)
    text = tmp_path / "docs.jsonl"
    text.write_text("".join(json.dumps({"text": f"def f{i}(x):\n    return x * {i}\n" * 20}) + "\n"
                            for i in range(20)))  # fmt: skip
    out = eval_ok("analyze", f"MODEL={llama}", f"TEXT={smoke_data}", "SAMPLES=4", "SEQ=32",
                  f"OUT={tmp_path / 'a'}", timeout=600)  # fmt: skip
    assert "note: the model folder has no tokenizer" in out
    eval_ok("analyze", f"MODEL={gemma}", f"TEXT={text}", "SAMPLES=3", "SEQ=32", "BATCH=2",
            f"OUT={tmp_path / 'b'}", timeout=600)  # fmt: skip
    (a,), (b,) = (
        read_jsonl(tmp_path / "a" / "analysis.jsonl"),
        read_jsonl(tmp_path / "b" / "analysis.jsonl"),
    )
    assert set(a) - {"notes"} == set(b) - {"notes"}
    for line, n in ((a, 4), (b, 3)):
        assert (
            line["source"] == "hf" and line["num_sequences"] == n and line["num_tokens"] == n * 32
        )
        assert len(line["D"]) == 3 and len(line["lens"]["acc"]) == 4
        assert len(line["massive"]["top"]) == 4 and "decision_depth" in line
    assert a["freq_source"].endswith("train_text_document.bin")
    assert b["architecture"] == "GemmaForCausalLM" and b["freq_source"].endswith("(tokens read)")
    # a second call with the same settings skips; other settings are refused without FORCE=1
    out = eval_ok("analyze", f"MODEL={llama}", f"TEXT={smoke_data}", "SAMPLES=4", "SEQ=32",
                  f"OUT={tmp_path / 'a'}", timeout=600)  # fmt: skip
    assert "skipping" in out
    code, out = eval_cli("analyze", f"MODEL={llama}", f"TEXT={smoke_data}", "SAMPLES=2",
                         "SEQ=32", f"OUT={tmp_path / 'a'}", timeout=600)  # fmt: skip
    assert code == 2 and "FORCE=1" in last_line(out)


@pytest.mark.slow
def test_export_analysed_as_hf_model_equals_the_checkpoint_analysis(eval_run, tmp_path):
    """Done criterion of issue 15: make analyze MODEL=<export> == make analyze RUN= (fp32)."""
    eval_ok("export", f"RUN={eval_run}", "ITER=5", f"OUT={tmp_path}")
    eval_ok("analyze", f"RUN={eval_run}", "ITER=5", "SAMPLES=8", "VALID=off",
            f"OUT={tmp_path / 'megatron'}")  # fmt: skip
    eval_ok("analyze", f"MODEL={tmp_path / 'hf' / 'iter_0000005'}", "SAMPLES=8",
            f"OUT={tmp_path / 'hf_out'}")  # fmt: skip
    (ours,) = read_jsonl(tmp_path / "megatron" / "analysis.jsonl")
    (hf,) = read_jsonl(tmp_path / "hf_out" / "analysis.jsonl")
    assert hf["iteration"] == 5 and hf["tokens_seen"] == ours["tokens_seen"]
    assert hf["num_tokens"] == ours["num_tokens"] == 8 * 128
    for key in ("lm_loss", "zeta_L", "jump_ratio", "S_model", "jreg_loss"):
        assert hf[key] == pytest.approx(ours[key], rel=RTOL, abs=1e-6), key
    for key in ("D", "rel_l2", "hidden_norm"):
        assert hf[key] == pytest.approx(ours[key], rel=RTOL), key
    for key in ("loss", "ppl", "kl_to_final"):
        assert hf["lens"][key] == pytest.approx(ours["lens"][key], rel=RTOL, abs=1e-6), key
    one_token = 1.0 / ours["num_tokens"]  # a top-1 near-tie may flip between the two kernels
    for key in ("acc", "agree_with_final"):
        assert hf["lens"][key] == pytest.approx(ours["lens"][key], abs=2 * one_token), key
    for key in ("top", "median", "max_pooled"):
        flat = [np.ravel(ours["massive"][key]).tolist(), np.ravel(hf["massive"][key]).tolist()]
        assert flat[1] == pytest.approx(flat[0], rel=RTOL), key
    assert hf["voids"]["layer_rate"] == pytest.approx(
        ours["voids"]["layer_rate"], abs=2 * one_token
    )
    hd, od = hf["decision_depth"], ours["decision_depth"]
    assert hd["num_tokens"] == pytest.approx(od["num_tokens"], abs=2)
    assert hd["mean_all"] == pytest.approx(od["mean_all"], abs=0.01)
    assert ours["lens"]["acc"][-1] > ours["lens"]["acc"][0]  # a trained model: a real check
