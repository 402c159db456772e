"""make plots with HF-model lines (no tokens seen) next to a run: the common-depth figures."""

from __future__ import annotations

import json

from eval.plots import plot_runs

BUCKETS = ["top10", "top100", "rest"]


def line(num_layers: int, tokens_seen: int | None, iteration: int) -> dict:
    states = num_layers + 1
    d = [0.1 + 0.01 * i for i in range(num_layers - 1)] + [0.4]
    per_bucket = {b: [1.0 / states] * states for b in BUCKETS}
    return {
        "iteration": iteration, "tokens_seen": tokens_seen, "D": d, "jump_ratio": 2.0,
        "S_model": 0.5, "zeta_L": 100 * (d[-1] - d[-2]),
        "lens": {"acc": [0.1] * states, "ppl": [50.0] * states},
        "massive": {"top": [[3.0, 2.0, 1.0]] * states, "median": [0.5] * states},
        "voids": {"alpha": 0.8, "layer_rate": [0.9] * num_layers},
        "decision_depth": {"buckets": BUCKETS, "hist": per_bucket, "guess_share": per_bucket,
                           "overturned": per_bucket, "num_tokens": dict.fromkeys(BUCKETS, 5.0),
                           "mean": dict.fromkeys(BUCKETS, 1.0)},
    }  # fmt: skip


def test_runs_and_models_on_one_depth_axis(tmp_path):
    run, model = tmp_path / "run", tmp_path / "hf_model"
    for folder, lines in (
        (run, [line(4, 1000, 5), line(4, 2000, 10)]),
        (model, [line(16, None, 0)]),
    ):
        folder.mkdir()
        (folder / "analysis.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    written = plot_runs([run, model], tmp_path / "out")
    names = [p.name for p in written]
    assert "depth_profile.png" in names and "decision_depth.png" in names
    assert "jump_growth.png" in names  # the run's checkpoints; the model has no tokens axis
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 10_000
    only_model = plot_runs([model], tmp_path / "out2")
    assert "jump_growth.png" not in [p.name for p in only_model]
