"""Bad input: one clear line on stderr, exit code 2, and nothing existing overwritten."""

import json
import shutil

import pytest

from data_prep.errors import DataError
from data_prep.validate import validate_dataset
from tests.data_prep.common import dataset_bytes, run_cli, write_jsonl


def _build_args(corpus, out_root, *extra, name="x", vocab=512):
    return [
        "build",
        "--corpus",
        corpus,
        "--out-root",
        out_root,
        "--name",
        name,
        "--vocab-size",
        vocab,
        "--split",
        "0.8,0.1,0.1",
        "--workers",
        1,
        "--no-progress",
        *extra,
    ]


def _assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_file(capsys, tmp_path):
    code, err = run_cli(capsys, *_build_args(tmp_path / "nope.jsonl", tmp_path))
    _assert_one_line_error(code, err, "corpus file not found", "nope.jsonl")
    assert not (tmp_path / "x").exists()


def test_glob_matching_nothing(capsys, tmp_path):
    code, err = run_cli(capsys, *_build_args(tmp_path / "*.jsonl", tmp_path))
    _assert_one_line_error(code, err, "no files match")


@pytest.mark.parametrize("docs", [[], ["", "  ", None]], ids=["no-records", "only-empty-texts"])
def test_empty_corpus(capsys, tmp_path, docs):
    path = write_jsonl(tmp_path / "empty.jsonl", docs)
    code, err = run_cli(capsys, *_build_args(path, tmp_path))
    _assert_one_line_error(code, err, "corpus is empty")
    assert not (tmp_path / "x").exists()  # no half-made output left behind


def test_text_field_that_does_not_exist(capsys, tmp_path, corpus):
    code, err = run_cli(capsys, *_build_args(corpus[0], tmp_path, "--text-field", "body"))
    _assert_one_line_error(code, err, "no field 'body'", "TEXT_FIELD", "fields: id, text")


@pytest.mark.parametrize("kind", ["text-file", "empty-dir", "missing"])
def test_tokenizer_path_that_is_not_a_tokenizer(capsys, tmp_path, corpus, kind):
    bad = tmp_path / "tok"
    if kind == "text-file":
        bad.write_text("this is not a tokenizer\n")
    elif kind == "empty-dir":
        bad.mkdir()
    code, err = run_cli(capsys, *_build_args(corpus[0], tmp_path, "--tokenizer", bad))
    _assert_one_line_error(code, err, "TOKENIZER", "SentencePiece .model")


@pytest.mark.parametrize(
    ("vocab", "needle"), [(100, "at least 300"), (300, "needs at least"), (50000, "too large")]
)
def test_vocab_size_too_small_or_too_large(capsys, tmp_path, corpus, vocab, needle):
    code, err = run_cli(capsys, *_build_args(corpus[0], tmp_path, vocab=vocab))
    _assert_one_line_error(code, err, f"VOCAB={vocab}", needle)


@pytest.fixture
def existing(built, tmp_path):
    """A private copy of the reference build that tests may damage."""
    root, _ = built
    dst = tmp_path / "syn"
    shutil.copytree(root, dst)
    return dst


def test_existing_output_built_with_another_tokenizer(capsys, existing, corpus):
    before = dataset_bytes(existing)
    args = _build_args(corpus[0], existing.parent, name="syn", vocab=600)
    code, err = run_cli(capsys, *args)
    _assert_one_line_error(code, err, "was built with", "vocab 512", "vocab 600", "FORCE=1")
    assert dataset_bytes(existing) == before
    code, err = run_cli(capsys, *args, "--force")
    assert code == 0, err
    assert json.loads((existing / "manifest.json").read_text())["tokenizer"]["vocab_size"] == 600


def test_existing_output_built_from_other_settings(capsys, existing, corpus):
    before = dataset_bytes(existing)
    code, err = run_cli(
        capsys,
        "build",
        "--corpus",
        corpus[0],
        "--out-root",
        existing.parent,
        "--name",
        "syn",
        "--vocab-size",
        512,
        "--no-progress",
    )  # default split 98/1/1
    _assert_one_line_error(code, err, "different settings", "split", "FORCE=1")
    assert dataset_bytes(existing) == before


def test_refuses_a_directory_it_did_not_create(capsys, tmp_path, corpus):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "precious.txt").write_text("keep me")
    code, err = run_cli(capsys, *_build_args(corpus[0], tmp_path, "--force"))
    _assert_one_line_error(code, err, "not a data_prep output")
    assert (tmp_path / "x" / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        ("truncate-bin", "train_text_document.bin is truncated"),
        ("truncate-idx", "train_text_document.idx is truncated"),
        ("delete-bin", "valid_text_document.bin is missing"),
        ("delete-manifest", "no manifest.json"),
        ("edit-counts", "but the manifest says"),
        ("edit-tokenizer", "differs from the tokenizer"),
    ],
)
def test_validate_detects_damage(capsys, existing, damage, needle):
    if damage.startswith("truncate"):
        path = existing / f"train_text_document.{damage[-3:]}"
        path.write_bytes(path.read_bytes()[:-10])
    elif damage == "delete-bin":
        (existing / "valid_text_document.bin").unlink()
    elif damage == "delete-manifest":
        (existing / "manifest.json").unlink()
    elif damage == "edit-counts":
        m = json.loads((existing / "manifest.json").read_text())
        m["splits"]["test"]["num_tokens"] += 1
        (existing / "manifest.json").write_text(json.dumps(m))
    else:
        with (existing / "tokenizer" / "tokenizer.json").open("a") as f:
            f.write(" ")
    with pytest.raises(DataError, match=needle):
        validate_dataset(existing)
    code, err = run_cli(capsys, "validate", existing)
    _assert_one_line_error(code, err, needle)


def test_missing_dataset_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="make data"):
        validate_dataset(tmp_path / "nothing-here")
    with pytest.raises(ValueError):  # DataError is a ValueError for callers that only know that
        validate_dataset(tmp_path / "nothing-here" / "manifest.json")


def test_rebuild_over_damaged_output_needs_force(capsys, existing, corpus):
    path = existing / "train_text_document.bin"
    path.write_bytes(path.read_bytes()[:-10])
    args = _build_args(corpus[0], existing.parent, name="syn")
    code, err = run_cli(capsys, *args)
    _assert_one_line_error(code, err, "is damaged", "FORCE=1")
    code, err = run_cli(capsys, *args, "--force")
    assert code == 0, err
    validate_dataset(existing)


def test_invalid_json_line_names_its_byte_offset(capsys, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": broken\n')
    code, err = run_cli(capsys, *_build_args(path, tmp_path))
    _assert_one_line_error(code, err, "invalid JSON", "at byte 17")
