"""The task x iteration table of ``make eval``, from files only (``lm_eval/iter_*/results.json``).

Every ``results.json`` under ``<out>/lm_eval/`` counts, so evaluating more checkpoints later adds
columns. Rows are (task, metric) pairs, lm-eval's metric names without the filter suffix
(``acc,none`` -> ``acc``); standard errors and ``sample_len`` are left out. Writes ``scores.csv`` (columns ``task``,
``metric``, then one per iteration), ``scores.md`` (the same, iterations with tokens seen) and
``scores.png`` (each metric against tokens seen, one panel per metric).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from eval.figures import finish, plt, style

_NOT_SCORES = ("alias", "sample_len")  # lm-eval bookkeeping, not metrics
# Metric -> axis label; higher-is-better metrics are not marked, lower-is-better ones are.
_LABELS = {
    "acc": "accuracy (fraction, higher is better)",
    "perplexity": "perplexity (lower is better)",
    "word_perplexity": "word perplexity (lower is better)",
    "byte_perplexity": "byte perplexity (lower is better)",
    "bits_per_byte": "bits per byte (lower is better)",
}


def collect(lm_eval_dir: Path) -> tuple[dict[int, int | None], dict[tuple[str, str], dict]]:
    """``({iteration: tokens_seen}, {(task, metric): {iteration: value}})`` of every results file."""
    tokens: dict[int, int | None] = {}
    scores: dict[tuple[str, str], dict[int, float]] = {}
    for path in sorted(lm_eval_dir.glob("iter_*/results.json")):
        record = json.loads(path.read_text())
        iteration = record.get("iteration", int(path.parent.name.removeprefix("iter_")))
        tokens[iteration] = record.get("tokens_seen")
        for task, metrics in record["results"].items():
            for key, value in metrics.items():
                name = key.split(",")[0]
                if "_stderr" in name or name in _NOT_SCORES or not isinstance(value, (int, float)):
                    continue
                scores.setdefault((task, name), {})[iteration] = float(value)
    return dict(sorted(tokens.items())), dict(sorted(scores.items()))


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if math.isfinite(value) and abs(value) < 1e4 else f"{value:.4g}"


def write_scores(lm_eval_dir: Path) -> list[Path]:
    """Write ``scores.csv``, ``scores.md`` and ``scores.png``; returns them ([] without results)."""
    tokens, scores = collect(lm_eval_dir)
    if not scores:
        return []
    its = list(tokens)
    csv_path, md_path, png_path = (lm_eval_dir / f"scores.{x}" for x in ("csv", "md", "png"))
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "metric", *its])
        for (task, metric), values in scores.items():
            writer.writerow([task, metric, *(values.get(i, "") for i in its)])
    head = [f"iter {i} ({tokens[i] / 1e6:.3g}M tokens)" if tokens[i] else f"iter {i}" for i in its]
    rows = ["| task | metric | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(its)]
    for (task, metric), values in scores.items():
        cells = " | ".join(_fmt(values.get(i)) for i in its)
        rows.append(f"| {task} | {metric} | {cells} |")
    md_path.write_text("\n".join(rows) + "\n")
    _plot(tokens, scores, png_path)
    return [csv_path, md_path, png_path]


def _plot(tokens: dict, scores: dict, path: Path) -> None:
    metrics = sorted({m for _, m in scores})
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    use_tokens = all(t for t in tokens.values())
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for n, ((task, name), values) in enumerate(scores.items()):
            if name != metric:
                continue
            its = sorted(values)
            x = [tokens[i] / 1e6 if use_tokens else i for i in its]
            ax.plot(x, [values[i] for i in its], "o-", color=f"C{n}", label=task)
        style(ax, "tokens seen (millions)" if use_tokens else "iteration",
              _LABELS.get(metric, metric), metric)  # fmt: skip
    finish(fig, path, "lm-eval scores of the run's checkpoints")
