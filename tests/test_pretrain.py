"""`make pretrain` end to end on CPU: outputs, same start across REG and layouts, resume, errors."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys

import psutil
import pytest

from tests.conftest import REFERENCE_SETTINGS, UNINTERRUPTED_SETTINGS
from tests.helpers import REPO, run_checked, subprocess_env, wait_for_iteration

LAUNCH = [sys.executable, "-m", "launcher"]
KEYS = {"iteration", "tokens", "lm_loss", "jreg_loss", "D", "jump_ratio", "S_model", "zeta_L",
        "step_time_s"}  # fmt: skip


def launch(timeout: float = 300, **settings) -> tuple[int, str]:
    cmd = LAUNCH + [f"{k}={v}" for k, v in settings.items()]
    return run_checked(cmd, timeout)


def train(run_dir, data, timeout: float = 300, **settings) -> list[dict]:
    code, out = launch(timeout, RUN=run_dir, DATA=data, **settings)
    assert code == 0, out[-5000:]
    return read_metrics(run_dir)


def read_metrics(run_dir) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_lines(lines: list[dict]) -> list[dict]:
    return [x for x in lines if "split" not in x]


def test_default_pretrain_path(tmp_path):
    """`make pretrain` with no settings but a short run: embedded corpus, CPU, every output."""
    run_dir = tmp_path / "default"
    cmd = ["make", "-s", "-C", str(REPO), "pretrain", f"RUN={run_dir}", "ITERS=6",
           "SAVE_INTERVAL=3", "LOG_INTERVAL=2"]  # fmt: skip
    code, out = run_checked(cmd, timeout=600, WANDB_MODE="offline")
    assert code == 0, out[-5000:]
    assert "SIZE=tiny REG=jreg" in out and "CPU (gloo)" in out
    assert (
        run_dir / "checkpoints" / "latest_checkpointed_iteration.txt"
    ).read_text().strip() == "6"
    assert (run_dir / "checkpoints" / "iter_0000003").is_dir()
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 1000
    assert list((run_dir / "wandb").rglob("offline-run-*"))
    lines = read_metrics(run_dir)
    train_part = train_lines(lines)
    assert [x["iteration"] for x in train_part] == [2, 4, 6]
    # after training Megatron evaluates one validation pass, then the test split: one line each,
    # with the loss Megatron prints for it
    evals = [x for x in lines if x.get("split")]
    assert [(x["split"], x.get("eval_pass"), x["iteration"]) for x in evals] == [
        ("valid", 1, 6),
        ("test", None, 6),
    ]
    # the console is short (plan, progress, results, summary); everything is in the run's log
    (log,) = (run_dir / "logs").glob("*.log")
    full = log.read_text()
    printed = re.findall(r"on (validation|test) set \| lm loss value: (\S+) ", full)
    assert [float(v) for _, v in printed] == pytest.approx([x["lm_loss"] for x in evals], rel=1e-6)
    assert "-- arguments --" in full and "-- arguments --" not in out
    assert len(out.splitlines()) < 40 < len(full.splitlines()), out
    progress = re.findall(
        r"^iter (\d+)/6 \| tokens ([\d,]+) \| lm_loss .* tok/s \| ETA ", out, re.M
    )
    assert progress == [("2", "2,048"), ("4", "4,096"), ("6", "6,144")], out
    assert re.search(r"^valid iteration 6, pass 1 after training: lm_loss ", out, re.M), out
    assert f"logs         {log}" in out and "latest iteration 6" in out
    assert f"make analyze RUN={run_dir}; make plots RUN={run_dir}" in out
    assert "lr ..." in (run_dir / "arguments.txt").read_text()
    for line in lines:
        keys = KEYS - ({"step_time_s"} if "split" in line else set())
        assert keys <= line.keys(), line
        values = [line[k] for k in keys if k != "D"] + line["D"]
        assert all(math.isfinite(v) for v in values), line
        assert len(line["D"]) == 4
        assert line["zeta_L"] == pytest.approx(100 * max(0.0, line["D"][-1] - line["D"][-2]))
    assert train_part[0]["tokens"] == 2 * 8 * 128


@pytest.mark.slow
def test_jreg_vs_none_same_start_and_logged_loss_equals_reference(
    tmp_path, smoke_data, reference_run, reference_values
):
    jreg = train_lines(read_metrics(reference_run))  # REG=jreg LAMBDA=0.5, 3 iterations
    none = train_lines(
        train(tmp_path / "none", smoke_data, **{**REFERENCE_SETTINGS, "REG": "none"})
    )
    assert jreg[0]["lm_loss"] == none[0]["lm_loss"]  # same init, same first batch
    # step 1 is LR warmup's lr=0; step 2 applies different gradients
    assert jreg[2]["lm_loss"] != none[2]["lm_loss"]
    assert none[0]["jreg_loss"] == pytest.approx(jreg[0]["jreg_loss"], rel=1e-6)  # same model
    ref, _ = reference_values
    assert jreg[0]["lm_loss"] == pytest.approx(ref["lm_loss"], rel=1e-5)
    assert jreg[0]["D"] == pytest.approx(ref["D"], rel=1e-5)
    weights = [1 / 4] * 4  # WEIGHTS=uniform
    expected = sum(w * d for w, d in zip(weights, ref["D"], strict=True))
    assert jreg[0]["jreg_loss"] == pytest.approx(expected, rel=1e-5)
    assert jreg[0]["jreg_loss_scaled"] == pytest.approx(0.5 * expected, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "layout", [{"TP": 2}, {"PP": 2}, {"PP": 2, "VPP": 2}], ids=["tp2", "pp2", "pp2_vpp2"]
)
def test_two_process_layouts_start_like_tp1(tmp_path, smoke_data, reference_run, layout):
    tp1 = train_lines(read_metrics(reference_run))
    other = train_lines(
        train(tmp_path / "other", smoke_data, NPROC=2, **layout, **REFERENCE_SETTINGS)
    )
    for a, b in zip(tp1, other, strict=True):
        assert b["lm_loss"] == pytest.approx(a["lm_loss"], rel=1e-5)
        assert b["D"] == pytest.approx(a["D"], rel=1e-4)


def kill_tree(proc: subprocess.Popen) -> None:
    parent = psutil.Process(proc.pid)
    for child in parent.children(recursive=True) + [parent]:
        child.kill()
    proc.wait()


def run_and_kill(run_dir, data, after_iteration: int, **settings) -> None:
    """Start a run and SIGKILL its whole process tree once it logged ``after_iteration``."""
    cmd = LAUNCH + [f"RUN={run_dir}", f"DATA={data}"] + [f"{k}={v}" for k, v in settings.items()]
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_iteration(proc, run_dir, after_iteration, timeout=300)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        kill_tree(proc)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "distributed"])
def test_kill_and_resume_is_bitwise(tmp_path, smoke_data, optimizer, request):
    if optimizer == "adam":  # the session's uninterrupted run (no checkpoint), saving every 4
        settings = dict(UNINTERRUPTED_SETTINGS, SAVE_INTERVAL=4)
        full = train_lines(read_metrics(request.getfixturevalue("uninterrupted_run")))
    else:
        settings = dict(
            ITERS=8, SAVE_INTERVAL=4, LOG_INTERVAL=1, ARGS="--use-distributed-optimizer"
        )
        full = train_lines(train(tmp_path / "full", smoke_data, **settings))
    run_dir = tmp_path / "killed"
    run_and_kill(run_dir, smoke_data, after_iteration=6, **settings)
    ckpts = run_dir / "checkpoints"
    assert (ckpts / "latest_checkpointed_iteration.txt").read_text().strip() == "4"
    # what a kill during the save of iteration 6 would leave: a folder the tracker never named
    (ckpts / "iter_0000006").mkdir()
    (ckpts / "iter_0000006" / "metadata.json").write_text('{"trunc')
    resumed = train_lines(train(run_dir, smoke_data, **settings))
    assert [(x["iteration"], x["lm_loss"], x["D"]) for x in resumed] == [
        (x["iteration"], x["lm_loss"], x["D"]) for x in full
    ]
    assert list(ckpts.glob("iter_0000006.incomplete-*")), "half-written checkpoint not set aside"
    assert (run_dir / "metrics.jsonl.superseded").exists()  # lines 5-6 of the killed run


def test_nan_stops_with_iteration_and_last_checkpoint(tmp_path, smoke_data):
    code, out = launch(RUN=tmp_path / "nan", DATA=smoke_data, ITERS=6, SAVE_INTERVAL=2,
                       LOG_INTERVAL=1, ARGS="--inject-nan-at-iteration 3")  # fmt: skip
    assert code != 0
    assert "NaN/inf in the loss or gradients at iteration 3" in out
    assert "last good checkpoint: " in out and "iter_0000002" in out


def test_dry_run_1b_prints_megatron_flags(smoke_data):
    code, out = launch(SIZE="1b", REG="jreg", DATA=smoke_data, DRY_RUN=1)
    assert code == 0, out
    for flag in ("--num-layers 16", "--hidden-size 2048", "--ffn-hidden-size 8192",
                 "--num-query-groups 8", "--jreg-reg jreg", "--swiglu", "--rotary-base 500000"):  # fmt: skip
        assert flag in out, flag
    assert "SIZE=1b REG=jreg" in out


def test_launcher_plans_without_importing_torch(smoke_data):
    """DRY_RUN (and every check before a start) never imports torch on a machine without a GPU
    driver: ~1.3 s per launch here, more on a login node's shared file system."""
    script = (
        "import sys\n"
        "from launcher.cli import main\n"
        f"code = main(['DRY_RUN=1', 'DATA={smoke_data}', 'REG=selfdistill', 'SD_K=0.5'])\n"
        f"bad = main(['DRY_RUN=1', 'DATA={smoke_data}', 'WEIGHTS=last_k:99'])\n"
        "print('codes', code, bad, 'torch' in sys.modules)\n"
    )
    code, out = run_checked([sys.executable, "-c", script], 120)
    assert code == 0 and "codes 0 2 False" in out, out[-3000:]


@pytest.fixture
def corrupt_data(tmp_path, smoke_data):
    copy = tmp_path / "corrupt"
    shutil.copytree(smoke_data, copy)
    binfile = copy / "train_text_document.bin"
    binfile.write_bytes(binfile.read_bytes()[:1000])
    return copy


BAD = [
    ({"SIZE": "huge"}, "unknown SIZE 'huge'; valid: tiny, 125m, 350m, 1b, 3b, 8b"),
    ({"REG": "l1"}, "unknown REG 'l1'; valid: none, jreg, l2rel"),
    ({"WEIGHTS": "cubic"}, "unknown layer-weight schedule 'cubic'"),
    ({"WEIGHTS": "last_k:9"}, "last_k needs an integer k in 1..4"),
    ({"LAMBDA": "-1"}, "LAMBDA must be a number >= 0"),
    ({"LAMBDA": "abc"}, "LAMBDA must be a number >= 0"),
    ({"PP": "3"}, "num_layers=4 is not divisible by PP=3"),
    ({"PP": "2", "VPP": "4", "NPROC": "2"}, "not divisible by PP=2 x VPP=4"),
    ({"FP8": "hybrid"}, "FP8=hybrid needs a GPU and Transformer Engine"),
    ({"TP": "2", "NPROC": "3"}, "does not divide the world size 3"),
    ({"ARGS": "--vocab-size 100"}, "the dataset's tokenizer has"),
    ({"ITERS": "0"}, "ITERS must be a positive integer"),
    ({"BOGUS": "1"}, "unknown setting 'BOGUS=1'"),
]


@pytest.mark.parametrize(
    "settings, message", BAD, ids=[next(iter(s)) + str(i) for i, (s, _) in enumerate(BAD)]
)
def test_bad_input_one_line(tmp_path, smoke_data, settings, message):
    code, out = launch(RUN=tmp_path / "bad", DATA=smoke_data, DRY_RUN=1, **settings)
    assert code == 2, out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], out
    assert "Traceback" not in out


def test_missing_and_corrupt_dataset(tmp_path, corrupt_data):
    code, out = launch(RUN=tmp_path / "bad", DATA=tmp_path / "nowhere", DRY_RUN=1)
    assert code == 2 and out.startswith("error: ") and "Traceback" not in out, out
    code, out = launch(RUN=tmp_path / "bad", DATA=corrupt_data, DRY_RUN=1)
    assert code == 2 and out.startswith("error: ") and "Traceback" not in out, out
    assert "train_text_document" in out
