"""The README's fault table ("What happens when ..."), one test per row, each fault injected for
real: a truncated/missing/garbled checkpoint, a full disk (a small tmpfs), a changed or vanished
dataset, a rank killed with SIGKILL or stopped with SIGSTOP in a TP=2 run."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from megatron_ext import faults
from tests.helpers import REPO, run_checked, subprocess_env, wait_for_iteration

LAUNCH = [sys.executable, "-m", "launcher"]
SHORT = dict(ITERS=4, SAVE_INTERVAL=2, LOG_INTERVAL=1)


def launch(timeout: float = 400, **settings) -> tuple[int, str]:
    return run_checked(LAUNCH + [f"{k}={v}" for k, v in settings.items()], timeout)


def error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("error: ")]


def last_line(out: str) -> str:
    return out.rstrip("\n").splitlines()[-1]


def tracker(run_dir: Path) -> str:
    return (run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smoke_data) -> Path:
    """A finished 1-process run with checkpoints at 2 and 4, copied fresh for each test. It runs
    with Megatron's loss checks on (the README row on NaN/inf and spiky loss)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    checks = "--check-for-spiky-loss"  # NaN/inf checks are on by default
    code, out = launch(RUN=run_dir, DATA=smoke_data, ARGS=checks, **SHORT)
    assert code == 0, out[-4000:]
    return run_dir


@pytest.fixture
def run_copy(tmp_path, trained) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


# ---- an unreadable checkpoint ----------------------------------------------------------------


@pytest.mark.slow
def test_truncated_shard_is_refused_then_set_aside(run_copy, smoke_data):
    """The issue's case: one shard of the latest checkpoint cut short. Before: rc 1 and a
    two-rank EOFError traceback. Now: refused before start, then CKPT_FALLBACK=1 resumes."""
    ckpts = run_copy / "checkpoints"
    shard = ckpts / "iter_0000004" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])
    code, out = launch(RUN=run_copy, DATA=smoke_data, **SHORT)
    assert code == 2, out[-4000:]
    assert "Traceback" not in out
    assert error_lines(out) == [last_line(out)]
    assert (
        f"checkpoint {ckpts}/iter_0000004 is unreadable (shard __0_0.distcp is truncated (1000 "
        in out
    )
    assert "rerun with CKPT_FALLBACK=1 to set it aside and resume from iter_0000002" in out
    assert tracker(run_copy) == "4" and shard.stat().st_size == 1000  # nothing touched

    code, out = launch(RUN=run_copy, DATA=smoke_data, CKPT_FALLBACK=1, **SHORT)
    assert code == 0, out[-4000:]
    assert "resuming from iter_0000002, the newest readable checkpoint" in out
    (aside,) = ckpts.glob("iter_0000004.unreadable-*")
    assert (aside / "__0_0.distcp").stat().st_size == 1000  # set aside, not deleted
    assert tracker(run_copy) == "4" and faults.checkpoint_problem(ckpts / "iter_0000004") is None


def _garble_metadata(ckpt: Path) -> None:
    meta = ckpt / ".metadata"
    meta.write_bytes(meta.read_bytes()[:100])


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda c: (c / "__0_0.distcp").unlink(), "shard __0_0.distcp is missing"),
        (_garble_metadata, ".metadata is unreadable ("),
        (lambda c: (c / ".metadata").unlink(), ".metadata is missing"),
        (lambda c: (c / "metadata.json").write_text("{"), "metadata.json is unreadable"),
    ],
    ids=["missing_shard", "garbled_metadata", "missing_metadata", "bad_metadata_json"],
)
def test_unreadable_checkpoint_named_before_start(run_copy, smoke_data, damage, problem):
    damage(run_copy / "checkpoints" / "iter_0000004")
    code, out = launch(RUN=run_copy, DATA=smoke_data, DRY_RUN=1, **SHORT)
    assert code == 2 and "Traceback" not in out, out[-4000:]
    (line,) = error_lines(out)
    assert "iter_0000004 is unreadable (" + problem in line and "CKPT_FALLBACK=1" in line
    assert faults.checkpoint_problem(run_copy / "checkpoints" / "iter_0000002") is None


# ---- a changed or vanished dataset -----------------------------------------------------------


@pytest.fixture(scope="module")
def other_data(tmp_path_factory, smoke_data) -> Path:
    """Another valid dataset (other text, the same tokenizer): a different token stream."""
    out = tmp_path_factory.mktemp("other_data")
    tokenizer = smoke_data / "tokenizer" / "tokenizer.model"
    src = tmp_path_factory.mktemp("other_corpus")
    for i, path in enumerate(sorted((REPO / "megatron_ext").glob("*.py"))):
        (src / f"{i}.txt").write_text(path.read_text() * 20)
    cmd = [sys.executable, "-m", "data_prep", "build", "--corpus", str(src / "*.txt"),
           "--name", "other", "--out-root", str(out), "--tokenizer", str(tokenizer),
           "--split", "0.8,0.1,0.1", "--workers", "1", "--no-progress"]  # fmt: skip
    code, log = run_checked(cmd, timeout=300)
    assert code == 0, log[-3000:]
    return out / "other"


@pytest.mark.slow
def test_changed_dataset_refused_with_both_fingerprints(tmp_path, trained, smoke_data, other_data):
    data = tmp_path / "data"
    shutil.copytree(smoke_data, data)
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    record = json.loads((run_dir / "launch.json").read_text())
    old_fp = faults.data_fingerprint(json.loads((smoke_data / "manifest.json").read_text()))
    assert record["data_fingerprint"] == old_fp
    record["data"] = str(data)
    (run_dir / "launch.json").write_text(json.dumps(record))
    shutil.rmtree(data)  # the data vanished
    code, out = launch(RUN=run_dir, DATA=data, DRY_RUN=1, **SHORT)
    assert code == 2 and "Traceback" not in out, out
    (line,) = error_lines(out)
    assert f"no dataset at {data}" in line and f"trained on {data}, fingerprint {old_fp}" in line
    shutil.copytree(other_data, data)  # ... and came back different (make data FORCE=1)
    new_fp = faults.data_fingerprint(json.loads((other_data / "manifest.json").read_text()))
    assert new_fp != old_fp
    code, out = launch(RUN=run_dir, DATA=data, DRY_RUN=1, **SHORT)
    assert code == 2 and "Traceback" not in out, out
    (line,) = error_lines(out)
    assert f"the dataset changed under {run_dir}: it was trained on {data} (fingerprint " in line
    assert old_fp in line and new_fp in line and "ALLOW_DATA_CHANGE=1" in line
    code, out = launch(RUN=run_dir, DATA=data, DRY_RUN=1, ALLOW_DATA_CHANGE=1, **SHORT)
    assert code == 0, out


def test_data_record_keeps_history():
    old = {"data": "/a", "data_fingerprint": "1111"}
    manifest = {"fingerprint": {"x": 1}, "splits": {}, "tokenizer": {"sha256": "s"}}
    new = faults.data_record(old, [(1.0, Path("/b"), manifest)])
    assert new["data"] == "/b" and new["data_history"] == [old]
    assert faults.data_record(new, [(1.0, Path("/b"), manifest)]) == new


# ---- no space left -------------------------------------------------------------------------


def _mount_tmpfs(path: Path, size: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        pytest.skip(f"a real full disk needs a tmpfs mount (root): {proc.stderr.strip()}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.slow
def test_disk_full_during_save_keeps_previous_checkpoint(tmp_path, trained, smoke_data):
    """Checkpoints on a tmpfs with room for one and a half checkpoints: the save of iteration 4
    hits ENOSPC; the run stops with one line; iteration 2 stays the checkpoint that resumes."""
    one = _dir_bytes(trained / "checkpoints" / "iter_0000002")
    run_dir = tmp_path / "run"
    ckpts = run_dir / "checkpoints"
    _mount_tmpfs(ckpts, one * 3 // 2)
    try:
        code, out = launch(RUN=run_dir, DATA=smoke_data, **SHORT)
        assert code == faults.EXIT_DISK_FULL, out[-4000:]
        assert last_line(out).startswith("error: no space left on the device writing "), out[-3000:]
        assert f"Last complete checkpoint: {ckpts}/iter_0000002" in last_line(out)
        assert tracker(run_dir) == "2"
        assert faults.checkpoint_problem(ckpts / "iter_0000002") is None
        subprocess.run(["mount", "-o", f"remount,size={one * 4}", str(ckpts)], check=True)
        code, out = launch(RUN=run_dir, DATA=smoke_data, **SHORT)
        assert code == 0, out[-4000:]
        assert "set aside an interrupted checkpoint save" in out  # the torn iter_0000004
        assert tracker(run_dir) == "4"
    finally:
        _umount(ckpts)


def test_disk_full_writing_metrics_is_one_line(tmp_path, capsys):
    """A real ENOSPC from the run logger's metrics.jsonl write, through the trainer's handler."""
    from megatron_ext.runlog import RunLogger

    mnt = tmp_path / "full"
    _mount_tmpfs(mnt, 64 * 1024)
    try:
        (mnt / "filler").write_bytes(b"x" * (64 * 1024 - 16))  # tmpfs rounds up to a page
        logger = RunLogger(None, None, log_interval=1, tokens_per_iteration=1,
                           iteration_fn=lambda: 1, metrics_path=mnt / "metrics.jsonl",
                           is_writer=True)  # fmt: skip
        with pytest.raises(OSError) as info:
            report = {"lm_loss": 1.0, "jreg/loss": 0.1, "jreg/loss_scaled": 0.01}
            report |= {"jump/S_model": 0.5} | {f"jump/D_{i:04d}": 0.25 for i in range(2000)}
            logger._write("train", 1, report, step_time=1.0)
        assert info.value.errno == errno.ENOSPC
        code = faults.report_failure(info.value, save_dir=None, loading=False, timeout_s=600)
    finally:
        _umount(mnt)
    assert code == faults.EXIT_DISK_FULL
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no space left on the device") and "\n" not in err
    assert "none saved yet" in err


def test_out_of_gpu_memory_is_one_line_with_the_fix(tmp_path, capsys):
    """What an H200 run without TE raised (2026-12-04, docs/benchmarks.md), as torch raises it:
    one line with the size asked for, what the run held and the settings that hold less."""
    import types

    import torch

    from megatron_ext.train import memory_hint

    exc = torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 8.00 GiB. GPU 0 has a total capacity of 139.80 GiB "
        "of which 7.92 GiB is free."
    )  # fmt: skip
    args = types.SimpleNamespace(micro_batch_size=8, seq_length=4096, transformer_impl="local")
    try:
        raise RuntimeError("forward step failed") from exc
    except RuntimeError as err:
        code = faults.report_failure(err, save_dir=str(tmp_path), loading=False, timeout_s=600,
                                     memory_hint=memory_hint(args))  # fmt: skip
    assert code == faults.EXIT_OUT_OF_MEMORY
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (after the import's warnings)
    assert err.startswith("error: a GPU ran out of memory (asking for 8.00 GiB more): ")
    assert "micro batch 8 x 4096 tokens; without Transformer Engine attention is unfused" in err
    assert "ARGS='--micro-batch-size 1'" in err and "Last checkpoint: none saved yet" in err


# ---- a dead or stopped rank (TP=2) -----------------------------------------------------------


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            env = child.environ()
        except psutil.Error:
            continue
        if env.get("RANK") == str(rank) and "megatron_ext.train" in " ".join(child.cmdline()):
            return child.pid
    raise AssertionError(f"no rank {rank} process found")


def _start_and_wait(run_dir: Path, data: Path, iteration: int, **settings) -> subprocess.Popen:
    """Start a run (output to ``run_dir``.log, not a pipe that could fill and stall it) and
    return once ``iteration`` is in its metrics.jsonl."""
    cmd = LAUNCH + [f"RUN={run_dir}", f"DATA={data}"] + [f"{k}={v}" for k, v in settings.items()]
    log = open(f"{run_dir}.log", "w")  # noqa: SIM115 (closed by _finish)
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=log,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    proc.log = log
    if wait_for_iteration(proc, run_dir, iteration, timeout=900):
        return proc
    _kill(proc)
    pytest.fail(f"the run ended or stalled before iteration {iteration}:\n{_output(proc)[-4000:]}")


def _output(proc: subprocess.Popen) -> str:
    proc.log.close()
    return Path(proc.log.name).read_text()


def _kill(proc: subprocess.Popen) -> None:
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:  # it ended on its own
        children = []
    for p in children:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.kill()
    proc.wait()


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, float]:
    start = time.time()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        pytest.fail(f"still running {timeout}s after the fault:\n{_output(proc)[-4000:]}")
    return proc.returncode, _output(proc), time.time() - start


TP2 = dict(NPROC=2, TP=2, ITERS=6, SAVE_INTERVAL=2, LOG_INTERVAL=1)


@pytest.mark.slow
def test_killed_rank_named_with_last_checkpoint(tmp_path, smoke_data):
    run_dir = tmp_path / "run"
    proc = _start_and_wait(run_dir, smoke_data, 3, **TP2)
    os.kill(_rank_pid(proc, 1), signal.SIGKILL)
    code, out, took = _finish(proc, timeout=120)
    assert code == faults.EXIT_RANK_DIED, out[-4000:]
    line = last_line(out)
    assert line.startswith("error: rank 1 (local rank 1 on ") and "died (signal SIGKILL)" in line
    assert f"Last checkpoint: {run_dir}/checkpoints/iter_{int(tracker(run_dir)):07d};" in line
    assert int(tracker(run_dir)) >= 2


@pytest.mark.slow
def test_stopped_rank_fails_within_collective_timeout(tmp_path, smoke_data):
    run_dir = tmp_path / "run"
    proc = _start_and_wait(run_dir, smoke_data, 3, COLLECTIVE_TIMEOUT=15, **TP2)
    stopped = _rank_pid(proc, 1)
    os.kill(stopped, signal.SIGSTOP)
    try:
        code, out, took = _finish(proc, timeout=150)
    finally:
        if psutil.pid_exists(stopped):
            os.kill(stopped, signal.SIGKILL)
    assert code == faults.EXIT_COLLECTIVE_TIMEOUT, out[-4000:]
    line = last_line(out)
    assert line.startswith(
        "error: a collective operation timed out after 15 s (COLLECTIVE_TIMEOUT)"
    )
    assert f"Last checkpoint: {run_dir}/checkpoints/iter_" in line
    assert took < 15 + 60, took  # the timeout, then torchrun's grace period for the stopped rank


# ---- loss spikes -----------------------------------------------------------------------------


def test_spiky_loss_is_flagged_to_the_rerun_state_machine():
    """check_spiky_loss (what --check-for-spiky-loss adds to the loss function) on Megatron's
    own rerun state machine: 100 ordinary losses, then one 20x larger is flagged for a re-run."""
    import torch
    from megatron.core import rerun_state_machine as rsm

    from megatron_ext.step import check_spiky_loss

    rsm.initialize_rerun_state_machine(mode=rsm.RerunMode.VALIDATE_RESULTS)
    try:
        machine = rsm.get_rerun_state_machine()
        machine.state = rsm.RerunState.INITIAL_RUN  # inside a train step (the CPU-free part)
        machine.first_iteration_complete = True  # Megatron never validates iteration 1
        for i in range(100):
            check_spiky_loss(torch.tensor(2.0 + 0.01 * i))
        assert not machine.rerun_requested
        check_spiky_loss(torch.tensor(5.0))  # under 10x the largest: fine
        assert not machine.rerun_requested
        check_spiky_loss(torch.tensor(60.0))
        assert machine.rerun_requested
    finally:
        rsm.destroy_rerun_state_machine()


def test_checkpoint_failing_at_load_is_one_line(tmp_path, capsys):
    """Damage the file check cannot see fails inside Megatron's load: named, exit code 2."""
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("4")
    try:
        raise RuntimeError("load failed") from EOFError("Ran out of input")
    except RuntimeError as exc:
        code = faults.report_failure(exc, save_dir=str(tmp_path), loading=True, timeout_s=600)
    assert code == faults.EXIT_REFUSED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: checkpoint {tmp_path}/iter_0000004 ")
    assert "could not be loaded (RuntimeError: load failed); move it aside" in err
