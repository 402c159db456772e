"""Input formats and sharding: parquet, txt, globs/dirs, streamed `datasets`, max_docs."""

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.build import _sample, build
from data_prep.corpus import Shard, iter_texts, parse_corpus, plan_shards, resolve_sources
from data_prep.encoders import EncoderSpec, make_encoder
from data_prep.indexfile import DocReader
from data_prep.split import SPLITS, thresholds
from tests.data_prep.common import SPLIT, build_config, dataset_bytes, expected_splits, write_jsonl

BIN_FILES = [f"{s}_text_document{e}" for s in SPLITS for e in (".bin", ".idx")]


def _bins(root):
    return {k: v for k, v in dataset_bytes(root).items() if k in BIN_FILES}


def _texts(corpus):
    return [d for d in corpus[1] if d is not None]


@pytest.fixture(scope="module")
def parquet_dir(corpus, tmp_path_factory):
    """The synthetic corpus as two parquet files (small row groups) with a `content` column."""
    d = tmp_path_factory.mktemp("parquet")
    docs = corpus[1]
    for i, part in enumerate([docs[:300], docs[300:]]):
        pq.write_table(pa.table({"content": part}), d / f"part-{i}.parquet", row_group_size=40)
    return d


def test_jsonl_byte_ranges_cover_every_line_once(corpus):
    path = corpus[0]
    (src,) = resolve_sources(parse_corpus([str(path)]), cache_dir=path.parent)
    rng = random.Random(0)
    for _ in range(5):
        shards = plan_shards(
            [src], shard_bytes=rng.randint(50, 5000), txt_docs="file", max_docs=None
        )
        texts = [t for s in shards for t in iter_texts(s, "text")]
        assert texts == corpus[1]


def test_parquet_gives_the_same_dataset_as_jsonl(built, parquet_dir, tmp_path):
    root, _ = built
    build(build_config(parquet_dir / "*.parquet", tmp_path, text_field="content"))
    assert _bins(tmp_path / "syn") == _bins(root)


def test_streamed_datasets_source_gives_the_same_dataset(built, parquet_dir, tmp_path):
    """`hf:<path>` goes through datasets.load_dataset(streaming=True); a local folder stands in
    for the hub (no network here), exercising the same streaming and sharding code."""
    root, _ = built
    manifest = build(build_config(f"hf:{parquet_dir}", tmp_path, text_field="content", workers=1))
    assert manifest["build"]["num_shards"] == 2  # one per parquet file
    assert _bins(tmp_path / "syn") == _bins(root)


def test_txt_one_document_per_file_and_per_line(tmp_path):
    docs_dir = tmp_path / "books"
    docs_dir.mkdir()
    books = [f"Book {i}\n\n  Chapter one of book {i}.\nIt was a dark night." for i in range(40)]
    for i, text in enumerate(books):
        (docs_dir / f"{i:03d}.txt").write_text(text)
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(f"line document {i} with some words" for i in range(300)) + "\n\n")
    m = build(build_config(docs_dir, tmp_path, name="files", vocab_size=300, split=(1, 0, 0)))
    assert m["splits"]["train"]["num_docs"] == 40 and m["splits"]["valid"]["num_docs"] == 0
    m = build(
        build_config(
            lines, tmp_path, name="lines", vocab_size=300, txt_docs="line", split=(1, 0, 0)
        )
    )
    assert m["splits"]["train"]["num_docs"] == 300


def test_max_docs_keeps_the_first_records(corpus, tmp_path):
    m = build(build_config(corpus[0], tmp_path, max_docs=100))
    assert m["num_records"] == 100
    expected = expected_splits(corpus[1][:100], SPLIT)
    for split in SPLITS:
        assert m["splits"][split]["num_docs"] == len(expected[split])
    assert len(DocReader(tmp_path / "syn" / "train_text_document")) == len(expected["train"])


def test_corpus_specs_parse(tmp_path):
    (tmp_path / "a.jsonl").write_text("")
    specs = parse_corpus(
        [
            "default",
            "embedded:wiki+kjv",
            f"{tmp_path}/*.jsonl,fineweb-edu",
            "hf:org/ds:cfg:validation",
        ]
    )
    assert [s.kind for s in specs] == ["embedded", "embedded", "files", "hf", "hf"]
    assert specs[1].embedded == ("wiki", "kjv")
    assert specs[3].hf.path == "HuggingFaceFW/fineweb-edu" and specs[3].hf.config == "sample-10BT"
    assert specs[3].licence.startswith("ODC-By")
    assert (specs[4].hf.config, specs[4].hf.split) == ("cfg", "validation")
    with pytest.raises(ValueError, match="unknown embedded source"):
        parse_corpus(["embedded:nope"])
    (tmp_path / "b.csv").write_text("x")
    with pytest.raises(ValueError, match="unsupported corpus file"):
        parse_corpus([str(tmp_path / "b.csv")])


def test_shard_limit_is_respected(corpus):
    size = corpus[0].stat().st_size
    shard = Shard(
        index=0, source=0, kind="jsonl", paths=(str(corpus[0]),), start=0, end=size, limit=5
    )
    assert list(iter_texts(shard, "text")) == corpus[1][:5]
    assert list(iter_texts(shard, "text", skip=3)) == corpus[1][3:5]


def test_lone_surrogates_in_json_become_replacement_characters(tmp_path, corpus):
    path = tmp_path / "s.jsonl"
    lines = [f'{{"text": {json.dumps(d)}}}' for d in _texts(corpus)[:150]] + [
        '{"text": "bad \\ud800 surrogate"}'
    ]
    path.write_text("\n".join(lines) + "\n")
    m = build(build_config(path, tmp_path, split=(1, 0, 0), workers=1))
    reader = DocReader(tmp_path / "syn" / "train_text_document")
    enc = make_encoder(
        EncoderSpec(kind="sentencepiece", tokenizer_dir=str(tmp_path / "syn" / "tokenizer"))
    )
    assert enc.decode(reader[len(reader) - 1].tolist()[:-1]) == "bad \ufffd surrogate"
    assert m["splits"]["train"]["num_docs"] == 149  # 150 texts, one of them empty, + the bad one


def test_tokenizer_sample_is_spread_over_all_shards(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [f"alpha document {i} " * 50 for i in range(400)])
    b = write_jsonl(tmp_path / "b.jsonl", [f"beta document {i} " * 50 for i in range(400)])
    cfg = build_config(a, tmp_path, corpus=[str(a), str(b)], tokenizer_train_mb=0.2)
    sources = resolve_sources(parse_corpus(cfg.corpus), cfg.cache_dir)
    shards = plan_shards(sources, shard_bytes=100_000, txt_docs="file", max_docs=None)
    train, heldout, docs = _sample(shards, cfg, thresholds(cfg.split), int(0.2 * 2**20))
    assert docs < 800  # stopped early, once the budget and the held-out sample were met
    assert any(t.startswith("alpha") for t in train) and any(t.startswith("beta") for t in train)
    assert 0.15 * 2**20 < sum(len(t) for t in train) < 0.25 * 2**20
