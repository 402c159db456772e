"""The score-vs-layer table and plot of ``make eval LAYERS=`` (``eval.layer_eval``), from files
only: every ``<out>/lm_eval/<target>/layers/<l>/results.json`` (target: ``iter_N`` or
``model-<name>``; metrics read as ``eval.scores`` reads them). Writes, next to ``scores.*``:

* ``layers.csv``: one row per (target, layer, task, metric), long format for scripts: ``target``,
  ``iteration``, ``tokens_seen``, ``num_layers``, ``layer`` (0 = embeddings .. L), ``task``,
  ``metric``, ``value``, ``stderr``, ``limit``;
* ``layers.md``: per target, rows (task, metric), one column per layer;
* ``layers.png``: each metric against the layer, one line per (target, task).

``plot_layers`` draws the same for several runs and models overlaid (``make plots``,
``layer_scores.png``); the x axis is the layer l when every model has the same depth, else l / L.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from eval.figures import finish, plt, style
from eval.scores import _LABELS, FRACTIONS, _fmt, record_scores

_COLUMNS = ("target", "iteration", "tokens_seen", "num_layers", "layer", "task", "metric",
            "value", "stderr", "limit")  # fmt: skip


def collect_layers(lm_eval_dir: Path) -> dict[str, dict]:
    """``{target: {"record": the first layer's record, "num_layers": L, "docs": {task: (scored,
    total)}, "layers": {l: (scores, stderr)}}}``, targets in folder order, layers ascending."""
    out = {}
    for path in sorted(lm_eval_dir.glob("*/layers/*/results.json")):
        record = json.loads(path.read_text())
        target = out.setdefault(path.parents[2].name, {"record": record, "docs": {},
                                                        "layers": {}})  # fmt: skip
        target["num_layers"] = record["num_layers"]
        scores, stderr, docs = record_scores(record)
        target["docs"].update(docs)
        target["layers"][record["layer"]] = (scores, stderr)
    for target in out.values():
        target["layers"] = dict(sorted(target["layers"].items()))
    return out


def has_layers(lm_eval_dir: Path) -> bool:
    return any(lm_eval_dir.glob("*/layers/*/results.json"))


def _head(name: str, target: dict) -> str:
    record, tokens = target["record"], target["record"].get("tokens_seen")
    seen = f", {tokens / 1e6:.3g}M tokens" if tokens else ""
    limit = f", LIMIT={record['limit']} documents per task" if record.get("limit") else ""
    return f"{name} (L = {target['num_layers']}{seen}{limit})"


def _docs(target: dict, task: str) -> str:
    scored, total = target["docs"].get(task, (None, None))
    if scored is None:
        return ""
    return f"{scored} of {total}" if total and total != scored else str(scored)


def write_layer_scores(lm_eval_dir: Path) -> list[Path]:
    """Write ``layers.csv``, ``layers.md``, ``layers.png``; returns them ([] without results)."""
    targets = collect_layers(lm_eval_dir)
    if not targets:
        return []
    csv_path, md_path, png_path = (lm_eval_dir / f"layers.{x}" for x in ("csv", "md", "png"))
    lines = []
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(_COLUMNS)
        for name, target in targets.items():
            record = target["record"]
            for layer, (scores, stderr) in target["layers"].items():
                for (task, metric), value in sorted(scores.items()):
                    writer.writerow([name, record.get("iteration"), record.get("tokens_seen"),
                                     target["num_layers"], layer, task, metric, value,
                                     stderr.get((task, metric), ""), record.get("limit")])  # fmt: skip
            layers = list(target["layers"])
            lines += [f"### {_head(name, target)}", "",
                      "| task | metric | docs | " + " | ".join(f"layer {n}" for n in layers) + " |",
                      "|---|---|---|" + "---|" * len(layers)]  # fmt: skip
            keys = sorted({k for scores, _ in target["layers"].values() for k in scores})
            for task, metric in keys:
                cells = " | ".join(_fmt(target["layers"][n][0].get((task, metric))) for n in layers)
                lines.append(f"| {task} | {metric} | {_docs(target, task)} | {cells} |")
            lines.append("")
    md_path.write_text("\n".join(lines))
    plot_layers({"": lm_eval_dir}, png_path)
    return [csv_path, md_path, png_path]


def plot_layers(sources: dict[str, Path], path: Path) -> bool:
    """Each metric against the layer for every target of every ``lm_eval`` folder of
    ``sources`` (name -> folder; name "" for one folder); returns whether there was any."""
    series = [(f"{src}: {name}" if src else name, target)
              for src, folder in sources.items()
              for name, target in collect_layers(folder).items()]  # fmt: skip
    if not series:
        return False
    same_depth = len({t["num_layers"] for _, t in series}) == 1
    metrics = sorted({m for _, t in series for s, _ in t["layers"].values() for _, m in s})
    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for n, (label, target) in enumerate(series):
            depth = target["num_layers"] if not same_depth else 1
            tasks = sorted({t for s, _ in target["layers"].values() for t, m in s if m == metric})
            for k, task in enumerate(tasks):
                points = [(layer / max(depth, 1), s[(task, metric)])
                          for layer, (s, _) in target["layers"].items() if (task, metric) in s]  # fmt: skip
                ax.plot(*zip(*points, strict=True), "o" + ("-", "--", ":", "-.")[k % 4], ms=4,
                        color=f"C{n}", label=f"{label}: {task}")  # fmt: skip
        if metric in FRACTIONS:
            ax.set_ylim(0, 1)
        xlabel = "layer l (0 = embeddings)" if same_depth else "normalised depth l / L"
        style(ax, xlabel, _LABELS.get(metric, metric), metric, log="perplexity" in metric)
    finish(fig, path, "lm-eval scores per layer (logit lens: final norm + head on h_l)")
    return True
