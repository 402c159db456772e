"""make eval: the real lm-eval on the HF export, local held-out tasks, clear errors for others."""

from __future__ import annotations

import csv
import json
import math
import shutil
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
            record["results"]["heldout_lastword"],
            record["results"]["heldout_perplexity"],
        )
        assert 0.0 <= lambada["acc,none"] <= 1.0 and math.isfinite(lambada["perplexity,none"])
        # an almost untrained 1k-vocab model: between 1 bit and log2(vocab) bits per byte-ish
        assert 1.0 < wikitext["bits_per_byte,none"] < 10.0
        assert "heldout_perplexity" in (folder / "table.md").read_text()
        assert (record["limit"], record["add_bos_token"]) == (16, False)  # BOS as in training
    # the task x iteration table (CSV, Markdown) and its plot
    rows = list(csv.DictReader((tp_pp_run / "lm_eval" / "scores.csv").open()))
    assert list(rows[0]) == ["task", "metric", "docs", "2", "3"]
    assert {(r["task"], r["metric"]) for r in rows} >= {
        ("heldout_lastword", "acc"), ("heldout_lastword", "perplexity"),
        ("heldout_perplexity", "bits_per_byte")}  # fmt: skip
    assert all(math.isfinite(float(r[c])) for r in rows for c in ("2", "3"))
    md = (tp_pp_run / "lm_eval" / "scores.md").read_text()
    assert md.startswith("| task | metric | docs | iter 2 ") and "| heldout_lastword | acc |" in md
    assert "Scores on a sample: LIMIT=16 documents per task" in md
    assert (tp_pp_run / "lm_eval" / "scores.png").stat().st_size > 20_000
    passages = read_jsonl(tp_pp_run / "lm_eval" / "tasks" / "heldout_lastword.jsonl")
    assert passages and all(p["text"].split(" ")[-1].isalpha() for p in passages)
    for p in passages:  # LAMBADA-style targets: content words the passage already used
        *context, target = p["text"].split(" ")
        assert target.lower() not in STOP_WORDS and target.lower() in " ".join(context).lower()
    assert (
        "test_text_document"
        not in (tp_pp_run / "lm_eval" / "tasks" / "heldout_perplexity.yaml").read_text()
    )


def test_unknown_and_hub_tasks_fail_with_one_line(tp_pp_run, exported):
    code, out = eval_cli(
        "eval", f"RUN={tp_pp_run}", "ITER=2", "TASKS=heldout_lastword,no_such_task"
    )
    assert code == 2 and out.strip().splitlines()[-1].startswith(
        "error: unknown task 'no_such_task'"
    )
    start = time.perf_counter()
    code, out = eval_cli("eval", f"RUN={tp_pp_run}", "ITER=2", "TASKS=lambada_openai")
    last = out.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: lm-eval task 'lambada_openai' could not load")
    assert "Traceback" not in out and time.perf_counter() - start < 120


def test_researcher_settings_keep_exports_and_log(tp_pp_run, exported, tmp_path):
    """NUM_FEWSHOT (where the task allows it), DTYPE, BATCH=auto and LIMIT are applied and
    recorded; KEEP_EXPORTS=0 deletes the export once scored; the libraries' output goes to the
    log, not the console. (MODEL= takes the same path with lm-eval's defaults: test_cli.py.)"""
    out = tmp_path / "out"
    shutil.copytree(exported, out / "hf" / "iter_0000002")  # an export to score, then delete
    log = eval_ok("eval", f"RUN={tp_pp_run}", "ITER=2", f"OUT={out}", "KEEP_EXPORTS=0",
                  "TASKS=heldout_lastword,heldout_perplexity", "LIMIT=2", "DOCS=10",
                  "NUM_FEWSHOT=1", "DTYPE=bfloat16", "BATCH=auto")  # fmt: skip
    assert not (out / "hf" / "iter_0000002").exists() and "KEEP_EXPORTS=0: deleted" in log
    record = json.loads((out / "lm_eval" / "iter_0000002" / "results.json").read_text())
    assert record["n-shot"] == {"heldout_lastword": 1, "heldout_perplexity": 0}
    assert (record["dtype"], record["batch_size"], record["limit"]) == ("bfloat16", "auto", 2)
    assert "Scores on a sample: LIMIT=2 documents per task" in log
    assert "Transformer Engine" not in log and "Traceback" not in log
    logs = list((out / "lm_eval" / "logs").glob("eval-*.log"))
    assert len(logs) == 1 and "Generating test split" in logs[0].read_text()
