"""DATA=: weighted blends (parsed, passed to Megatron's per-split blending, recorded, checked on
resume), one tokenizer per blend, no empty split, and no data flags in ARGS."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from common.datablend import Member, parse_data
from launcher.cli import describe, main, run_config
from launcher.command import megatron_args
from launcher.data import Dataset, check_tokenizers
from launcher.planner import plan
from launcher.settings import LaunchError
from megatron_ext import faults
from megatron_ext.runconfig import RunConfig, from_flags, parse_flags


def test_weights_are_normalised_and_bad_ones_are_one_line(tmp_path):
    assert parse_data("7:a,2:b,1:/c", tmp_path) == [
        Member(0.7, tmp_path / "a"), Member(0.2, tmp_path / "b"), Member(0.1, Path("/c"))]  # fmt: skip
    assert parse_data("data/x/manifest.json", tmp_path) == [Member(1.0, tmp_path / "data/x")]
    (tmp_path / "ja:2025").mkdir()  # a folder name with a colon is a folder, not a weight
    assert parse_data("ja:2025", tmp_path) == [Member(1.0, tmp_path / "ja:2025")]
    for bad, needle in [("0:a,1:b", "not a positive number"), ("x:a,1:b", "not a number"),
                        ("-1:a,2:b", "not a positive number"), ("a,1:b", "has no weight"),
                        ("1:a,1:a", "appears twice"), ("1:a,,1:b", "empty entry"),
                        ("nan:a,1:b", "not a positive number")]:  # fmt: skip
        with pytest.raises(ValueError, match=needle) as err:
            parse_data(bad, tmp_path)
        assert "\n" not in str(err.value)


def _manifest(sha: str, fp: str = "f") -> dict:
    return {"fingerprint": {"x": fp}, "splits": {}, "name": fp,
            "tokenizer": {"sha256": sha, "vocab_size": 1024, "eod_id": 2, "kind": "sentencepiece",
                          "path": "tokenizer"}}  # fmt: skip


def test_a_blend_names_the_member_with_another_tokenizer():
    ds = [Dataset(weight=1 / 3, path=Path(f"/d/{n}"), manifest=_manifest(s))
          for n, s in [("ja", "aaa"), ("en", "bbb"), ("code", "aaa")]]  # fmt: skip
    with pytest.raises(LaunchError, match=r"^DATA: /d/en uses another tokenizer .* than /d/ja"):
        check_tokenizers(ds)
    check_tokenizers([ds[0], ds[2]])


def test_resume_checks_each_member():
    members = [(0.7, Path("/d/a"), _manifest("s", "a")), (0.3, Path("/d/b"), _manifest("s", "b"))]
    record = faults.data_record({}, members)
    assert [m["weight"] for m in record["data_members"]] == [0.7, 0.3]
    faults.check_data(record, members, run="r", allow=False)
    changed = [members[0], (0.3, Path("/d/b"), _manifest("s", "b2"))]
    with pytest.raises(faults.FaultError, match=r"member /d/b has fingerprint \w+, it was"):
        faults.check_data(record, changed, run="r", allow=False)
    reweighted = [(0.5, *members[0][1:]), (0.5, *members[1][1:])]
    with pytest.raises(faults.FaultError, match="weights differ"):
        faults.check_data(record, reweighted, run="r", allow=False)
    faults.check_data(record, reweighted, run="r", allow=True)


def test_blend_goes_to_megatron_per_split_and_into_the_records(tmp_path, smoke_data):
    other = tmp_path / "other"
    shutil.copytree(smoke_data, other)
    p = plan({"RUN": str(tmp_path / "r"), "DATA": f"3:{smoke_data},1:{other}", "DRY_RUN": "1"})
    flags = parse_flags(megatron_args(p))
    for split in ("train", "valid", "test"):
        assert flags[f"--{split}-data-path"] == [
            "0.75", f"{smoke_data}/{split}_text_document", "0.25", f"{other}/{split}_text_document"]  # fmt: skip
    assert f"data blend 0.75 {smoke_data} + 0.25 {other};" in describe(p)
    cfg = run_config(p)
    assert cfg.data.split_blend("valid") == (
        [f"{smoke_data}/valid_text_document", f"{other}/valid_text_document"], [0.75, 0.25])  # fmt: skip
    assert RunConfig.from_json(cfg.to_json()) == cfg
    read = from_flags(flags, size=p.size, vocab=p.model_vocab).data  # command.txt of the run
    assert [read.split_blend(s) for s in ("train", "valid", "test")] == [
        cfg.data.split_blend(s) for s in ("train", "valid", "test")]  # fmt: skip


def _empty_split(data: Path, split: str) -> None:
    """What data_prep wrote for a small corpus before: a split with no document."""
    prefix = data / f"{split}_text_document"
    header = struct.pack("<9sQBQQ", b"MMIDIDX\x00\x00", 1, 8, 0, 1)
    Path(f"{prefix}.idx").write_bytes(header + struct.pack("<q", 0))
    Path(f"{prefix}.bin").write_bytes(b"")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["splits"][split].update(num_docs=0, num_tokens=0)
    (data / "manifest.json").write_text(json.dumps(manifest))


def test_an_empty_split_and_data_flags_in_args_are_one_line(tmp_path, smoke_data, capsys):
    small = tmp_path / "small"
    shutil.copytree(smoke_data, small)
    _empty_split(small, "valid")
    run = str(tmp_path / "r")
    for data in (str(small), f"0.5:{smoke_data},0.5:{small}"):
        assert main([f"RUN={run}", f"DATA={data}", "DRY_RUN=1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {small}: the valid split is empty (0 documents)"), err
        assert err.count("\n") == 1
    args = f"ARGS=--train-data-path 0.5 {smoke_data}/train_text_document 0.5 x"
    assert main([f"RUN={run}", f"DATA={smoke_data}", "DRY_RUN=1", args]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: ARGS --train-data-path cannot be honoured") and err.count("\n") == 1
    )
