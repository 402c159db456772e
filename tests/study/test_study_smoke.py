"""``make study`` shortened (tiny, 4 iterations, one extra seed): every stage, then a re-run that
redoes nothing, and the report's numbers equal the run files'."""

from __future__ import annotations

import json
import sys

import pytest

from study.reading import fmt
from tests.helpers import REPO, run_checked

# 20 processes (five trainings, analyses, exports and lm-eval runs), each paying Megatron's or
# lm-eval's start-up: longer than the suite's 300 s default timeout
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
RUNS = ["none", "jreg", "jreg-final", "none-seed1235", "jreg-seed1235"]


def read_jsonl(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_study_smoke_all_stages_then_resume(tmp_path, smoke_data):
    root, doc = tmp_path / "runs", tmp_path / "docs" / "study.md"
    settings = ["SIZE=tiny", "ITERS=4", "SAVE_INTERVAL=2", "SEEDS=1235", "SAMPLES=4",
                "LIMIT=2", "DOCS=20", f"DATA={smoke_data}", f"ROOT={root}", f"DOC={doc}"]  # fmt: skip
    code, out = run_checked(["make", "-s", "-C", str(REPO), "study", *settings], timeout=1200)
    assert code == 0, out[-5000:]
    for name in RUNS:
        run = root / name
        tracker = run / "checkpoints" / "latest_checkpointed_iteration.txt"
        assert tracker.read_text().strip() == "4", name
        analysed = [x["iteration"] for x in read_jsonl(run / "analysis.jsonl")]
        assert analysed == ([2, 4] if name in RUNS[:3] else [4]), name  # seeds: last only
        assert (run / "lm_eval" / "iter_0000004" / "results.json").is_file(), name
        assert all("zeta_L" in x for x in read_jsonl(run / "metrics.jsonl"))
    assert (root / "plots" / "jump_growth.png").stat().st_size > 10_000
    log = read_jsonl(root / "study_log.jsonl")
    assert sorted(x["run"] for x in log if x["stage"] == "train") == sorted(RUNS)
    assert all(x["returncode"] == 0 for x in log)
    text = doc.read_text()
    for png in ("jump_over_tokens.png", "D_per_layer.png"):
        assert (doc.parent / "study" / png).read_bytes().startswith(b"\x89PNG")
    last = read_jsonl(root / "none" / "analysis.jsonl")[-1]
    row = f"| none | 4 | 4096 | {fmt(last['valid']['lm_loss'])} |"
    assert row in text and f"| {fmt(last['D'][-1])} | {fmt(last['zeta_L'])} |" in text
    assert "| 1235 | none | none-seed1235 |" in text and "| D_L | 2 |" in text  # 2 pairs
    assert "D_L grows monotonically over checkpoints: " in text
    assert "Final-only moves the jump to layer L-1 = 3: " in text
    assert "heldout_lastword acc" in text
    mtimes = {p: p.stat().st_mtime for p in root.glob("*/checkpoints/iter_*/*")}

    # again, with a pilot: nothing is retrained, analysed or evaluated a second time (the plots
    # stage, which always redraws, is left out: two plot processes that nothing below reads)
    code, out = run_checked([sys.executable, "-m", "study", *settings, f"PILOTS={root / 'none'}",
                             "STAGES=train,analyze,eval,report"], timeout=240)  # fmt: skip
    assert code == 0, out[-5000:]
    for name in RUNS:
        assert f"study: train {name}: finished at iteration 4, not redone" in out
        assert f"study: eval {name}: iteration 4 already evaluated" in out
    assert out.count("already analysed") == 5 and "-m launcher" not in out
    assert mtimes == {p: p.stat().st_mtime for p in root.glob("*/checkpoints/iter_*/*")}
    assert "| none | 4 x 128 | 4 / 4 |" in doc.read_text()  # the Pilots section
