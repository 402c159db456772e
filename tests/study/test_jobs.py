"""``make study JOBS=2``: runs are trained side by side, main runs first, and a failure starts no
new run (the runs already going finish, each is resumable). A fake ``train`` stands in for the
launcher, so the scheduling is checked without training."""

from __future__ import annotations

import threading
import time

import pytest

from study.runner import Runner, StageError
from study.settings import parse


def fake_runner(tmp_path, jobs: int, fail: str | None = None):
    runner = Runner(
        parse([f"ROOT={tmp_path}", f"JOBS={jobs}", "STAGES=train"]), print_fn=lambda _: None
    )
    lock, state = threading.Lock(), {"now": 0, "most": 0, "started": []}

    def train(run, *, quiet=False):
        assert quiet  # side by side: the runs' output goes to their logs only
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            state["started"].append(run.name)
        time.sleep(0.2)
        with lock:
            state["now"] -= 1
        if run.name == fail:
            raise StageError(f"train of {run.name} failed")

    runner.train = train
    return runner, state


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_runs_side_by_side_main_first(tmp_path, jobs):
    runner, state = fake_runner(tmp_path, jobs)
    runs = runner.s.runs()
    runner.side_by_side(runs)
    assert state["most"] == jobs and sorted(state["started"]) == sorted(r.name for r in runs)
    assert set(state["started"][:3]) == {"none", "jreg", "jreg-final"}


def test_failure_starts_no_new_run(tmp_path):
    runner, state = fake_runner(tmp_path, 2, fail="none")
    with pytest.raises(StageError, match="train of none failed"):
        runner.side_by_side(runner.s.runs())
    # none fails after 0.2 s while jreg runs; jreg-final takes the free slot at most once more
    assert state["started"][:2] in (["none", "jreg"], ["jreg", "none"])
    assert len(state["started"]) <= 3


def test_jobs_must_be_positive():
    with pytest.raises(Exception, match="JOBS must be a positive integer"):
        parse(["JOBS=0"])
