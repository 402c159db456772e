"""The task x checkpoint table of ``make eval``, from files only (``lm_eval/*/results.json``).

Every ``results.json`` under ``<out>/lm_eval/`` counts, so evaluating more checkpoints later adds
columns; a model scored with ``MODEL=`` into the same folder is one more column (``model-<name>``),
drawn as a dashed level in the plot. Rows are (task, metric) pairs of the tasks and groups that
were asked for (an lm-eval group such as ``mmlu`` is one row, not one per subtask), lm-eval's metric
names without the filter suffix (``acc,none`` -> ``acc``); standard errors and ``sample_len`` are
left out; results written under the local tasks' first names are read under the new ones
(``eval.taskdata.RENAMED``). Writes ``scores.csv`` (columns ``task``, ``metric``, ``docs``, then
one per column), ``scores.md`` (the same, checkpoints with tokens seen, and a line saying when the
scores are on a ``LIMIT`` sample) and ``scores.png`` (each metric against tokens seen, one panel
per metric; fractions on a [0, 1] axis). ``notes`` says which metrics cannot be read.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from eval.figures import finish, plt, style
from eval.taskdata import RENAMED

_NOT_SCORES = ("alias", "sample_len")  # lm-eval bookkeeping, not metrics
# Metric -> axis label; higher-is-better metrics are not marked, lower-is-better ones are.
_LABELS = {
    "acc": "accuracy (fraction, higher is better)",
    "acc_norm": "normalised accuracy (fraction, higher is better)",
    "exact_match": "exact match (fraction, higher is better)",
    "perplexity": "perplexity (lower is better)",
    "word_perplexity": "word perplexity (lower is better)",
    "byte_perplexity": "byte perplexity (lower is better)",
    "bits_per_byte": "bits per byte (lower is better)",
}
_SETTINGS = ("limit", "num_fewshot", "dtype")
"""What a column was computed with (``results.json``); columns that differ are named in a note."""
FRACTIONS = ("acc", "acc_norm", "exact_match", "f1", "mcc")
"""Metrics that are fractions: their axis is [0, 1]."""


def _sort_key(label):
    return (0, label, "") if isinstance(label, int) else (1, 0, str(label))


def record_scores(record: dict) -> tuple[dict, dict, dict]:
    """``({(task, metric): value}, {(task, metric): stderr}, {task: (scored, total)})`` of one
    ``results.json`` record: the tasks and groups asked for, under their current names."""
    scores, stderr, docs = {}, {}, {}
    requested = {RENAMED.get(t, t) for t in record.get("requested") or ()}
    for n, counts in (record.get("n-samples") or {}).items():
        docs[RENAMED.get(n, n)] = (counts.get("effective"), counts.get("original"))
    for task, metrics in record["results"].items():
        task = RENAMED.get(task, task)
        if requested and task not in requested:
            continue  # a subtask of a requested group: the group's row stands for it
        for key, value in metrics.items():
            name = key.split(",")[0]
            if name in _NOT_SCORES or not isinstance(value, (int, float)):
                continue
            if name.endswith("_stderr"):
                stderr[(task, name.removesuffix("_stderr"))] = value
            else:
                scores[(task, name)] = float(value)
    return scores, stderr, docs


def collect(lm_eval_dir: Path) -> dict:
    """Every results file as ``{"columns": {label: {tokens, limit}}, "scores": {(task, metric):
    {label: value}}, "stderr": {...}, "docs": {task: (scored, total)}}``."""
    columns, scores, stderr, docs = {}, {}, {}, {}
    for path in sorted(lm_eval_dir.glob("*/results.json")):
        record = json.loads(path.read_text())
        folder = path.parent.name
        label = record.get("iteration")
        if label is None:
            is_iter = folder.startswith("iter_") and folder[5:].isdigit()
            label = int(folder[5:]) if is_iter else record.get("label") or folder
        columns[label] = {"tokens": record.get("tokens_seen"), "limit": record.get("limit"),
                          **{k: record.get(k) for k in _SETTINGS}}  # fmt: skip
        values, errors, counts = record_scores(record)
        docs.update(counts)
        for key, value in values.items():
            scores.setdefault(key, {})[label] = value
        for key, value in errors.items():
            stderr.setdefault(key, {})[label] = value
    columns = dict(sorted(columns.items(), key=lambda kv: _sort_key(kv[0])))
    return {"columns": columns, "scores": dict(sorted(scores.items())), "stderr": stderr,
            "docs": docs}  # fmt: skip


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if math.isfinite(value) and abs(value) < 1e4 else f"{value:.4g}"


def _head(label, column: dict) -> str:
    if not isinstance(label, int):
        return str(label)
    tokens = column["tokens"]
    return f"iter {label} ({tokens / 1e6:.3g}M tokens)" if tokens else f"iter {label}"


def _docs(task: str, table: dict) -> str:
    scored, total = table["docs"].get(task, (None, None))
    if scored is None:
        return ""
    return f"{scored} of {total}" if total and total != scored else str(scored)


def sample_note(table: dict) -> str | None:
    """The line saying the scores are on a sample (None when every task was scored whole)."""
    limits = sorted({c["limit"] for c in table["columns"].values() if c["limit"]})
    if not limits:
        return None
    return (f"Scores on a sample: LIMIT={','.join(map(str, limits))} documents per task "
            "(column docs: scored of available); not comparable to full-task scores.")  # fmt: skip


def write_scores(lm_eval_dir: Path) -> list[Path]:
    """Write ``scores.csv``, ``scores.md`` and ``scores.png``; returns them ([] without results)."""
    table = collect(lm_eval_dir)
    if not table["scores"]:
        return []
    labels = list(table["columns"])
    csv_path, md_path, png_path = (lm_eval_dir / f"scores.{x}" for x in ("csv", "md", "png"))
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "metric", "docs", *labels])
        for (task, metric), values in table["scores"].items():
            writer.writerow(
                [task, metric, _docs(task, table), *(values.get(i, "") for i in labels)]
            )
    head = [_head(i, table["columns"][i]) for i in labels]
    rows = [
        "| task | metric | docs | " + " | ".join(head) + " |",
        "|---|---|---|" + "---|" * len(labels),
    ]
    for (task, metric), values in table["scores"].items():
        cells = " | ".join(_fmt(values.get(i)) for i in labels)
        rows.append(f"| {task} | {metric} | {_docs(task, table)} | {cells} |")
    if note := sample_note(table):
        rows += ["", note]
    md_path.write_text("\n".join(rows) + "\n")
    _plot(table, png_path)
    return [csv_path, md_path, png_path]


def notes(lm_eval_dir: Path) -> list[str]:
    """``note:`` lines for metrics that cannot be read: the same value at every checkpoint (e.g.
    an accuracy of 0 for a model too young to predict a whole word), or a standard error larger
    than the value itself."""
    table = collect(lm_eval_dir)
    out = []
    for key in _SETTINGS:
        seen = {}
        for label, column in table["columns"].items():
            seen.setdefault(str(column.get(key)), []).append(str(label))
        if len(seen) > 1:
            each = "; ".join(f"{key}={v}: {', '.join(labels)}" for v, labels in seen.items())
            out.append(f"note: the columns were scored with different settings ({each}); "
                       "rerun them alike before comparing")  # fmt: skip
    for (task, metric), values in table["scores"].items():
        checkpoints = [v for k, v in values.items() if isinstance(k, int)]
        errors = table["stderr"].get((task, metric), {})
        if len(checkpoints) > 1 and len(set(checkpoints)) == 1:
            out.append(f"note: {task} {metric} is {_fmt(checkpoints[0])} at every checkpoint: it "
                       "does not separate them (too early in training, or too few documents); "
                       "read the metrics that move")  # fmt: skip
        elif any(isinstance(e, (int, float)) and e > abs(values.get(k, 0)) > 0
                 for k, e in errors.items()):  # fmt: skip
            out.append(f"note: {task} {metric}: its standard error exceeds its value (a few "
                       "documents dominate it); compare checkpoints on bits_per_byte or acc")  # fmt: skip
    return out


def _plot(table: dict, path: Path) -> dict[str, tuple[float, float]]:
    """Draw ``scores.png``; returns each panel's y range (metric -> (bottom, top))."""
    tokens = {k: c["tokens"] for k, c in table["columns"].items() if isinstance(k, int)}
    scores = table["scores"]
    metrics = sorted({m for _, m in scores})
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    use_tokens = all(t for t in tokens.values())
    ranges = {}
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for n, ((task, name), values) in enumerate(scores.items()):
            if name != metric:
                continue
            its = sorted(k for k in values if isinstance(k, int))
            if its:
                x = [tokens[i] / 1e6 if use_tokens else i for i in its]
                ax.plot(x, [values[i] for i in its], "o-", color=f"C{n}", label=task)
            for m, label in enumerate(k for k in values if not isinstance(k, int)):
                ax.axhline(values[label], color=f"C{n}", ls="--", lw=1,
                           alpha=1 - 0.2 * min(m, 3), label=f"{task}: {label}")  # fmt: skip
        if metric in FRACTIONS:
            ax.set_ylim(0, 1)
        style(ax, "tokens seen (millions)" if use_tokens else "iteration",
              _LABELS.get(metric, metric), metric)  # fmt: skip
        ranges[metric] = ax.get_ylim()
    title = "lm-eval scores of the run's checkpoints"
    if sample_note(table):
        limits = sorted({c["limit"] for c in table["columns"].values() if c["limit"]})
        title += f" (on a sample: LIMIT={','.join(map(str, limits))} documents per task)"
    finish(fig, path, title)
    return ranges
