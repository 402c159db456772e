"""make analyze on real checkpoints: it replays training's validation passes exactly (TP=1 and a
TP=2 x PP=2 checkpoint resharded onto one process) and its held-out metrics are consistent."""

from __future__ import annotations

import csv
import json
import math

import pytest

from tests.eval.conftest import eval_ok, read_jsonl

pytestmark = pytest.mark.slow
RTOL = 1e-5


def assert_matches_logged(line: dict, logged: dict, rtol: float = RTOL) -> None:
    """Our validation-pass line equals the metrics.jsonl line (checked here, not by the tool)."""
    for key in ("lm_loss", "jump_ratio", "S_model", "jreg_loss"):
        assert line[key] == pytest.approx(logged[key], rel=rtol), key
    assert line["D"] == pytest.approx(logged["D"], rel=rtol)


def logged_valid(run, iteration: int) -> dict:
    lines = read_jsonl(run / "metrics.jsonl")
    return next(x for x in lines if x.get("split") == "valid" and x["iteration"] == iteration)


def test_validation_pass_matches_training_log(analyzed):
    run, out = analyzed
    lines = read_jsonl(run / "analysis" / "iter_0000005.jsonl")
    valid = next(x for x in lines if x["sample"] == "valid:pass1")
    assert_matches_logged(valid, logged_valid(run, 5))
    assert valid["max_rel_diff_vs_logged"] < RTOL and "logged_note" not in valid
    assert "vs metrics.jsonl: max rel diff" in out


def test_last_iteration_line_is_flagged_as_pooled(analyzed):
    run, _ = analyzed
    valid = read_jsonl(run / "analysis" / "iter_0000010.jsonl")[1]
    assert valid["sample"] == "valid:pass2" and "logged_note" in valid


def test_heldout_lines_are_complete_and_consistent(analyzed):
    run, _ = analyzed
    heldout = [read_jsonl(run / "analysis" / f"iter_{i:07d}.jsonl")[0] for i in (5, 10)]
    for line in heldout:
        assert line["sample"] == "heldout:test:16" and line["num_sequences"] == 16
        assert len(line["D"]) == len(line["rel_l2"]) == 4 and len(line["hidden_norm"]) == 5
        lens = line["lens"]
        assert all(len(v) == 5 and all(math.isfinite(x) for x in v) for v in lens.values())
        # the lens of h_L is the model's own output
        assert lens["loss"][-1] == pytest.approx(line["lm_loss"], rel=1e-5)
        assert lens["kl_to_final"][-1] == pytest.approx(0.0, abs=1e-6)
        assert lens["agree_with_final"][-1] == 1.0
        assert 0.0 <= line["S_model"] <= 1.0
    assert heldout[0]["D"] != heldout[1]["D"]  # two different checkpoints were loaded
    assert heldout[1]["lm_loss"] < heldout[0]["lm_loss"]  # training helped on held-out text
    rows = list(csv.DictReader((run / "analysis" / "summary.csv").open()))
    assert [(r["iteration"], r["sample"][:5]) for r in rows] == [
        ("5", "heldo"), ("5", "valid"), ("10", "heldo"), ("10", "valid")]  # fmt: skip


def test_wrong_batches_do_not_match(eval_run, tmp_path):
    """The comparison can fail: checkpoint 5 on validation pass 2 differs from the pass-1 log."""
    eval_ok("analyze", f"RUN={eval_run}", "ITER=5", "VALID=2", "SAMPLES=4", f"OUT={tmp_path}")
    line = read_jsonl(tmp_path / "analysis" / "iter_0000005.jsonl")[1]
    assert line["sample"] == "valid:pass2" and "logged" not in line
    with pytest.raises(AssertionError):
        assert_matches_logged(line, logged_valid(eval_run, 5), rtol=1e-3)


def test_tp2_pp2_checkpoint_replays_its_validation_pass(tp_pp_run, tmp_path):
    eval_ok("analyze", f"RUN={tp_pp_run}", "ITER=2", "SAMPLES=4", f"OUT={tmp_path}")
    valid = read_jsonl(tmp_path / "analysis" / "iter_0000002.jsonl")[1]
    assert valid["sample"] == "valid:pass1"
    assert_matches_logged(valid, logged_valid(tp_pp_run, 2))
    assert json.loads((tp_pp_run / "launch.json").read_text())["size"] == "tiny"
