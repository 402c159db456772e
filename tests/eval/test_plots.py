"""make plots: figures from files only (a copy without checkpoints or command.txt suffices)."""

from __future__ import annotations

import shutil

import pytest

from tests.eval.conftest import eval_cli, eval_ok

pytestmark = pytest.mark.slow
PNG = b"\x89PNG"
FIGURES = ["jump_growth.png", "S_model.png", "training.png", "D_per_layer.png", "logit_lens.png",
           "activations.png"]  # fmt: skip


def test_plots_from_copied_files_and_overlay(analyzed, tmp_path):
    run, _ = analyzed
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(run / "metrics.jsonl", copy)
    shutil.copy(run / "analysis.jsonl", copy)
    out = eval_ok("plots", f"RUN={copy}")
    for name in FIGURES:
        data = (copy / "plots" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 20_000, name
        assert f"wrote {copy / 'plots' / name}" in out
    # baseline vs JREG style overlay: RUN2 adds a run, figures go to the first run's plots/
    training_only = tmp_path / "training_only"
    training_only.mkdir()
    shutil.copy(run / "metrics.jsonl", training_only)
    eval_ok("plots", f"RUN={copy}", f"RUN2={training_only}", f"OUT={tmp_path / 'both'}")
    for name in FIGURES:
        assert (tmp_path / "both" / name).stat().st_size > 20_000, name
    overlaid = (tmp_path / "both" / "training.png").read_bytes()
    assert overlaid != (copy / "plots" / "training.png").read_bytes()  # two runs drawn


def test_plots_without_files_fail_cleanly(tmp_path):
    (tmp_path / "empty").mkdir()
    code, out = eval_cli("plots", f"RUN={tmp_path / 'empty'}")
    assert code == 2 and out.strip().splitlines()[-1].startswith("error: nothing to plot")
