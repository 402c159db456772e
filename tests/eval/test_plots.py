"""make plots: figures from files only (a copy without checkpoints or command.txt suffices)."""

from __future__ import annotations

import shutil

import pytest

from tests.eval.conftest import eval_cli, eval_ok

pytestmark = pytest.mark.slow
PNG = b"\x89PNG"


def test_plots_from_copied_files_and_overlay(analyzed, tmp_path):
    run, _ = analyzed
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(run / "metrics.jsonl", copy)
    shutil.copytree(run / "analysis", copy / "analysis")
    out = eval_ok("plots", f"RUN={copy}")
    names = ["training.png", "jump_profile.png", "logit_lens.png"]
    for name in names:
        data = (copy / "plots" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 20_000, name
        assert f"wrote {copy / 'plots' / name}" in out
    eval_ok("plots", f"RUN={copy} {run}", f"OUT={tmp_path / 'both'}")
    assert all((tmp_path / "both" / name).is_file() for name in names)


def test_plots_without_files_fail_cleanly(tmp_path):
    (tmp_path / "empty").mkdir()
    code, out = eval_cli("plots", f"RUN={tmp_path / 'empty'}")
    assert code == 2 and out.strip().splitlines()[-1].startswith("error: nothing to plot")
