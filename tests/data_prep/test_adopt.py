"""`adopt`: .bin/.idx written by Megatron's own IndexedDatasetBuilder (as preprocess_data.py writes
them) become a dataset with a manifest, without re-tokenizing; bad inputs are one line."""

import numpy as np
import pytest

from data_prep.adopt import AdoptConfig, adopt
from data_prep.errors import DataError
from data_prep.indexfile import DocReader
from data_prep.merge import import_builder
from data_prep.validate import validate_dataset
from tests.data_prep.common import dataset_bytes, run_cli


def write_megatron(prefix, docs, dtype=np.int32) -> None:
    """Documents as Megatron-LM's preprocess_data.py stores them (IndexedDatasetBuilder)."""
    builder = import_builder()(f"{prefix}.bin", dtype=dtype)
    for doc in docs:
        builder.add_document(np.asarray(doc, dtype=dtype), [len(doc)])
    builder.finalize(f"{prefix}.idx")


def _docs(built) -> list[list[int]]:
    reader = DocReader(built[0] / "train_text_document")
    return [reader[i].tolist() for i in range(60)]


def test_adopted_documents_are_the_originals_split_by_content(built, tmp_path, capsys):
    docs = _docs(built)
    write_megatron(tmp_path / "a_text_document", docs[:40])
    write_megatron(tmp_path / "b_text_document", docs[40:])
    prefixes = f"{tmp_path}/a_text_document,{tmp_path}/b_text_document.bin"
    code, err = run_cli(capsys, "adopt", "--prefix", prefixes, "--tokenizer",
                        built[0] / "tokenizer", "--out-root", tmp_path, "--split", "8,1,1")  # fmt: skip
    assert code == 0, err
    manifest = validate_dataset(tmp_path / "a", deep=True)
    assert manifest["dtype"] == "uint16" and manifest["eod_appended"]
    assert manifest["tokenizer"]["vocab_size"] == built[1]["tokenizer"]["vocab_size"]
    from launcher.data import Dataset, check_tokenizers

    check_tokenizers([Dataset(weight=0.5, path=p, manifest=m) for p, m in
                      [(tmp_path / "a", manifest), built]])  # fmt: skip  # blends with it
    adopted = []
    for split in ("train", "valid", "test"):
        reader = DocReader(tmp_path / "a" / f"{split}_text_document")
        assert len(reader) == manifest["splits"][split]["num_docs"] >= 1
        adopted += [reader[i].tolist() for i in range(len(reader))]
    assert sorted(adopted) == sorted(docs)
    before = dataset_bytes(tmp_path / "a")
    code, err = run_cli(capsys, "adopt", "--prefix", prefixes, "--tokenizer",
                        built[0] / "tokenizer", "--out-root", tmp_path, "--split", "8,1,1")  # fmt: skip
    assert code == 0 and "up to date" in err and dataset_bytes(tmp_path / "a") == before


@pytest.mark.parametrize("damage", ["vocab", "truncated", "missing"])
def test_bad_inputs_are_one_line(built, tmp_path, damage):
    docs = _docs(built)[:10]
    if damage == "vocab":  # ids from a bigger vocabulary than the tokenizer's 512
        docs[3] = [*docs[3][:-1], 700, docs[3][-1]]
    write_megatron(tmp_path / "x", docs)
    if damage == "truncated":
        data = (tmp_path / "x.bin").read_bytes()
        (tmp_path / "x.bin").write_bytes(data[:-8])
    if damage == "missing":
        (tmp_path / "x.idx").unlink()
    needle = {
        "vocab": r"x.bin holds token id 700, outside the tokenizer's vocabulary of 512",
        "truncated": r"x.bin has \d+ bytes, its index says",
        "missing": r"x.idx is missing",
    }
    cfg = AdoptConfig(prefixes=[tmp_path / "x"], tokenizer=built[0] / "tokenizer", name="x2",
                      out_root=tmp_path)  # fmt: skip
    with pytest.raises(DataError, match=needle[damage]):
        adopt(cfg)
    assert not (tmp_path / "x2").exists()
