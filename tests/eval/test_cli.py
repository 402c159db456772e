"""Bad input to python -m eval / make analyze|plots|export|eval: one line ``error: ...``, exit 2,
before any model is loaded."""

from __future__ import annotations

import shutil
import sys

import pytest

from tests.eval.conftest import eval_cli
from tests.eval.test_rundir import fake_run
from tests.helpers import REPO, run_checked


def last_line(out: str) -> str:
    return out.strip().splitlines()[-1]


@pytest.mark.parametrize("command", ["analyze", "export", "eval", "plots"])
def test_missing_run_dir(tmp_path, command):
    code, out = eval_cli(command, f"RUN={tmp_path / 'nope'}", timeout=60)
    assert code == 2 and last_line(out).startswith("error: run directory")
    assert "Traceback" not in out


def test_run_without_checkpoints(tmp_path):
    run = fake_run(tmp_path, checkpoints=(), tracker=None)
    for command in ("analyze", "export", "eval"):
        code, out = eval_cli(command, f"RUN={run}", timeout=60)
        assert code == 2 and last_line(out).startswith(f"error: {run} has no complete checkpoint")


@pytest.mark.parametrize(
    ("args", "message"),
    [(["analyze", "ITER=7"], "error: no checkpoint iter_7"),
     (["eval", "ITER=3,5"], "error: no checkpoint iter_3"),
     (["analyze", "SAMPLES=0"], "error: SAMPLES must be a positive integer"),
     (["analyze", "VALID=maybe"], "error: VALID must be"),
     (["analyze", "ALPHA=0"], "error: ALPHA must be a positive number"),
     (["analyze", "FORCE=yes"], "error: FORCE must be 0 or 1"),
     (["analyze", "DEVICE=gpu"], "error: DEVICE must be cpu or cuda, got 'gpu'"),
     (["eval", "DEVICE=tpu"], "error: DEVICE must be cpu or cuda, got 'tpu'"),
     (["analyze", "TASKS=x"], "error: unknown setting 'TASKS=x' for analyze"),
     (["export", "DTYPE=fp8"], "error: DTYPE must be"),
     (["frobnicate"], "error: unknown command 'frobnicate'")],
)  # fmt: skip
def test_bad_settings(tmp_path, args, message):
    run = fake_run(tmp_path)
    code, out = eval_cli(*args, f"RUN={run}", timeout=60)
    assert code == 2 and last_line(out).startswith(message), out


def test_make_targets_pass_settings_and_report_errors(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("no make")
    code, out = run_checked(["make", "-s", "-C", str(REPO), "analyze", f"RUN={tmp_path / 'x'}",
                             "ITER=5"], timeout=120)  # fmt: skip
    assert code != 0 and f"error: run directory {tmp_path / 'x'} does not exist" in out


def test_lm_eval_side_never_patches_torch():
    """cpu_compat.enable() before transformers loads a model leaves HF Llama's rotary inv_freq
    buffer uninitialised (seen: wrong, even NaN, lm-eval results): the harness must not import
    the Megatron side (eval.megatron_io) at all."""
    code = ("import eval.cli, eval.harness, eval.export, eval.taskdata, eval.plots, eval.analyze; "
            "from megatron_ext import cpu_compat; import sys; "
            "sys.exit(3 if cpu_compat.is_enabled() or 'eval.megatron_io' in sys.modules else 0)")  # fmt: skip
    rc, out = run_checked([sys.executable, "-c", code], timeout=120)
    assert rc == 0, out[-3000:]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["BATCH=big"], "error: BATCH must be an integer, got 'big'"),
     (["DTYPE=fp8"], "error: DTYPE must be one of float32, bfloat16, float16, got 'fp8'"),
     (["NUM_FEWSHOT=-1"], "error: NUM_FEWSHOT must be"),
     (["KEEP_EXPORTS=2"], "error: KEEP_EXPORTS must be 0 or 1"),
     (["MODEL=/no/such/model"], "error: MODEL=/no/such/model: no such folder"),
     (["MODEL=org/name", "ITER=5"], "error: ITER applies to RUN=, not MODEL=")],
)  # fmt: skip
def test_bad_eval_settings_in_process(tmp_path, capsys, args, message):
    """The settings make eval adds are checked before any file is read or written."""
    from eval.cli import main

    assert main(["eval", f"OUT={tmp_path}", *args]) == 2
    assert last_line(capsys.readouterr().err).startswith(message)
    assert not list(tmp_path.iterdir())


def test_eval_model_is_a_baseline_column_with_lm_evals_defaults(tmp_path):
    """MODEL=<folder> with RUN=: the run gives the local tasks' text and the table; a model that
    is not our export keeps lm-eval's tokenizer defaults (its own BOS convention)."""
    from eval.cli import _eval_source, parse_settings
    from eval.harness import HarnessConfig, _targets
    from eval.lm_models import lm_args

    run = fake_run(tmp_path)
    model = tmp_path / "Baseline-1B"
    model.mkdir()
    (model / "config.json").write_text("{}")
    s = parse_settings("eval", [f"MODEL={model}", f"RUN={run}"])
    source, iterations, out = _eval_source(s)
    assert (source.path, iterations, out) == (run, [], run)
    cfg = HarnessConfig(iterations=[], out_dir=out, model=str(model))
    (target,) = _targets(source, cfg, print)
    assert (target.label, target.folder, target.export) == ("model-Baseline-1B",) * 2 + ({},)
    args = lm_args(target, device="cpu", dtype="float32", batch_size="auto")
    assert "add_bos_token" not in args and "prefix_token_id" not in args


def test_old_local_task_names_still_run_under_the_new_ones(tmp_path):
    from eval.harness import HarnessConfig

    cfg = HarnessConfig(iterations=[], out_dir=tmp_path, tasks=["heldout_lambada", "hellaswag"])
    assert cfg.tasks == ["heldout_lastword", "hellaswag"]
    assert HarnessConfig(iterations=[], out_dir=tmp_path).tasks == [
        "heldout_lastword", "heldout_perplexity"]  # fmt: skip
