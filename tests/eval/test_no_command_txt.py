"""eval/ builds the model and the dataset from run_config.json: a trained run whose command.txt
is gone still analyses, exports and evaluates (command.txt is for humans)."""

from __future__ import annotations

import shutil

import pytest

from tests.eval.conftest import eval_ok


@pytest.mark.slow
def test_eval_targets_work_without_command_txt(tmp_path, eval_run):
    """A trained run whose command.txt is gone: analyze, export and eval read run_config.json."""
    run = tmp_path / "nocmd"
    shutil.copytree(eval_run, run, ignore=shutil.ignore_patterns("analysis.jsonl", "hf", "lm_eval"))
    (run / "command.txt").unlink()
    assert (run / "run_config.json").is_file()
    eval_ok("analyze", f"RUN={run}", "ITER=10", "SAMPLES=4", "VALID=off")
    assert (run / "analysis.jsonl").is_file()
    eval_ok("export", f"RUN={run}", "ITER=10")
    assert (run / "hf" / "iter_0000010" / "model.safetensors").is_file()
    eval_ok(
        "eval", f"RUN={run}", "ITER=10", "TASKS=heldout_lambada", "LIMIT=4", "DOCS=20"
    )  # an old name: still accepted
    assert (run / "lm_eval" / "scores.csv").is_file()
