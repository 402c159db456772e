"""A regulariser is one new file: dropped into megatron_ext/regularizers/, ``REG=<its name>`` trains
through ``make pretrain``'s launcher over TP=2 and PP=2, and its logged loss (unscaled and scaled)
equals an independent single-process reference of the same model at iteration 1."""

from __future__ import annotations

import shutil
import sys
import uuid

import pytest
import torch

from tests.helpers import REPO, run_checked
from tests.test_pretrain import read_metrics, train_lines

# the repository's code, copied without what is large or generated
COPY_IGNORE = shutil.ignore_patterns(".venv", ".git", ".tools", "runs", "data", "__pycache__",
                                     ".ruff_cache", ".pytest_cache")  # fmt: skip
LAMBDA = 0.5
PLUGIN = '''"""Test plug-in: the squared relative change |h_l - h_{{l-1}}|^2 / |h_{{l-1}}|^2 per token."""

from megatron_ext.regularizers import register


@register("{name}", help="squared relative L2 change (written by a test, removed after it)")
def {name}(h_in, h_out):
    a, b = h_in.float(), h_out.float()
    return (b - a).pow(2).sum(-1) / a.pow(2).sum(-1).clamp_min(1e-8)
'''


def plugin_formula(h_in: torch.Tensor, h_out: torch.Tensor) -> torch.Tensor:
    """The plug-in's formula, written again here in float64 (per token)."""
    return ((h_out - h_in).norm(dim=-1) / h_in.norm(dim=-1)).square()


@pytest.fixture
def plugin(tmp_path):
    """A copy of the repository's code with the plug-in file dropped into its
    megatron_ext/regularizers/: the other tests (maybe running beside this one on another
    xdist worker) never see the extra regulariser. Returns (copy, name)."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=COPY_IGNORE)
    name = f"plugtest_{uuid.uuid4().hex[:8]}"
    (copy / "megatron_ext" / "regularizers" / f"{name}.py").write_text(PLUGIN.format(name=name))
    return copy, name


def train_in(copy, run_dir, **settings) -> list[dict]:
    cmd = [sys.executable, "-m", "launcher", f"RUN={run_dir}"]
    code, out = run_checked(cmd + [f"{k}={v}" for k, v in settings.items()], 600, cwd=copy,
                            PYTHONPATH=str(copy))  # fmt: skip
    assert code == 0, out[-5000:]
    return train_lines(read_metrics(run_dir))


@pytest.mark.slow
def test_dropped_in_regulariser_trains_over_tp2_and_pp2(
    tmp_path, smoke_data, plugin, reference_values
):
    copy, name = plugin
    listed = [
        sys.executable,
        "-c",
        "from megatron_ext import regularizers as r; print(r.choices())",
    ]
    code, out = run_checked(listed, 60, cwd=copy, PYTHONPATH=str(copy))
    assert code == 0 and name in out, out  # the launcher's list: read from the files
    settings = dict(DATA=smoke_data, REG=name, LAMBDA=LAMBDA, ITERS=3, LOG_INTERVAL=1, SAVE_INTERVAL=100,
                    NPROC=2)  # fmt: skip
    runs = {
        run: train_in(copy, tmp_path / run, **layout, **settings)
        for run, layout in (("tp2", {"TP": 2}), ("pp2", {"PP": 2}))
    }
    ref, hidden_path = reference_values  # the same model, batch and 3-iteration schedule
    hidden = torch.load(hidden_path)
    num_layers = len(hidden[0]) - 1
    r_ref = [
        float(torch.stack([plugin_formula(h[i], h[i + 1]).mean() for h in hidden]).mean())
        for i in range(num_layers)
    ]
    expected = sum(r / num_layers for r in r_ref)  # WEIGHTS=uniform
    assert expected > 1e-3  # not a vacuous comparison
    for run, lines in runs.items():
        assert [x["iteration"] for x in lines] == [1, 2, 3], run
        first = lines[0]
        assert first["lm_loss"] == pytest.approx(ref["lm_loss"], rel=1e-5), run
        assert first["D"] == pytest.approx(ref["D"], rel=1e-5), run  # Psi is tracked too
        assert first["R"] == pytest.approx(r_ref, rel=1e-5), run  # and the regulariser per layer
        assert first["jreg_loss"] == pytest.approx(expected, rel=1e-5), run
        assert first["jreg_loss_scaled"] == pytest.approx(LAMBDA * expected, rel=1e-5), run
    # the penalty's gradient reaches the weights alike in both layouts (step 2 has lr > 0)
    for a, b in zip(runs["tp2"], runs["pp2"], strict=True):
        assert b["lm_loss"] == pytest.approx(a["lm_loss"], rel=1e-4)
        assert b["jreg_loss"] == pytest.approx(a["jreg_loss"], rel=1e-4)
