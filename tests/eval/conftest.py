"""Session fixtures: two short real training runs on the smoke dataset, analysed/exported once.

``eval_run``: tiny, TP=1, 10 iterations, checkpoints and validation passes every 5 iterations
(the validation line at 5 is one pass; the one at 10, the last iteration, is not, see
eval.analyze.POOLED_NOTE). ``tp_pp_run``: the same model trained on 4 processes, TP=2 x PP=2,
3 iterations, checkpoint and validation pass at 2 (and a final checkpoint at 3); its
iteration-2 checkpoint's Megatron logits are dumped once (``tp_pp_logits``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.helpers import run_checked


def eval_cli(*args: str, timeout: float = 300) -> tuple[int, str]:
    """``python -m eval ARGS`` (its own process: Megatron patches torch there)."""
    return run_checked([sys.executable, "-m", "eval", *args], timeout)


def eval_ok(*args: str, timeout: float = 300) -> str:
    code, out = eval_cli(*args, timeout=timeout)
    assert code == 0, out[-5000:]
    return out


def pretrain(run_dir: Path, data: Path, timeout: float = 400, **settings) -> Path:
    cmd = [sys.executable, "-m", "launcher", f"RUN={run_dir}", f"DATA={data}"]
    code, out = run_checked(cmd + [f"{k}={v}" for k, v in settings.items()], timeout)
    assert code == 0, out[-5000:]
    return run_dir


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def eval_run(tmp_path_factory, smoke_data) -> Path:
    run = tmp_path_factory.mktemp("eval_run") / "tp1"
    return pretrain(run, smoke_data, ITERS=10, SAVE_INTERVAL=5, LOG_INTERVAL=5,
                    ARGS="--eval-interval 5")  # fmt: skip


@pytest.fixture(scope="session")
def tp_pp_run(tmp_path_factory, smoke_data) -> Path:
    run = tmp_path_factory.mktemp("tp_pp_run") / "tp2pp2"
    return pretrain(run, smoke_data, ITERS=3, SAVE_INTERVAL=2, LOG_INTERVAL=1, NPROC=4, TP=2,
                    PP=2, ARGS="--eval-interval 2")  # fmt: skip


@pytest.fixture(scope="session")
def analyzed(eval_run) -> tuple[Path, str]:
    """``analyze`` over every checkpoint of eval_run (held-out sample + validation passes)."""
    out = eval_ok("analyze", f"RUN={eval_run}", "SAMPLES=16")
    return eval_run, out


@pytest.fixture(scope="session")
def exported(tp_pp_run) -> Path:
    """The HF export of tp_pp_run's iteration-2 checkpoint."""
    eval_ok("export", f"RUN={tp_pp_run}", "ITER=2")
    return tp_pp_run / "hf" / "iter_0000002"


@pytest.fixture(scope="session")
def tp_pp_logits(tp_pp_run, tmp_path_factory) -> Path:
    """tests/eval/megatron_logits.py for tp_pp_run's iteration-2 checkpoint (read-only): the
    reference logits that the export and the import round trip are compared with."""
    dump = tmp_path_factory.mktemp("tp_pp_logits") / "megatron_logits.pt"
    cmd = [sys.executable, "-m", "tests.eval.megatron_logits", str(tp_pp_run), "2", str(dump)]
    code, out = run_checked(cmd, timeout=300)
    assert code == 0, out[-4000:]
    return dump
