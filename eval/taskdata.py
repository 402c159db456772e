"""Data for the local lm-eval tasks (``eval/tasks/*.yaml``), built from a run's held-out split.

The test split's documents are read from its ``.bin/.idx`` (``eval.sequences.indexed_documents``:
no megatron-core import, ~2-5 s per ``make eval``) and detokenized with the dataset's own
tokenizer, so the tasks measure text the model never trained on, in the run's language and domain
(no hub download). Written to ``<tasks_dir>/``:

* ``heldout_perplexity.jsonl``: ``{"page": document}`` per document (rolling perplexity);
* ``heldout_lastword.jsonl``: ``{"text": passage}``, consecutive passages of at least
  ``MIN_WORDS`` whitespace-separated words of context and a target word (words re-joined by
  single spaces, as in LAMBADA). As in LAMBADA, the target is a content word that the passage
  makes predictable: the first word after ``MIN_WORDS`` words of context that is alphabetic (3+
  letters; trailing punctuation is dropped), not a stop word (``STOP_WORDS``) and already occurs
  in the context (case-insensitive). The next passage starts after the target;
* one YAML per task: the shipped definition with ``data_files`` made absolute.

The names say what the tasks are, a held-out sample of the run's own data, so that no one takes
the scores for the published LAMBADA or WikiText; results written under the first names
(``RENAMED``) are read under the new ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from common.files import atomic_write_text
from eval.rundir import EvalError, RunDir

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
LOCAL_TASKS = tuple(sorted(p.stem for p in TASKS_DIR.glob("*.yaml")))
RENAMED = {"heldout_lambada": "heldout_lastword", "heldout_wikitext": "heldout_perplexity"}
"""Old local task name -> new one."""
MIN_WORDS = 40
"""Shortest context of a last-word passage (words before the target)."""
MAX_WORDS = 150
"""Longest passage searched for a target before giving up on that stretch of text."""
_TARGET = re.compile(r"([A-Za-z]{3,})[.,;:!?'\")\]]*")
_EDGES = re.compile(r"^[^A-Za-z]+|[^A-Za-z]+$")
STOP_WORDS = frozenset(
    """
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had
has have having he her here hers herself him himself his how i if in into is it its itself just
may me might more most must my myself no nor not now of off on once only or other our ours
ourselves out over own same shall she should so some such than that the their theirs them
themselves then there these they this those through thus to too under until up upon us very was
we were what when where which while who whom why will with would yet you your yours yourself
yourselves one two thee thou thy thine ye unto hath doth shalt art
""".split()
)
"""Function words never used as targets (a guess from grammar alone, not from the passage)."""


def _norm(word: str) -> str:
    """A context word for the "occurs earlier" check: letters at the edges only, lower case."""
    return _EDGES.sub("", word).lower()


def documents(run: RunDir, split: str = "test", num_docs: int | None = None) -> list[str]:
    """The first ``num_docs`` non-empty documents of ``split``, detokenized (a blend: its
    members' documents one member after the other)."""
    from transformers import AutoTokenizer

    from eval.sequences import indexed_documents

    tokenizer = AutoTokenizer.from_pretrained(str(run.tokenizer_dir))
    texts = []
    for prefix in run.prefixes(split):
        ds = indexed_documents(prefix)
        for i in range(len(ds)):
            if num_docs is not None and len(texts) >= num_docs:
                return texts
            text = tokenizer.decode(ds[i].tolist(), skip_special_tokens=True)
            if text.strip():
                texts.append(text)
    return texts


def lastword_passages(text: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS):
    """Consecutive LAMBADA-style passages of ``text``: context, then a target word that is a
    content word (not in ``STOP_WORDS``) occurring earlier in the passage (module docstring)."""
    words = text.split()
    passages, start = [], 0
    while start + min_words < len(words):
        stop = min(len(words), start + max_words)
        seen = {_norm(w) for w in words[start : start + min_words]}
        target = None
        for j in range(start + min_words, stop):
            match = _TARGET.fullmatch(words[j])
            core = match[1] if match else ""
            if core and core.lower() not in STOP_WORDS and core.lower() in seen:
                target = j
                break
            seen.add(_norm(words[j]))
        if target is None:
            start = stop
            continue
        passages.append(" ".join([*words[start:target], core]))
        start = target + 1
    return passages


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    # atomic: the eval job's parallel lanes write the same files while others read them
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def build_tasks(run: RunDir, tasks_dir: Path, num_docs: int) -> dict[str, int]:
    """Write the local tasks' data and bound YAMLs; returns documents per task."""
    docs = documents(run, "test", num_docs)
    rows = {
        "heldout_perplexity": [{"page": d} for d in docs],
        "heldout_lastword": [{"text": p} for d in docs for p in lastword_passages(d)],
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
        atomic_write_text(tasks_dir / f"{name}.yaml", yaml.safe_dump(spec, sort_keys=False))
        counts[name] = len(rows[name])
    return counts
