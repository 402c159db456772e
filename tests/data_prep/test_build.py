"""End-to-end build of the synthetic corpus: manifest, counts, round trip, determinism, no-op."""

import threading
import time

import numpy as np
from transformers import AutoTokenizer

from data_prep.bench import bench
from data_prep.build import build
from data_prep.encoders import EncoderSpec, make_encoder
from data_prep.indexfile import DocReader, read_index_summary
from data_prep.split import SPLITS
from tests.data_prep.common import SPLIT, build_config, dataset_bytes, expected_splits, run_cli


def test_manifest_has_the_training_interface(built):
    root, m = built
    assert m["name"] == "syn" and m["created_by"]
    for split in SPLITS:
        entry = m["splits"][split]
        assert entry["prefix"] == f"{split}_text_document"
        assert entry["num_docs"] > 0 and entry["num_tokens"] > entry["num_docs"]
    tok = m["tokenizer"]
    assert tok["kind"] == "sentencepiece" and tok["path"] == "tokenizer"
    assert (root / tok["path"] / "tokenizer.json").is_file() and (
        root / tok["path"] / "tokenizer.model"
    ).is_file()
    assert tok["vocab_size"] == 512 and tok["eod_id"] == tok["eos_id"] == 2 and tok["bos_id"] == 1
    assert tok["pad_id"] is None and len(tok["sha256"]) == 64
    (src,) = m["sources"]
    assert {"name", "licence", "bytes", "num_docs"} <= set(src)
    assert src["num_docs"] == sum(m["splits"][s]["num_docs"] for s in SPLITS)
    assert m["num_skipped_empty"] == 3 and m["num_records"] == 600


def test_counts_in_manifest_equal_the_idx(built):
    root, m = built
    for split in SPLITS:
        summary = read_index_summary(root / f"{split}_text_document.idx")
        assert (summary.num_docs, summary.num_tokens) == (
            m["splits"][split]["num_docs"],
            m["splits"][split]["num_tokens"],
        )
        assert (
            root / f"{split}_text_document.bin"
        ).stat().st_size == summary.num_tokens * 2  # uint16


def test_every_document_round_trips_and_ends_with_eod(built, corpus):
    root, m = built
    expected = expected_splits(corpus[1], SPLIT)
    enc = make_encoder(EncoderSpec(kind="sentencepiece", tokenizer_dir=str(root / "tokenizer")))
    hf = AutoTokenizer.from_pretrained(str(root / "tokenizer"))
    for split in SPLITS:
        reader = DocReader(root / f"{split}_text_document")
        assert len(reader) == len(expected[split])
        for i, text in enumerate(expected[split]):
            ids = reader[i].tolist()
            assert ids[-1] == m["tokenizer"]["eod_id"] and m["tokenizer"]["eod_id"] not in ids[:-1]
            assert enc.decode(ids[:-1]) == text
            if split != "train" or i % 10 == 0:  # AutoTokenizer is slow per call; sample train
                assert hf(text, add_special_tokens=False)["input_ids"] == ids[:-1]
                assert hf(text)["input_ids"] == ids[:-1]  # no BOS added by default either
                assert hf.decode(ids[:-1]) == text


def test_split_is_by_content_and_roughly_proportional(built, corpus):
    root, m = built
    total = sum(m["splits"][s]["num_docs"] for s in SPLITS)
    assert 0.7 < m["splits"]["train"]["num_docs"] / total < 0.9
    # The duplicated document (docs 10 and 20) lands twice in the same split.
    expected = expected_splits(corpus[1], SPLIT)
    assert sum(d == corpus[1][10] for s in SPLITS for d in expected[s]) == 2


def test_output_does_not_depend_on_workers_or_shard_size(built, corpus, tmp_path):
    root, _ = built
    build(build_config(corpus[0], tmp_path, workers=1, shard_mb=64))
    assert dataset_bytes(tmp_path / "syn") == dataset_bytes(root)


def test_rerun_is_a_fast_noop(built, corpus, capsys):
    root, _ = built
    before = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    t = time.perf_counter()
    code, err = run_cli(
        capsys,
        "build",
        "--corpus",
        corpus[0],
        "--name",
        "syn",
        "--out-root",
        root.parent,
        "--vocab-size",
        512,
        "--split",
        "0.8,0.1,0.1",
    )
    assert code == 0 and "up to date" in err
    assert time.perf_counter() - t < 2
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == before


def test_validate_cli_reports_ok(built, capsys):
    root, _ = built
    code, _ = run_cli(capsys, "validate", root)
    assert code == 0


def test_token_ids_fit_the_vocab(built):
    root, m = built
    for split in SPLITS:
        tokens = np.fromfile(root / f"{split}_text_document.bin", dtype=np.uint16)
        assert tokens.max() < m["tokenizer"]["vocab_size"]


def test_concurrent_builds_of_the_same_output_build_once(corpus, tmp_path):
    """Several training jobs may run `make data` at once: one builds, the others wait for it."""
    results = []
    cfg = build_config(corpus[0], tmp_path, workers=1)
    threads = [threading.Thread(target=lambda: results.append(build(cfg))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(r == results[0] for r in results)
    assert sum(not r["build"]["resumed"] for r in results) == 3  # all report the one build


def test_bench_measures_pipeline_against_bare_tokenizer(built):
    root, m = built
    result = bench(root, repeats=1, workers=2, cache_dir=root.parent)
    assert result["num_tokens"] == sum(m["splits"][s]["num_tokens"] for s in SPLITS)
    for label in ("bare", "pipeline", "bare_1thread", "pipeline_1worker"):
        assert result[label]["tokens_per_s"] > 0
    assert result["overhead_vs_bare"] > -1
