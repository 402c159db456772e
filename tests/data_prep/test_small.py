"""Small corpora: every split with a share gets a document, or `make data` says how many it needs."""

import pytest

from data_prep.build import build
from data_prep.errors import DataError
from data_prep.indexfile import DocReader
from tests.data_prep.common import SPLIT, build_config, expected_splits, make_docs, write_jsonl


def _no_valid_docs(n_train: int) -> list[str]:
    """n_train documents that hash into train and one into test: the valid split gets none."""
    by_split = expected_splits(make_docs(200, seed=3), SPLIT)
    return by_split["train"][:n_train] + by_split["test"][:1]


def test_an_empty_split_gets_the_last_training_document(built, tmp_path):
    docs = _no_valid_docs(5)
    path = write_jsonl(tmp_path / "small.jsonl", docs)
    manifest = build(build_config(path, tmp_path, tokenizer=built[0] / "tokenizer", workers=1))
    counts = {s: e["num_docs"] for s, e in manifest["splits"].items()}
    assert counts == {"train": 4, "valid": 1, "test": 1}
    assert manifest["split_rule"]["moved_from_train"] == ["valid"]
    root = tmp_path / "syn"
    train, valid = DocReader(root / "train_text_document"), DocReader(root / "valid_text_document")
    # the moved document is the fifth training document, the last one in corpus order
    full = build(
        build_config(path, tmp_path, name="full", tokenizer=built[0] / "tokenizer", workers=1,
                     split=(1.0, 0.0, 0.0))
    )  # fmt: skip
    assert full["splits"]["train"]["num_docs"] == 6
    reference = DocReader(tmp_path / "full" / "train_text_document")
    assert valid[0].tolist() == reference[4].tolist()
    assert [train[i].tolist() for i in range(4)] == [reference[i].tolist() for i in range(4)]


def test_too_few_documents_is_one_line(built, tmp_path):
    path = write_jsonl(tmp_path / "two.jsonl", _no_valid_docs(2)[:2])
    with pytest.raises(
        DataError, match=r"has 2 document\(s\); the split 0.8,0.1,0.1 needs at least 3"
    ):
        build(build_config(path, tmp_path, tokenizer=built[0] / "tokenizer", workers=1))
    assert not (tmp_path / "syn").exists()
