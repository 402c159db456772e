"""A real 2-"node" run on one machine: two jobs/local.sh launchers (what each node of a cluster job
runs) with NNODES=2 and NODE_RANK=0/1 on 127.0.0.1, one process each, PP=2 over gloo; the losses
match a single-process run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REFERENCE_SETTINGS
from tests.helpers import REPO, free_port
from tests.jobs.common import JOBS, clean_env
from tests.test_pretrain import read_metrics, train_lines

SETTINGS = [f"{k}={v}" for k, v in REFERENCE_SETTINGS.items()]
TIMEOUT = 300


def launch_nodes(tmp_path, node_settings: list[list[str]]) -> None:
    """Start one jobs/local.sh per entry at once; wait for all, killing every group on failure."""
    # NNODES=2 without a GPU is refused unless asked for (megatron_ext/device.py)
    env = clean_env(tmp_path, LAUNCH_PYTHON=sys.executable, ALLOW_CPU="1")
    procs = [
        subprocess.Popen([str(JOBS / "local.sh"), *words], cwd=REPO, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        for words in node_settings
    ]  # fmt: skip
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        pytest.fail(f"a node did not finish in {TIMEOUT}s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for proc, out, words in zip(procs, outs, node_settings, strict=True):
        assert proc.returncode == 0, f"{words} exited {proc.returncode}\n{out[-5000:]}"


@pytest.mark.slow
def test_two_nodes_pp2_match_one_process(tmp_path, smoke_data, reference_run):
    one, two = reference_run, tmp_path / "two"  # one: the same settings on one process
    port = free_port()
    rendezvous = ["NNODES=2", "NPROC=1", "PP=2", "MASTER_ADDR=127.0.0.1", f"MASTER_PORT={port}"]
    launch_nodes(tmp_path, [
        [f"RUN={two}", f"DATA={smoke_data}", *SETTINGS, *rendezvous, f"NODE_RANK={rank}"]
        for rank in (0, 1)
    ])  # fmt: skip
    assert "--nnodes 2 --node-rank" in (two / "command.txt").read_text()
    ref, got = train_lines(read_metrics(one)), train_lines(read_metrics(two))
    assert [x["iteration"] for x in got] == [1, 2, 3]
    for a, b in zip(ref, got, strict=True):
        assert b["lm_loss"] == pytest.approx(a["lm_loss"], rel=1e-5)
        assert b["D"] == pytest.approx(a["D"], rel=1e-4)
