"""Existing tokenizers (SentencePiece, HF dir, tiktoken, incl. real ones shipped in wheels) give
the same ids in the .bin and through the exported AutoTokenizer directory."""

import json
import shutil

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer

from data_prep.build import build
from data_prep.embedded import wheel_member
from data_prep.encoders import EncoderSpec, tiktoken_encoding
from data_prep.errors import DataError
from data_prep.indexfile import DocReader
from data_prep.tokenizer import verify_export
from data_prep.util import DEFAULT_CACHE_DIR
from tests.data_prep.common import SPLIT, build_config, dataset_bytes, expected_splits

BIN_FILES = [f"{s}_text_document{e}" for s in ("train", "valid", "test") for e in (".bin", ".idx")]


def _bins(root):
    return {k: v for k, v in dataset_bytes(root).items() if k in BIN_FILES}


@pytest.mark.parametrize("which", ["sentencepiece-model", "huggingface-dir"])
def test_reusing_the_trained_tokenizer_gives_identical_data(built, corpus, tmp_path, which):
    root, m = built
    path = (
        root / "tokenizer" / "tokenizer.model"
        if which == "sentencepiece-model"
        else root / "tokenizer"
    )
    manifest = build(build_config(corpus[0], tmp_path, tokenizer=path, workers=1))
    tok = manifest["tokenizer"]
    assert tok["kind"] == which.split("-")[0]
    assert tok["source"]["existing"]["kind"] == tok["kind"]
    assert (tok["vocab_size"], tok["eod_id"], tok["bos_id"]) == (512, 2, 1)
    assert _bins(tmp_path / "syn") == _bins(root)


def test_verification_catches_an_export_that_disagrees(built, tmp_path):
    root, m = built
    bad = tmp_path / "tok"
    shutil.copytree(root / "tokenizer", bad)
    spec = json.loads((bad / "tokenizer.json").read_text())
    spec["normalizer"]["normalizers"] = spec["normalizer"]["normalizers"][
        1:
    ]  # drop the dummy prefix
    (bad / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match="different ids"):
        verify_export(
            EncoderSpec(kind="sentencepiece", tokenizer_dir=str(bad)),
            m["tokenizer"],
            ["hello world"],
            require_roundtrip=True,
        )


def _check_heldout_against(root, corpus, encode):
    expected = expected_splits(corpus[1], SPLIT)
    hf = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
    for split in ("valid", "test"):
        reader = DocReader(root / f"{split}_text_document")
        for i, text in enumerate(expected[split][:15]):
            ids = reader[i].tolist()[:-1]
            assert ids == encode(text) == hf(text, add_special_tokens=False)["input_ids"]


def test_real_llama2_style_sentencepiece_from_mistral_common(corpus, tmp_path):
    model = wheel_member(
        "mistral-common==1.13.1", "mistral_common/data/tokenizer.model.v1", DEFAULT_CACHE_DIR
    )
    manifest = build(build_config(corpus[0], tmp_path, tokenizer=model, max_docs=200))
    tok = manifest["tokenizer"]
    assert (tok["kind"], tok["vocab_size"], tok["bos_id"], tok["eos_id"], tok["eod_id"]) == (
        "sentencepiece",
        32000,
        1,
        2,
        2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(model))
    _check_heldout_against(tmp_path / "syn", (None, corpus[1][:200]), sp.encode)


def test_real_llama3_tiktoken_from_llama_models(corpus, tmp_path):
    model = wheel_member(
        "llama-models==0.3.0", "llama_models/llama3/tokenizer.model", DEFAULT_CACHE_DIR
    )
    manifest = build(build_config(corpus[0], tmp_path, tokenizer=model, max_docs=200))
    tok = manifest["tokenizer"]
    assert (tok["kind"], tok["vocab_size"], tok["bos_id"], tok["eod_id"]) == (
        "tiktoken",
        128256,
        128000,
        128001,
    )
    assert manifest["dtype"] == "int32"  # ids above 65535 do not fit uint16
    enc = tiktoken_encoding(model)
    _check_heldout_against(tmp_path / "syn", (None, corpus[1][:200]), enc.encode_ordinary)
