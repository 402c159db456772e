"""The launcher's guards before anything starts: a finished run does nothing, and a CPU machine
refuses a model whose training memory it cannot hold (issue 10, items 3 and 4)."""

from __future__ import annotations

import dataclasses
import json

import pytest

import launcher as launch
from launcher.memory import GiB
from megatron_ext import faults
from tests.test_pretrain import launch as run_launcher


def finished_run(run_dir, iteration: int) -> None:
    """What a finished tiny run leaves that the launcher reads (no weights needed to decide)."""
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "latest_checkpointed_iteration.txt").write_text(f"{iteration}\n")
    record = {"size": "tiny", "train_iters": iteration, "vocab": 1024}
    (run_dir / "launch.json").write_text(json.dumps(record) + "\n")
    (run_dir / "metrics.jsonl").write_text('{"iteration": 6, "split": "test", "lm_loss": 1.0}\n')


def test_finished_run_says_complete_and_does_nothing(tmp_path, smoke_data):
    run_dir = tmp_path / "done"
    settings = dict(RUN=run_dir, DATA=smoke_data, ITERS=2, SAVE_INTERVAL=2, LOG_INTERVAL=1)
    code, out = run_launcher(400, **settings)
    assert code == 0, out[-3000:]
    before = {n: (run_dir / n).read_text() for n in ("metrics.jsonl", "command.txt", "launch.json")}
    code, out = run_launcher(60, **settings)
    assert code == 0, out
    assert out.strip().splitlines() == [
        f"run complete: iteration 2 of 2 in {run_dir}; nothing to do (to train further: a larger "
        "ITERS=... with ARGS=--override-opt_param-scheduler)"
    ]
    assert {n: (run_dir / n).read_text() for n in before} == before


def test_raising_iters_continues_a_finished_run(tmp_path, smoke_data, monkeypatch):
    run_dir = tmp_path / "done"
    finished_run(run_dir, 6)
    # finished_run() writes no weights: the readability check of the checkpoint a continued run
    # would load (tests/test_faults.py) is not what this test is about.
    monkeypatch.setattr(faults, "check_checkpoint", lambda *args, **kwargs: None)
    v = dict(RUN=str(run_dir), DATA=str(smoke_data), ITERS="8")
    with pytest.raises(launch.LaunchError, match="ITERS=8 differs from the 6"):
        launch.plan(v)
    p = launch.plan(dict(v, ARGS="--override-opt_param-scheduler"))
    assert launch.completed_iteration(p) is None
    assert launch.completed_iteration(launch.plan(dict(v, ITERS="6"))) == 6


def cpu_plan(smoke_data, tmp_path, **settings):
    v = dict(RUN=str(tmp_path / "run"), DATA=str(smoke_data), **settings)
    return dataclasses.replace(launch.plan(v), num_gpus=0)


def test_cpu_memory_estimate_refuses_big_sizes_and_names_what_fits(tmp_path, smoke_data):
    p = cpu_plan(smoke_data, tmp_path, SIZE="125m")
    with pytest.raises(launch.LaunchError) as err:
        launch.check_cpu_memory(p, available=24 * GiB)
    message = str(err.value)
    assert message.startswith("SIZE=125m needs ~")
    assert "8 x 2048-token micro batch" in message  # the recipe's micro batch and sequence
    assert "Train SIZE=tiny or SIZE=study here" in message and "FORCE_CPU=1" in message
    assert "make submit SIZE=125m" in message
    # what decides is the estimate, not the name: a shrunk micro batch of the same size fits
    small = cpu_plan(smoke_data, tmp_path, SIZE="125m",
                     ARGS="--micro-batch-size 1 --seq-length 256")  # fmt: skip
    launch.check_cpu_memory(small, available=24 * GiB)
    launch.check_cpu_memory(cpu_plan(smoke_data, tmp_path, NPROC="2", TP="2"), available=4 * GiB)
    with pytest.raises(launch.LaunchError, match="Train nothing"):
        launch.check_cpu_memory(cpu_plan(smoke_data, tmp_path), available=GiB // 2)


def test_cpu_machine_refuses_8b_before_starting(tmp_path, smoke_data):
    run_dir = tmp_path / "big"
    code, out = run_launcher(120, RUN=run_dir, DATA=smoke_data, SIZE="8b")
    assert code == 2, out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "SIZE=8b needs ~" in errors[0], out
    assert "Traceback" not in out and not (run_dir / "command.txt").exists()
    # DRY_RUN still prints the command (it runs nothing), and FORCE_CPU is a known setting
    code, out = run_launcher(120, RUN=run_dir, DATA=smoke_data, SIZE="8b", DRY_RUN=1,
                             FORCE_CPU=1)  # fmt: skip
    assert code == 0 and "--num-layers 32" in out, out
