"""make analyze on real checkpoints: one analysis.jsonl line per checkpoint, training's validation
passes replayed exactly (TP=1 and a TP=2 x PP=2 checkpoint resharded onto one process), consistent
held-out metrics, re-runs that skip analysed checkpoints."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from tests.eval.conftest import eval_cli, eval_ok, read_jsonl

pytestmark = pytest.mark.slow
RTOL = 1e-5


def assert_matches_logged(line: dict, logged: dict, rtol: float = RTOL) -> None:
    """Our validation-pass measurements equal the metrics.jsonl line (checked here, not by the
    tool)."""
    for key in ("lm_loss", "jump_ratio", "S_model", "jreg_loss"):
        assert line[key] == pytest.approx(logged[key], rel=rtol), key
    assert line["D"] == pytest.approx(logged["D"], rel=rtol)


def new_format(run) -> bool:
    """metrics.jsonl names each validation pass (eval_pass)."""
    return any("eval_pass" in x for x in read_jsonl(run / "metrics.jsonl"))


def logged_pass(run, valid_pass: int, iteration: int) -> dict:
    valid = [x for x in read_jsonl(run / "metrics.jsonl") if x.get("split") == "valid"]
    if new_format(run):
        return [x for x in valid if x["eval_pass"] == valid_pass][-1]
    return next(x for x in valid if x["iteration"] == iteration)


def by_iteration(path) -> dict[int, dict]:
    return {x["iteration"]: x for x in read_jsonl(path)}


def test_one_line_per_checkpoint_replays_validation_pass(analyzed):
    run, out = analyzed
    lines = read_jsonl(run / "analysis.jsonl")
    assert [x["iteration"] for x in lines] == [5, 10]
    assert [x["tokens_seen"] for x in lines] == [5 * 8 * 128, 10 * 8 * 128]  # gbs 8, seq 128
    valid = lines[0]["valid"]
    assert valid["pass"] == 1 and "logged_note" not in valid
    assert_matches_logged(valid, logged_pass(run, 1, 5))
    assert valid["max_rel_diff_vs_logged"] < RTOL
    assert "pass 1 vs metrics.jsonl: max rel diff" in out and "analyze: 100%" in out


def test_last_iteration_pass(analyzed):
    """Pass 2 ran after iteration 10, the last one. metrics.jsonl with eval_pass logs it alone;
    the older format pooled it with the final and test passes, which analysis flags."""
    run, _ = analyzed
    valid = by_iteration(run / "analysis.jsonl")[10]["valid"]
    assert valid["pass"] == 2
    if new_format(run):
        assert "logged_note" not in valid
        assert_matches_logged(valid, logged_pass(run, 2, 10))
    else:
        assert "logged_note" in valid


def test_heldout_measurements_are_complete_and_consistent(analyzed):
    run, _ = analyzed
    lines = read_jsonl(run / "analysis.jsonl")
    for line in lines:
        assert line["settings"] == {"split": "test", "samples": 16, "alpha": 0.8, "valid": "auto"}
        assert line["num_sequences"] == 16 and line["num_tokens"] == 16 * 128
        assert len(line["D"]) == len(line["rel_l2"]) == 4 and len(line["hidden_norm"]) == 5
        lens = line["lens"]
        assert set(lens) == {"loss", "acc", "ppl", "kl_to_final", "agree_with_final"}
        assert all(len(v) == 5 and all(math.isfinite(x) for x in v) for v in lens.values())
        assert lens["ppl"] == pytest.approx([math.exp(x) for x in lens["loss"]])
        # the lens of h_L is the model's own output
        assert lens["loss"][-1] == pytest.approx(line["lm_loss"], rel=1e-5)
        assert lens["kl_to_final"][-1] == pytest.approx(0.0, abs=1e-6)
        assert lens["agree_with_final"][-1] == 1.0
        assert 0.0 <= line["S_model"] <= 1.0
        assert line["zeta_L"] == pytest.approx(100 * max(0.0, line["D"][-1] - line["D"][-2]))
        massive = line["massive"]
        assert massive["num_activations"] == [16 * 128 * 128] * 5  # tokens x hidden, h_0..h_L
        for top, median in zip(massive["top"], massive["median"], strict=True):
            assert len(top) == 3 and top == sorted(top, reverse=True) and top[-1] >= median > 0
        assert all(n >= 0 for n in massive["num_over_100"] + massive["num_over_1000x_median"])
        assert massive["num_sequences"] == 16 and "Sun et al. 2024" in massive["definition"]
        assert line["zeta_L"] == pytest.approx(100 * max(0.0, line["D"][-1] - line["D"][-2]))
        depth = line["decision_depth"]
        assert 0 < sum(depth["num_tokens"].values()) <= 16 * 128  # loss-masked tokens
        assert all(len(h) == 5 for h in depth["hist"].values())
        voids = line["voids"]
        rate = voids["layer_rate"]
        assert voids["alpha"] == 0.8 and len(rate) == 4
        assert all(0.0 <= r <= 1.0 for r in rate)
        assert voids["active_fraction"] == pytest.approx(sum(rate) / 4)
        assert "massive" not in line["valid"] and "voids" in line["valid"]
    assert lines[0]["D"] != lines[1]["D"]  # two different checkpoints were loaded
    assert lines[1]["lm_loss"] < lines[0]["lm_loss"]  # training helped on held-out text


def test_rerun_skips_other_settings_refused_force_redoes(analyzed):
    run, _ = analyzed
    before = (run / "analysis.jsonl").read_text()
    out = eval_ok("analyze", f"RUN={run}", "SAMPLES=16")
    assert "skipping iterations [5, 10]" in out and "analyze:" not in out
    assert (run / "analysis.jsonl").read_text() == before
    code, out = eval_cli("analyze", f"RUN={run}", "SAMPLES=16", "ALPHA=0.5")
    assert code == 2 and "other settings" in out.strip().splitlines()[-1]


def test_wrong_batches_do_not_match_and_force(eval_run, tmp_path):
    """The comparison can fail: checkpoint 5 on validation pass 2 differs from the pass-1 log.
    FORCE=1 then redoes the checkpoint with another alpha."""
    eval_ok("analyze", f"RUN={eval_run}", "ITER=5", "VALID=2", "SAMPLES=4", f"OUT={tmp_path}")
    valid = read_jsonl(tmp_path / "analysis.jsonl")[0]["valid"]
    assert valid["pass"] == 2 and "logged" not in valid
    with pytest.raises(AssertionError):
        assert_matches_logged(valid, logged_pass(eval_run, 1, 5), rtol=1e-3)
    eval_ok("analyze", f"RUN={eval_run}", "ITER=5", "VALID=off", "SAMPLES=4", "ALPHA=2",
            "FORCE=1", f"OUT={tmp_path}")  # fmt: skip
    (line,) = read_jsonl(tmp_path / "analysis.jsonl")
    assert line["voids"]["alpha"] == 2.0 and "valid" not in line


def test_damaged_checkpoint_is_one_line(eval_run, tmp_path):
    """A truncated shard fails inside torch.distributed.checkpoint with a CheckpointException (a
    BaseException, not an Exception): still one line naming the checkpoint, no traceback."""
    run = tmp_path / "copy"
    shutil.copytree(eval_run, run)
    shard = sorted((run / "checkpoints" / "iter_0000005").glob("*.distcp"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    code, out = eval_cli("analyze", f"RUN={run}", "ITER=5", "SAMPLES=4", f"OUT={tmp_path}")
    last = out.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in out, out[-3000:]
    assert (
        last.startswith(f"error: cannot load {run}/checkpoints/iter_0000005 (") and "ITER=" in last
    )


def test_tp2_pp2_checkpoint_replays_its_validation_pass(tp_pp_run, tmp_path):
    eval_ok("analyze", f"RUN={tp_pp_run}", "ITER=2", "SAMPLES=4", f"OUT={tmp_path}")
    valid = read_jsonl(tmp_path / "analysis.jsonl")[0]["valid"]
    assert valid["pass"] == 1
    assert_matches_logged(valid, logged_pass(tp_pp_run, 1, 2))
    assert json.loads((tp_pp_run / "launch.json").read_text())["size"] == "tiny"
