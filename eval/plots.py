"""``make plots``: figures from a run's files only (``metrics.jsonl``, ``analysis/iter_*.jsonl``).

Nothing here loads a model or imports Megatron, so plots can be redrawn anywhere the files are
copied. Several runs are overlaid (one colour or one panel per run). Figures:

* ``training.png``: LM loss (train line, validation markers), jump ratio, S_model and D_l over
  iterations, from ``metrics.jsonl``;
* ``jump_profile.png``: D_l against depth for every analysed checkpoint (held-out sample);
* ``logit_lens.png``: logit-lens loss and KL to the final prediction against depth (h_0..h_L);
* ``compare.png`` (several runs): the last analysed checkpoint of each run on shared axes.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from eval.rundir import EvalError  # noqa: E402


def _jsonl(path: Path) -> list[dict]:
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            continue  # a torn last line of a killed writer
    return lines


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return _jsonl(path) if path.is_file() else []


def read_analysis(run: Path) -> list[dict]:
    """Held-out lines of ``analysis/iter_*.jsonl``, in iteration order."""
    lines = []
    for path in sorted((run / "analysis").glob("iter_*.jsonl")):
        lines += [x for x in _jsonl(path) if x["sample"].startswith("heldout")]
    return sorted(lines, key=lambda x: x["iteration"])


def _training(runs: dict[str, list[dict]], path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    (ax_loss, ax_ratio), (ax_s, ax_d) = axes
    styles = ["-", "--", ":", "-."]
    for n, (name, lines) in enumerate(runs.items()):
        train = [x for x in lines if x.get("split") != "valid"]
        valid = [x for x in lines if x.get("split") == "valid"]
        color = f"C{n}"
        it = [x["iteration"] for x in train]
        ax_loss.plot(it, [x["lm_loss"] for x in train], color=color, label=f"{name} train")
        if valid:
            ax_loss.plot([x["iteration"] for x in valid], [x["lm_loss"] for x in valid], "o",
                         color=color, label=f"{name} valid")  # fmt: skip
        ax_ratio.plot(it, [x["jump_ratio"] for x in train], color=color, label=name)
        ax_s.plot(it, [x["S_model"] for x in train], color=color, label=name)
        num_layers = len(train[0]["D"]) if train else 0
        for layer in range(num_layers):
            ax_d.plot(it, [x["D"][layer] for x in train], styles[n % len(styles)],
                      color=plt.cm.viridis(layer / max(1, num_layers - 1)),
                      label=f"{name} D_{layer + 1}" if len(runs) > 1 else f"D_{layer + 1}")  # fmt: skip
    for ax, title in ((ax_loss, "LM loss"), (ax_ratio, "jump ratio D_L / D_{L-1}"),
                      (ax_s, "convergence score S_model"), (ax_d, "D_l (mean Psi) per layer")):  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _per_checkpoint(runs: dict[str, list[dict]], path: Path, panels: list[tuple]) -> None:
    """One row per run, one column per panel ``(title, value_fn, first_layer, log_scale)``."""
    fig, axes = plt.subplots(
        len(runs), len(panels), figsize=(5.5 * len(panels), 3.8 * len(runs)), squeeze=False
    )
    for row, (name, lines) in zip(axes, runs.items(), strict=True):
        its = [x["iteration"] for x in lines]
        for ax, (title, value_fn, first, log_scale) in zip(row, panels, strict=True):
            for x in lines:
                values = value_fn(x)
                shade = (x["iteration"] - min(its)) / max(1, max(its) - min(its))
                ax.plot(range(first, first + len(values)), values, "o-", ms=3,
                        color=plt.cm.viridis(shade), label=f"iter {x['iteration']}")  # fmt: skip
            ax.set_title(f"{name}: {title}")
            _layer_axis(ax, log_scale)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _layer_axis(ax, log_scale: bool = False) -> None:
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log_scale:
        ax.set_yscale("log")  # h_0 (embeddings) is small: relative change of layer 1 is huge
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _compare(runs: dict[str, list[dict]], path: Path) -> None:
    """The last analysed checkpoint of each run on shared axes."""
    panels = [("D_l (mean Psi)", lambda x: x["D"], 1),
              ("logit-lens LM loss of h_l", lambda x: x["lens"]["loss"], 0)]  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8))
    for ax, (title, value_fn, first) in zip(axes, panels, strict=True):
        for n, (name, lines) in enumerate(runs.items()):
            values = value_fn(lines[-1])
            ax.plot(range(first, first + len(values)), values, "o-", ms=3, color=f"C{n}",
                    label=f"{name} iter {lines[-1]['iteration']}")  # fmt: skip
        ax.set_title(f"{title}, held-out sample")
        _layer_axis(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_runs(runs: list[Path], out: Path) -> list[Path]:
    """Draw every figure the runs' files allow into ``out``; returns the files written."""
    for run in runs:
        if not run.is_dir():
            raise EvalError(f"run directory {run} does not exist")
    metrics = {r.name: read_metrics(r) for r in runs}
    analysis = {r.name: read_analysis(r) for r in runs}
    metrics = {k: v for k, v in metrics.items() if v}
    analysis = {k: v for k, v in analysis.items() if v}
    if not metrics and not analysis:
        names = ", ".join(str(r) for r in runs)
        raise EvalError(f"nothing to plot in {names}: no metrics.jsonl and no analysis/ files")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if metrics:
        written.append(out / "training.png")
        _training(metrics, written[-1])
    if analysis:
        written.append(out / "jump_profile.png")
        _per_checkpoint(analysis, written[-1], [
            ("D_l (mean Psi), held-out sample", lambda x: x["D"], 1, False),
            ("relative L2 |h_l - h_{l-1}| / |h_{l-1}|", lambda x: x["rel_l2"], 1, True),
        ])  # fmt: skip
        written.append(out / "logit_lens.png")
        _per_checkpoint(analysis, written[-1], [
            ("logit-lens LM loss of h_l", lambda x: x["lens"]["loss"], 0, False),
            ("KL(final || lens of h_l)", lambda x: x["lens"]["kl_to_final"], 0, False),
        ])  # fmt: skip
    if len(analysis) > 1:
        written.append(out / "compare.png")
        _compare(analysis, written[-1])
    return written
