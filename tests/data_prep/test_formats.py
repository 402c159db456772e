"""Corpus formats as researchers hold them: .jsonl.gz / .json.gz (dolma) / .jsonl.zst shards,
`save_to_disk` folders and several text fields; each builds the same bytes as the plain .jsonl of
the same documents, for any worker count and after an interruption."""

import gzip
import json

import pytest
import zstandard

from data_prep.build import build
from data_prep.errors import BuildInterrupted, DataError
from tests.data_prep.common import build_config, dataset_bytes, make_docs, write_jsonl

DOCS = make_docs(240, seed=5)


def _lines(docs, **extra) -> bytes:
    return b"".join(
        (json.dumps({"id": i, "text": d, **extra}, ensure_ascii=False) + "\n").encode()
        for i, d in enumerate(docs)
    )


def _build(path, out_root, tokenizer, **kw):
    return build(build_config(path, out_root, tokenizer=tokenizer, **kw))


@pytest.fixture(scope="module")
def reference(built, tmp_path_factory):
    """The plain .jsonl build of DOCS (the bytes every format must reproduce)."""
    root = tmp_path_factory.mktemp("plain")
    tok = built[0] / "tokenizer"
    _build(write_jsonl(root / "docs.jsonl", DOCS), root, tok, workers=1)
    return dataset_bytes(root / "syn"), tok


def test_compressed_shards_build_the_same_bytes_and_resume(reference, tmp_path):
    expected, tok = reference
    src = tmp_path / "src"
    src.mkdir()
    half = len(DOCS) // 2  # two shards, as a corpus comes: 00000.jsonl.gz, 00001.jsonl.zst
    (src / "00000.jsonl.gz").write_bytes(gzip.compress(_lines(DOCS[:half])))
    (src / "00001.jsonl.zst").write_bytes(zstandard.compress(_lines(DOCS[half:])))
    with pytest.raises(BuildInterrupted):
        _build(src, tmp_path, tok, workers=1, stop_after_shards=1)
    manifest = _build(src, tmp_path, tok, workers=2)
    assert manifest["build"]["resumed"] and manifest["build"]["num_shards"] == 2
    assert dataset_bytes(tmp_path / "syn") == expected
    dolma = tmp_path / "dolma_src"
    dolma.mkdir()
    (dolma / "part-0.json.gz").write_bytes(gzip.compress(_lines(DOCS)))
    _build(dolma, tmp_path, tok, name="dolma", workers=1)
    assert dataset_bytes(tmp_path / "dolma") == expected


def test_save_to_disk_folder_builds_the_same_bytes(reference, tmp_path):
    import datasets

    expected, tok = reference
    ds = datasets.Dataset.from_dict({"id": list(range(len(DOCS))), "text": DOCS})
    ds.save_to_disk(str(tmp_path / "arrow"), num_shards=3)
    for workers, shard_mb in [(1, None), (2, 0.01)]:
        name = f"w{workers}"
        _build(tmp_path / "arrow", tmp_path, tok, name=name, workers=workers, shard_mb=shard_mb)
        assert dataset_bytes(tmp_path / name) == expected
    with pytest.raises(DataError, match=r"has no column 'body' \(columns: id, text\)"):
        _build(tmp_path / "arrow", tmp_path, tok, name="bad", text_field="body")


def test_several_text_fields_are_joined_by_a_blank_line(reference, built, tmp_path):
    _, tok = reference
    titles = [f"Title {i}" if i % 4 else None for i in range(len(DOCS))]
    with (tmp_path / "two.jsonl").open("w") as f:
        for title, text in zip(titles, DOCS, strict=True):
            f.write(json.dumps({"title": title, "text": text}) + "\n")
    joined = [
        "\n\n".join(x for x in (t, d) if x is not None and x.strip()) or None
        for t, d in zip(titles, DOCS, strict=True)
    ]
    write_jsonl(tmp_path / "joined.jsonl", joined)
    _build(tmp_path / "two.jsonl", tmp_path, tok, name="two", text_field="title,text")
    _build(tmp_path / "joined.jsonl", tmp_path, tok, name="joined")
    assert dataset_bytes(tmp_path / "two") == dataset_bytes(tmp_path / "joined")
    with pytest.raises(DataError, match=r"no field 'title ' in records|empty name"):
        _build(tmp_path / "two.jsonl", tmp_path, tok, name="bad", text_field="title,,text")
