"""Stopping a run: SIGINT (Ctrl-C) and SIGTERM save a checkpoint at the current iteration, print
one line and exit 128 + signal; the same command resumes bit-identically (issue 10, item 2)."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

import launcher as launch
from tests.conftest import UNINTERRUPTED_SETTINGS
from tests.helpers import REPO, run_checked, subprocess_env, wait_for_iteration
from tests.test_pretrain import LAUNCH, read_metrics, train, train_lines

SETTINGS = UNINTERRUPTED_SETTINGS  # a stopped run resumed ends as the session's uninterrupted run


def stop_line(run_dir, sig: str, iteration: int) -> str:
    return (
        f"stopped by {sig} at iteration {iteration} of 20: checkpoint {run_dir}/checkpoints/"
        f"iter_{iteration:07d}; run the same command again to resume"
    )


def signal_during_training(cmd, run_dir, sig, after_iteration=3, timeout=600, group=False):
    """Start ``cmd`` in its own session, send ``sig`` once ``after_iteration`` is logged (to the
    whole process group with ``group``, as a terminal's Ctrl-C does); return (code, output)."""
    log = run_dir.parent / f"{run_dir.name}.out"
    with log.open("w") as out:  # a file, not a pipe nobody reads while training runs
        proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(WANDB_MODE="offline"), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        wait_for_iteration(proc, run_dir, after_iteration, timeout)
        assert proc.poll() is None, "the run ended before the signal:\n" + log.read_text()
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, log.read_text()


def saved_iteration(run_dir) -> int:
    return int((run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").read_text())


def same_training(a: list[dict], b: list[dict]) -> bool:
    key = [(x["iteration"], x["lm_loss"], x["D"]) for x in train_lines(a)]
    return key == [(x["iteration"], x["lm_loss"], x["D"]) for x in train_lines(b)]


@pytest.fixture
def uninterrupted(uninterrupted_run) -> list[dict]:
    return read_metrics(uninterrupted_run)


@pytest.mark.slow
def test_ctrl_c_under_make_saves_says_where_and_resumes_bitwise(tmp_path, smoke_data,
                                                                uninterrupted):  # fmt: skip
    run_dir = tmp_path / "ctrl_c"
    cmd = ["make", "-s", "-C", str(REPO), "pretrain", f"RUN={run_dir}", f"DATA={smoke_data}"]
    cmd += [f"{k}={v}" for k, v in SETTINGS.items()]
    code, out = signal_during_training(cmd, run_dir, signal.SIGINT, group=True)
    n = saved_iteration(run_dir)
    assert 3 <= n < 20, out[-3000:]
    assert stop_line(run_dir, "SIGINT (Ctrl-C)", n) in out.splitlines(), out[-3000:]
    assert "Traceback" not in out, out[-5000:]
    # make got the SIGINT too and adds its own last line, after the trainer's
    *_, last_but_one, last = out.rstrip().splitlines()
    assert last_but_one == stop_line(run_dir, "SIGINT (Ctrl-C)", n)
    # "make[1]:" when this test itself runs under make (make test, .ci/run)
    assert re.match(r"make(\[\d+\])?: \*\*\* \[", last), last
    assert last.endswith(("] Error 130", "] Interrupt")), last
    assert code != 0
    resumed = train(run_dir, smoke_data, **SETTINGS)
    assert same_training(resumed, uninterrupted)


@pytest.mark.slow
def test_sigterm_saves_exits_143_resumes_bitwise_then_is_complete(tmp_path, smoke_data,
                                                                  uninterrupted):  # fmt: skip
    run_dir = tmp_path / "sigterm"
    cmd = LAUNCH + [f"RUN={run_dir}", f"DATA={smoke_data}"]
    cmd += [f"{k}={v}" for k, v in SETTINGS.items()]
    code, out = signal_during_training(cmd, run_dir, signal.SIGTERM)
    n = saved_iteration(run_dir)
    assert code == 128 + signal.SIGTERM, out[-3000:]
    assert stop_line(run_dir, "SIGTERM", n) in out.splitlines(), out[-3000:]
    assert 3 <= n < 20 and "Traceback" not in out
    resumed = train(run_dir, smoke_data, **SETTINGS)
    assert same_training(resumed, uninterrupted)
    # run again: complete, nothing re-run, nothing appended (issue 10, item 3)
    before = (run_dir / "metrics.jsonl").read_text()
    code, out = run_checked(cmd, 120)
    assert code == 0 and out.startswith("run complete: iteration 20 of 20"), out
    assert (run_dir / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_sigint_through_torchrun_saves_on_every_rank_and_resumes(tmp_path, smoke_data):
    run_dir = tmp_path / "torchrun"
    cmd = LAUNCH + [f"RUN={run_dir}", f"DATA={smoke_data}", "NPROC=2", "TP=2"]
    cmd += [f"{k}={v}" for k, v in SETTINGS.items()]
    code, out = signal_during_training(cmd, run_dir, signal.SIGINT, group=True)
    n = saved_iteration(run_dir)
    assert code == 128 + signal.SIGINT, out[-3000:]
    assert out.count(stop_line(run_dir, "SIGINT (Ctrl-C)", n)) == 1, out[-3000:]
    assert 3 <= n < 20 and "Traceback" not in out, out[-5000:]
    resumed = train_lines(train(run_dir, smoke_data, NPROC=2, TP=2, **SETTINGS))
    assert [x["iteration"] for x in resumed] == list(range(1, 21))


@pytest.mark.parametrize(
    "value, minutes", [("90", 90), ("1:30:00", 90), ("0:01:59", 1), ("24:00:00", 1440)]
)
def test_time_limit_minutes(value, minutes):
    assert launch.time_limit_minutes({"TIME_LIMIT": value}) == minutes


@pytest.mark.parametrize("value", ["0", "soon", "1:2:3:4", "0:00:30"])
def test_bad_time_limit(value):
    with pytest.raises(launch.LaunchError, match="TIME_LIMIT must be"):
        launch.time_limit_minutes({"TIME_LIMIT": value})


def test_time_limit_becomes_exit_duration(tmp_path, smoke_data):
    code, out = run_checked(LAUNCH + [f"RUN={tmp_path / 'r'}", f"DATA={smoke_data}",
                                      "TIME_LIMIT=1:30:00", "DRY_RUN=1"], 120)  # fmt: skip
    assert code == 0 and "--exit-duration-in-mins 90 " in out, out
    code, out = run_checked(LAUNCH + [f"RUN={tmp_path / 'r'}", f"DATA={smoke_data}",
                                      "TIME_LIMIT=soon", "DRY_RUN=1"], 120)  # fmt: skip
    assert code == 2 and out.startswith("error: TIME_LIMIT must be") and "Traceback" not in out


@pytest.mark.slow
def test_time_limit_saves_and_exits_0(tmp_path, smoke_data):
    run_dir = tmp_path / "limited"
    code, out = run_checked(LAUNCH + [f"RUN={run_dir}", f"DATA={smoke_data}", "ITERS=100000",
                                      "LOG_INTERVAL=50", "SAVE_INTERVAL=100000", "TIME_LIMIT=1",
                                      "ARGS=--eval-iters 1"], 900)  # fmt: skip
    assert code == 0, out[-3000:]
    n = saved_iteration(run_dir)
    assert 0 < n < 100000
    expected = (f"stopped by its time limit (1 min) at iteration {n} of 100000: checkpoint "
                f"{run_dir}/checkpoints/iter_{n:07d}; run the same command again to resume")  # fmt: skip
    assert expected in out.splitlines(), out[-3000:]


def test_sigint_is_named_in_the_run_log_and_goes_to_megatrons_handler(capsys, monkeypatch):
    """Megatron's exit line says SIGTERM for a Ctrl-C (training.py:3260): rank 0's log says
    which signal arrived, the moment it arrives."""
    from megatron_ext import stop

    got = []
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(stop, "_sigint_received", False)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
        stop.install_sigint()
        os.kill(os.getpid(), signal.SIGINT)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert got == [signal.SIGTERM] and stop._sigint_received
    assert capsys.readouterr().out.startswith("received SIGINT (Ctrl-C): saving a checkpoint")
