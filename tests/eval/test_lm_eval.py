"""make eval: the real lm-eval on the HF export, local held-out tasks, clear errors for others."""

from __future__ import annotations

import csv
import json
import math
import time

import pytest

from eval.taskdata import STOP_WORDS
from tests.eval.conftest import eval_cli, eval_ok, read_jsonl

pytestmark = pytest.mark.slow


def test_local_tasks_run_offline_on_every_checkpoint(tp_pp_run, exported):
    out = eval_ok("eval", f"RUN={tp_pp_run}", "LIMIT=16", "BATCH=16")
    assert "exporting iterations [3] first" in out  # iter 2's export was reused
    for it in (2, 3):
        folder = tp_pp_run / "lm_eval" / f"iter_{it:07d}"
        record = json.loads((folder / "results.json").read_text())
        assert (record["iteration"], record["tokens_seen"]) == (it, it * 8 * 128)
        lambada, wikitext = (
            record["results"]["heldout_lambada"],
            record["results"]["heldout_wikitext"],
        )
        assert 0.0 <= lambada["acc,none"] <= 1.0 and math.isfinite(lambada["perplexity,none"])
        # an almost untrained 1k-vocab model: between 1 bit and log2(vocab) bits per byte-ish
        assert 1.0 < wikitext["bits_per_byte,none"] < 10.0
        assert "heldout_wikitext" in (folder / "table.md").read_text()
    # the task x iteration table (CSV, Markdown) and its plot
    rows = list(csv.DictReader((tp_pp_run / "lm_eval" / "scores.csv").open()))
    assert list(rows[0]) == ["task", "metric", "2", "3"]
    assert {(r["task"], r["metric"]) for r in rows} >= {
        ("heldout_lambada", "acc"), ("heldout_lambada", "perplexity"),
        ("heldout_wikitext", "bits_per_byte")}  # fmt: skip
    assert all(math.isfinite(float(r[c])) for r in rows for c in ("2", "3"))
    md = (tp_pp_run / "lm_eval" / "scores.md").read_text()
    assert md.startswith("| task | metric | iter 2 ") and "| heldout_lambada | acc |" in md
    assert (tp_pp_run / "lm_eval" / "scores.png").stat().st_size > 20_000
    passages = read_jsonl(tp_pp_run / "lm_eval" / "tasks" / "heldout_lambada.jsonl")
    assert passages and all(p["text"].split(" ")[-1].isalpha() for p in passages)
    for p in passages:  # LAMBADA-style targets: content words the passage already used
        *context, target = p["text"].split(" ")
        assert target.lower() not in STOP_WORDS and target.lower() in " ".join(context).lower()
    assert (
        "test_text_document"
        not in (tp_pp_run / "lm_eval" / "tasks" / "heldout_wikitext.yaml").read_text()
    )


def test_unknown_and_hub_tasks_fail_with_one_line(tp_pp_run, exported):
    code, out = eval_cli("eval", f"RUN={tp_pp_run}", "ITER=2", "TASKS=heldout_lambada,no_such_task")
    assert code == 2 and out.strip().splitlines()[-1].startswith(
        "error: unknown task 'no_such_task'"
    )
    start = time.perf_counter()
    code, out = eval_cli("eval", f"RUN={tp_pp_run}", "ITER=2", "TASKS=lambada_openai")
    last = out.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: lm-eval task 'lambada_openai' could not load")
    assert "Traceback" not in out and time.perf_counter() - start < 120
