"""make plots on hand-written run files (fast, no training): comparisons, warnings, axes."""

from __future__ import annotations

import json

import pytest

from eval import cli, plots

ITERS = (100, 200)


def metrics_line(iteration, **extra):
    d = [0.3, 0.02, 0.01, 0.015]
    return {"iteration": iteration, "tokens": iteration * 1024, "lm_loss": 9 - iteration / 100,
            "jreg_loss": 0.08, "jreg_loss_scaled": 0.008, "D": d, "jump_ratio": 1.5,
            "S_model": 0.8, **extra}  # fmt: skip


def analysis_line(iteration, scale):
    layers = 4
    return {
        "iteration": iteration, "tokens_seen": iteration * 1024, "lm_loss": 7.0,
        "D": [0.4 * scale, 0.01 * scale, 0.005 * scale, 0.008 * scale], "jump_ratio": 1.6,
        "S_model": 0.7,
        "lens": {"acc": [0.01 * scale * (i + 1) for i in range(layers + 1)],
                 "ppl": [1000.0 / scale / (i + 1) for i in range(layers + 1)]},
        "massive": {"top": [[5.0 * scale, 4.0, 3.0]] * (layers + 1),
                    "median": [0.5] * (layers + 1)},
        "voids": {"alpha": 0.8, "layer_rate": [1.0, 0.7, 0.6, 0.9]},
    }  # fmt: skip


def write_run(path, analysis_scale=None):
    path.mkdir(parents=True)
    lines = [metrics_line(i) for i in ITERS] + [
        metrics_line(200, split="valid", eval_pass=2),
        metrics_line(200, split="valid", eval_pass=3, after_training=True),
        metrics_line(200, split="test", after_training=True),
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if analysis_scale is not None:
        (path / "analysis.jsonl").write_text(
            "".join(json.dumps(analysis_line(i, analysis_scale)) + "\n" for i in ITERS)
        )
    return path


def test_comparison_goes_to_its_own_folder_and_names_missing_analysis(tmp_path, capsys):
    a = write_run(tmp_path / "a", analysis_scale=1.0)
    b = write_run(tmp_path / "b")  # trained, never analysed
    assert cli.main(["plots", f"RUN={a}"]) == 0
    single = {p.name: p.read_bytes() for p in (a / "plots").glob("*.png")}
    assert "D_per_layer.png" in single
    capsys.readouterr()
    assert cli.main(["plots", f"RUN={a}", f"RUN2={b}"]) == 0
    out, err = capsys.readouterr()
    compare = a / "plots" / "compare-a-b"
    assert f"wrote {compare / 'training.png'}" in out
    assert {p.name: p.read_bytes() for p in (a / "plots").glob("*.png")} == single  # untouched
    (warning,) = [x for x in err.splitlines() if x.startswith("warning:")]
    assert f"{b} has no analysis.jsonl" in warning and f"make analyze RUN={b}" in warning


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures plot_runs draws, by file name."""
    drawn = {}
    monkeypatch.setattr(plots, "finish", lambda fig, path, title: drawn.__setitem__(path.name, fig))
    return drawn


def test_per_layer_comparisons_share_axes_and_d_is_log_scale(tmp_path, figures):
    runs = [write_run(tmp_path / "a", 1.0), write_run(tmp_path / "b", 3.0)]
    plots.plot_runs(runs, tmp_path / "out")
    d_a, d_b = [ax for ax in figures["D_per_layer.png"].axes if ax.get_label() != "<colorbar>"][:2]
    assert d_a.get_yscale() == "log" and d_b.get_ylim() == d_a.get_ylim()
    # layer 2..4 values (0.005..0.03) are more than a decade below layer 1 (0.4..1.2) and visible
    low, high = d_a.get_ylim()
    assert low < 0.005 and high > 1.2
    acc_a, ppl_a, acc_b, ppl_b = figures["logit_lens.png"].axes
    assert acc_a.get_ylim() == acc_b.get_ylim() and ppl_a.get_ylim() == ppl_b.get_ylim()


def test_training_figure_labels_each_validation_kind(tmp_path, figures):
    plots.plot_runs([write_run(tmp_path / "a")], tmp_path / "out")
    loss = figures["training.png"].axes[0]
    labels = [line.get_label() for line in loss.get_lines()]
    assert labels == ["a: train", "a: validation, in training",
                      "a: validation after training (next batches)", "a: test, after training"]  # fmt: skip
