"""make eval: the real lm-eval on the HF export, local held-out tasks, clear errors for others."""

from __future__ import annotations

import json
import math
import time

import pytest

from eval.taskdata import lastword_passages
from tests.eval.conftest import eval_cli, eval_ok, read_jsonl

pytestmark = pytest.mark.slow


def test_local_tasks_run_offline(tp_pp_run, exported):
    out = eval_ok("eval", f"RUN={tp_pp_run}", "ITER=2", "LIMIT=16", "BATCH=16")
    assert "exporting" not in out  # reused the existing export
    folder = tp_pp_run / "lm_eval" / "iter_0000002"
    results = json.loads((folder / "results.json").read_text())["results"]
    lambada, wikitext = results["heldout_lambada"], results["heldout_wikitext"]
    assert 0.0 <= lambada["acc,none"] <= 1.0 and math.isfinite(lambada["perplexity,none"])
    # an almost untrained 1k-vocab model: between 1 bit and log2(vocab) bits per byte-ish
    assert 1.0 < wikitext["bits_per_byte,none"] < 10.0
    assert "heldout_wikitext" in (folder / "table.md").read_text()
    passages = read_jsonl(tp_pp_run / "lm_eval" / "tasks" / "heldout_lambada.jsonl")
    assert passages and all(p["text"].split(" ")[-1].isalpha() for p in passages)
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


def test_lastword_passages_end_on_an_alphabetic_word():
    words = ["a1"] * 45 + ["Paris."] + ["b2"] * 10 + ["Rome"] + ["c3"] * 3
    assert lastword_passages(" ".join(words), min_words=40) == [" ".join(words[:57])]
    assert lastword_passages("too short text", min_words=40) == []
