"""What `make pretrain` prints: the plan with the resolved layer weights, progress, summary, logs."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import types

import pytest

from launcher.console import console_view, run_logged
from megatron_ext.console import MARK
from megatron_ext.jreg import layer_weights
from tests.helpers import REPO, subprocess_env
from tests.test_pretrain import launch


@pytest.mark.parametrize(
    "weights, schedule, kw",
    [("uniform", "uniform", {}), ("exp:0.5", "exp", {"k": 0.5}), ("last_k:3", "last_k", {"k": 3})],
)
def test_plan_prints_resolved_layer_weights(tmp_path, smoke_data, weights, schedule, kw):
    code, out = launch(RUN=tmp_path / "w", DATA=smoke_data, WEIGHTS=weights, DRY_RUN=1)
    assert code == 0, out
    plan = out.splitlines()[0]
    match = re.search(r"WEIGHTS=\S+ \[w_1\.\.w_4: ([^\]]+)\]", plan)
    if schedule == "uniform":  # all equal: the name alone
        assert match is None and f"WEIGHTS={weights} on " in plan, plan
        return
    assert match, plan
    printed = []  # runs of equal values are written "v xN"
    for word in match[1].split(", "):
        value, _, count = word.partition(" x")
        printed += [float(value)] * int(count or 1)
    assert printed == pytest.approx(layer_weights(4, schedule, **kw).tolist(), abs=5e-5)


def test_plan_line_abbreviates_many_layer_weights():
    from launcher.cli import describe_weights
    from recipes import model_recipe

    def short(weights):
        p = types.SimpleNamespace(
            reg="jreg", weights=weights, model=model_recipe("1b"), selfdistill=None
        )
        return describe_weights(p)

    assert short("uniform") == ""
    assert short("last_k:4") == " [w_1..w_16: 0 x12, 0.25 x4]"
    exp = short("exp:0.25")
    assert exp.startswith(" [w_1..w_16: ") and ", ..., " in exp and len(exp) < 80, exp


def test_plan_has_no_weights_without_regulariser(tmp_path, smoke_data):
    code, out = launch(RUN=tmp_path / "w", DATA=smoke_data, REG="none", DRY_RUN=1)
    assert code == 0, out
    assert "w_1" not in out.splitlines()[0]


def test_console_view_keeps_ours_and_errors_only():
    assert console_view(MARK + "iter 2/6 | tokens 2,048") == "iter 2/6 | tokens 2,048"
    assert console_view("error: NaN/inf at iteration 3") == "error: NaN/inf at iteration 3"
    assert console_view("  lr ............................. 0.003") is None
    assert console_view("WARNING:megatron.core.rerun_state_machine:Result validation") is None
    assert console_view("/x/optimizer.py:29: UserWarning: Transformer Engine and Apex") is None
    saved = (" [2026-11-28 23:15:49.3] successfully saved checkpoint from iteration      20 to "
             "/r/checkpoints [ t 1/1, gtp_remat 1/1, p 1/1 ]")  # fmt: skip
    assert console_view(saved) == "saved checkpoint of iteration 20 in /r/checkpoints"


def child(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


NOISY = f"""
    import sys
    for i in range(500):
        print(f"argument_{{i}} ...... {{i}}")
    print("{MARK}iter 1/1 | lm_loss 9.0")
    print("noise on stderr", file=sys.stderr)
"""


def test_run_logged_full_log_and_short_console(tmp_path):
    out = io.StringIO()
    log = tmp_path / "logs" / "x.log"
    code = run_logged(child(NOISY), dict(os.environ), log, header=["plan: x"], out=out,
                      on_success=lambda: ["done"])  # fmt: skip
    assert code == 0
    assert out.getvalue().splitlines() == ["iter 1/1 | lm_loss 9.0", "done"]
    lines = log.read_text().splitlines()
    assert lines[0] == "plan: x" and len(lines) == 503 and "noise on stderr" in lines


def test_run_logged_failure_shows_error_or_log_tail(tmp_path):
    out = io.StringIO()
    code = run_logged(child("import sys; print('error: bad input, use X'); sys.exit(2)"),
                      dict(os.environ), tmp_path / "a.log", out=out)  # fmt: skip
    assert code == 2
    # the error stays the last line (README fault table); the log's path was printed at the start
    assert out.getvalue().splitlines() == ["error: bad input, use X"]
    out = io.StringIO()
    code = run_logged(child("print('setting up'); raise ValueError('deep failure')"),
                      dict(os.environ), tmp_path / "b.log", out=out)  # fmt: skip
    assert code == 1
    text = out.getvalue()
    assert "the run failed (exit code 1)" in text and "ValueError: deep failure" in text
    assert "Traceback" in text and "setting up" in text


SLEEPER = f"""
    import signal, sys, time
    def stop(signum, frame):
        print("{MARK}caught", signum, flush=True)
        sys.exit(7)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("{MARK}ready", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_launcher_reaches_the_trainer_once(tmp_path, sig):
    """A signal to the launcher (PBS at walltime, Ctrl-C) is forwarded to the trainer, whose last
    lines still reach the console and the log; the launcher returns the trainer's exit code."""
    script = tmp_path / "parent.py"  # not launcher.py: it would shadow the launcher package
    script.write_text(
        textwrap.dedent(f"""
        import os, sys
        from launcher.console import run_logged
        cmd = [sys.executable, "-c", {textwrap.dedent(SLEEPER)!r}]
        sys.exit(run_logged(cmd, dict(os.environ), __import__("pathlib").Path({str(tmp_path)!r})
                            / "s.log"))
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env=subprocess_env())  # fmt: skip
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 7
    # at once, the signal named as it arrived; then the trainer's own lines
    name = "SIGINT (Ctrl-C)" if sig == signal.SIGINT else "SIGTERM"
    assert out.splitlines()[0].startswith(f"{name} received: the run stops after its current")
    assert out.splitlines()[1] == f"caught {int(sig)}"
    assert (tmp_path / "s.log").read_text().count("caught") == 1


def test_one_ctrl_c_is_forwarded_once(tmp_path):
    """A Ctrl-C reaches the launcher twice (terminal and `uv run`); the trainer gets it once,
    and a deliberate second Ctrl-C seconds later still reaches it."""
    got, log = tmp_path / "got", tmp_path / "log.txt"
    child = tmp_path / "child.py"
    child.write_text(
        textwrap.dedent(f"""
        import signal, time
        def on_int(*_):
            with open({str(got)!r}, "a") as f:
                f.write("x")
        signal.signal(signal.SIGINT, on_int)
        print("ready", flush=True)
        time.sleep(6)
    """)
    )
    launcher = tmp_path / "parent.py"  # not launcher.py: it would shadow the launcher package
    launcher.write_text(
        textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from launcher.console import run_logged
        sys.exit(run_logged([sys.executable, {str(child)!r}], dict(os.environ), Path({str(log)!r})))
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    proc = subprocess.Popen([sys.executable, str(launcher)], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (log.is_file() and "ready" in log.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # the copy `uv run` passes on
    time.sleep(2.5)
    proc.send_signal(signal.SIGINT)  # a deliberate second Ctrl-C
    proc.wait(timeout=60)
    assert got.read_text() == "xx"


def test_summary_after_a_resume_says_what_this_start_trained(tmp_path):
    """A resumed run's summary said "200 iterations" when this start trained 176."""
    from launcher.cli import summary

    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("200")
    p = types.SimpleNamespace(run_dir=run, train=types.SimpleNamespace(train_iters=200))
    first = summary(p, {}, run / "x.log", 60.0, resumed_from=24)[0]
    assert first.endswith("200 iterations of " + str(run) + " (176 trained in this start, "
                          "resumed from iteration 24)"), first  # fmt: skip
    assert summary(p, {}, run / "x.log", 60.0)[0].endswith(f"200 iterations of {run}")
    # a stop with a checkpoint before ITERS (time limit, --exit-interval) exits 0 too
    (run / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("120")
    first = summary(p, {}, run / "x.log", 60.0, resumed_from=24)[0]
    assert f"stopped at iteration 120 of 200 of {run} (96 trained in this start" in first, first
