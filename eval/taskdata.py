"""Data for the local lm-eval tasks (``eval/tasks/*.yaml``), built from a run's held-out split.

The test split's documents are read from its ``.bin/.idx`` with Megatron's ``IndexedDataset`` and
detokenized with the dataset's own tokenizer, so the tasks measure text the model never trained
on, in the run's language and domain (no hub download). Written to ``<tasks_dir>/``:

* ``heldout_wikitext.jsonl``: ``{"page": document}`` per document (rolling perplexity);
* ``heldout_lambada.jsonl``: ``{"text": passage}``, consecutive passages of at least
  ``MIN_WORDS`` whitespace-separated words ending on an alphabetic word, which is the target
  (words re-joined by single spaces, as in LAMBADA);
* one YAML per task: the shipped definition with ``data_files`` made absolute.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from eval.rundir import EvalError, RunDir

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
LOCAL_TASKS = tuple(sorted(p.stem for p in TASKS_DIR.glob("*.yaml")))
MIN_WORDS = 40
"""Shortest context of a last-word passage (words before the target)."""
MAX_WORDS = 150
"""Longest passage searched for a target before giving up on that stretch of text."""
_TARGET = re.compile(r"[A-Za-z]{2,}")


def documents(run: RunDir, split: str = "test", num_docs: int | None = None) -> list[str]:
    """The first ``num_docs`` non-empty documents of ``split``, detokenized."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(run.tokenizer_dir))
    ds = IndexedDataset(run.prefixes[split])
    texts = []
    for i in range(len(ds)):
        text = tokenizer.decode(ds[i].tolist(), skip_special_tokens=True)
        if text.strip():
            texts.append(text)
        if num_docs is not None and len(texts) >= num_docs:
            break
    return texts


def lastword_passages(text: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS):
    """Consecutive passages of ``text`` whose last word is an alphabetic target."""
    words = text.split()
    passages, start = [], 0
    while start + min_words < len(words):
        stop = min(len(words), start + max_words)
        end = next(
            (j for j in range(start + min_words + 1, stop + 1) if _TARGET.fullmatch(words[j - 1])),
            None,
        )
        if end is None:
            start = stop
            continue
        passages.append(" ".join(words[start:end]))
        start = end
    return passages


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def build_tasks(run: RunDir, tasks_dir: Path, num_docs: int) -> dict[str, int]:
    """Write the local tasks' data and bound YAMLs; returns documents per task."""
    docs = documents(run, "test", num_docs)
    rows = {
        "heldout_wikitext": [{"page": d} for d in docs],
        "heldout_lambada": [{"text": p} for d in docs for p in lastword_passages(d)],
    }
    tasks_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name in LOCAL_TASKS:
        if not rows.get(name):
            raise EvalError(f"the run's test split yields no documents for task {name}")
        data = tasks_dir / f"{name}.jsonl"
        _write_jsonl(data, rows[name])
        spec = yaml.safe_load((TASKS_DIR / f"{name}.yaml").read_text())
        spec["dataset_kwargs"]["data_files"] = {"test": str(data)}
        (tasks_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        counts[name] = len(rows[name])
    return counts
