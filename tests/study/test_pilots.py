"""The pilot rule (study/pilots.py) and AT= (compare runs at one iteration) on hand-made numbers."""

from __future__ import annotations

import json

from study.pilots import choose, grid
from study.report import write_report
from study.settings import parse

LAYERS, SEEDS, LAMBDAS = [12, 16, 24], [1, 2], [0.3, 1.0, 3.0]
JUMP, FLAT = [0.4, 0.01, 0.02], [0.4, 0.02, 0.01]


def numbers(jumps: dict[int, list[bool]], losses: dict[float, float]) -> dict:
    out = {f"L{n}-none-seed{s}": {"D": JUMP if j else FLAT, "val_loss": 5.0}
           for n, js in jumps.items() for s, j in zip(SEEDS, js, strict=True)}  # fmt: skip
    for n in jumps:
        out |= {f"L{n}-jreg-l{lam:g}": {"D": FLAT, "val_loss": v} for lam, v in losses.items()}
    return out


def test_grid_names_every_run_once():
    runs = grid(LAYERS, SEEDS, LAMBDAS)
    assert len({r["name"] for r in runs}) == len(runs) == 3 * 2 + 3 * 3
    assert {r["seed"] for r in runs if r["reg"] == "jreg"} == {1}


def test_depth_with_most_jumps_wins_ties_go_shallower():
    losses = {0.3: 5.0, 1.0: 5.04, 3.0: 5.2}
    c = choose(numbers({12: [True, False], 16: [True, True], 24: [True, True]}, losses),
               LAYERS, SEEDS, LAMBDAS)  # fmt: skip
    assert c["layers"] == 16 and c["jump_counts"] == {12: 1, 16: 2, 24: 2}
    assert c["lambda"] == 1.0  # +0.8% is within 1%, 3.0's +4% is not
    assert "LAMBDA 3: validation loss +4.00% vs REG=none (over 1%)" in c["why"]


def test_no_jump_keeps_the_first_depth_and_no_affordable_lambda_takes_the_smallest():
    c = choose(numbers({12: [False, False], 16: [False, False]}, {0.3: 5.1, 1.0: 5.2}),
               LAYERS, SEEDS, LAMBDAS)  # fmt: skip
    assert c["layers"] == 12 and c["lambda"] == 0.3
    assert "chosen depth: 12 (no depth showed the jump: kept)" in c["why"]
    assert "LAMBDA 3: not finished" in c["why"]  # the 24-layer and 3.0 runs are missing


def test_at_compares_runs_stopped_at_different_points(tmp_path):
    """Runs cut by a time limit past iteration 20 are paired at AT=20; without AT= they are
    unfinished and left out of the seed statistics."""
    root, doc = tmp_path / "runs", tmp_path / "study.md"
    for name, d_l, stop in (("none", 0.02, 35), ("jreg", 0.01, 28)):
        run = root / name
        run.mkdir(parents=True)
        lines = [{"iteration": i, "split": "valid", "lm_loss": 5.0, "tokens": i * 10,
                  "D": [0.4, 0.01, d_l + i / 1000], "zeta_L": 0.0, "jump_ratio": 1.0,
                  "S_model": 0.9} for i in (10, 20)]  # fmt: skip
        lines.append({"iteration": stop, "tokens": stop * 10, "lm_loss": 4.0, "D": [0.4, 0.1, 0.9]})
        (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        (run / "command.txt").write_text("python -m megatron_ext.train --train-iters 40\n")
    base = [f"ROOT={root}", f"DOC={doc}", "SEEDS=none"]
    write_report(parse(base))
    assert "| 1234 | none |" not in doc.read_text()  # stopped before 40: not paired
    write_report(parse([*base, "AT=20"]))
    text = doc.read_text()
    assert "Compared at iteration 20 (`AT=20`)" in text
    assert (
        "| 1234 | none | none | 5 | 0.04 |" in text and "| 1234 | jreg | jreg | 5 | 0.03 |" in text
    )
