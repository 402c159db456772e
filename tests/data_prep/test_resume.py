"""Interrupt-and-resume: finished work is reused and the result is byte-identical."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_prep.build import build
from data_prep.corpus import Shard
from data_prep.encoders import EncoderSpec
from data_prep.errors import BuildInterrupted, DataError
from data_prep.shards import ShardTask, committed_pieces, piece_files, run_shard
from data_prep.split import SPLITS, thresholds
from data_prep.validate import validate_dataset
from tests.data_prep.common import REPO_ROOT, build_config, dataset_bytes


def test_stop_then_resume_is_identical(built, corpus, tmp_path):
    root, _ = built
    with pytest.raises(BuildInterrupted):
        build(build_config(corpus[0], tmp_path, workers=1, stop_after_shards=3))
    out = tmp_path / "syn"
    done = sorted(out.glob(".work/shards/*/done.json"))
    assert len(done) == 3 and not (out / "manifest.json").exists()
    with pytest.raises(DataError, match="unfinished build"):
        validate_dataset(out)
    mtimes = {p: p.stat().st_mtime_ns for p in done}
    manifest = build(build_config(corpus[0], tmp_path, workers=2))
    assert manifest["build"]["resumed"] is True
    assert dataset_bytes(out) == dataset_bytes(root)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items() if p.exists())
    assert not (out / ".work").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_process_then_resume_is_identical(built, corpus, tmp_path, sig):
    """Interrupt a real `python -m data_prep build` mid-run (whole process group), then resume."""
    root, _ = built
    out = tmp_path / "syn"
    cmd = [
        sys.executable,
        "-m",
        "data_prep",
        "build",
        "--corpus",
        str(corpus[0]),
        "--out-root",
        str(tmp_path),
        "--name",
        "syn",
        "--vocab-size",
        "512",
        "--split",
        "0.8,0.1,0.1",
        "--workers",
        "2",
        "--shard-mb",
        "0.01",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # an xdist worker ignores SIGINT, and an ignored signal stays ignored across exec: Python
        # then installs no KeyboardInterrupt handler and the build ran on through the Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(out.glob(".work/shards/*/done.json"))) >= 2:
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)  # Ctrl-C must stop the pool promptly, not hang on workers
    assert (
        proc.returncode == (130 if sig == signal.SIGINT else -sig)
        and not (out / "manifest.json").exists()
    )
    build(build_config(corpus[0], tmp_path, workers=2, shard_mb=0.01))
    assert dataset_bytes(out) == dataset_bytes(root)


def _task(corpus_path: Path, shard_dir: Path, tokenizer_dir: Path, flush_bytes: int) -> ShardTask:
    size = corpus_path.stat().st_size
    return ShardTask(
        shard=Shard(index=0, source=0, kind="jsonl", paths=(str(corpus_path),), start=0, end=size),
        shard_dir=str(shard_dir),
        text_field="text",
        encoder=EncoderSpec(kind="sentencepiece", tokenizer_dir=str(tokenizer_dir)),
        cuts=thresholds((0.8, 0.1, 0.1)),
        eod_id=2,
        dtype="uint16",
        flush_bytes=flush_bytes,
        batch_bytes=4096,
    )


def _concat(shard_dir: Path) -> dict[str, np.ndarray]:
    n = len(committed_pieces(shard_dir))
    return {
        s: np.concatenate(
            [np.fromfile(piece_files(shard_dir, p, s)[0], np.uint16) for p in range(n)]
        )
        for s in SPLITS
    }


def test_shard_resumes_after_its_last_committed_piece(built, corpus, tmp_path):
    root, _ = built
    whole = _task(corpus[0], tmp_path / "whole", root / "tokenizer", flush_bytes=1 << 30)
    run_shard(whole)
    calls = 0

    def interrupt(nbytes: int, ntokens: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 40:
            raise KeyboardInterrupt

    task = _task(corpus[0], tmp_path / "pieces", root / "tokenizer", flush_bytes=20_000)
    with pytest.raises(KeyboardInterrupt):
        run_shard(task, progress=interrupt)
    committed = len(committed_pieces(tmp_path / "pieces"))
    assert committed >= 2 and not (tmp_path / "pieces" / "done.json").exists()
    run_shard(task)
    assert len(committed_pieces(tmp_path / "pieces")) > committed
    a, b = _concat(tmp_path / "whole"), _concat(tmp_path / "pieces")
    assert all(np.array_equal(a[s], b[s]) for s in SPLITS)
