"""``make plots``: figures from a run's files only (``metrics.jsonl``, ``analysis.jsonl``,
``lm_eval/*/layers/``).

Nothing here loads a model or imports Megatron, so plots can be redrawn anywhere the files are
copied. Several runs (``RUN=runs/a RUN2=runs/b``, baseline vs JREG being the main use) are drawn
into a comparison folder (``make plots`` picks ``<RUN>/plots/compare-a-b/``), one colour per run;
per-run panels of the same quantity (D per layer, logit lens, activations) share their y axis. A run
without ``analysis.jsonl`` or ``metrics.jsonl`` is named in a ``warning:`` line with the command that
makes the missing file. Figures, each drawn when its input exists:

* ``jump_growth.png``: last-layer D_L, the jump ratio D_L / D_{L-1} and the JREG paper's final jump
  rate zeta_L = 100 max(0, D_L - D_{L-1}) against tokens seen; lines
  with markers are the analysed checkpoints (held-out sample, ``analysis.jsonl``), thin lines the
  training log (``metrics.jsonl``);
* ``D_per_layer.png``: D_l against layer on a log scale (layer 1 is often 10x the others), one
  line per checkpoint coloured by iteration (one panel per run, shared y axis);
* ``S_model.png``: the convergence score against tokens seen (as ``jump_growth.png``);
* ``logit_lens.png``: logit-lens next-token accuracy and perplexity against layer for the first,
  middle and last analysed checkpoints;
* ``activations.png``: per layer, the largest |activation| and the median |activation| of the
  residual stream, and the fraction of tokens for which the layer is active (not a void), at the
  last analysed checkpoint;
* ``training.png``: LM loss (training and validation) and the regulariser's loss (unscaled)
  against tokens seen, from ``metrics.jsonl``; validation passes run during training are dots, the
  pass Megatron runs after training (on the next validation batches, so it differs from an in-loop
  pass at the same iteration) a cross, the test set a square.
* ``layer_scores.png``: lm-eval scores against layer (``make eval LAYERS=``, the logit lens), every
  evaluated checkpoint or model of every run overlaid (``eval.layer_scores``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from matplotlib.ticker import MaxNLocator

from common.files import read_jsonl
from eval import layer_scores, plots_depth
from eval.figures import finish, plt, style
from eval.rundir import ANALYSIS_FILE, REPO, EvalError
from megatron_ext.metrics import jump_rate

_TOKENS = "tokens seen (millions)"


def read_metrics(run: Path) -> list[dict]:
    return read_jsonl(run / "metrics.jsonl")


def read_analysis(run: Path) -> list[dict]:
    """``analysis.jsonl`` lines in iteration order."""
    return sorted(read_jsonl(run / ANALYSIS_FILE), key=lambda x: x["iteration"])


def _train(lines: list[dict]) -> list[dict]:
    """Training lines of ``metrics.jsonl`` (no ``split``, or ``train``)."""
    return [x for x in lines if x.get("split", "train") == "train"]


def _mtok(lines: list[dict], key: str = "tokens") -> list[float]:
    return [x[key] / 1e6 for x in lines]


def zeta_l(line: dict) -> float:
    """zeta_L of a metrics or analysis line (from D in files written before it was logged)."""
    return line["zeta_L"] if "zeta_L" in line else jump_rate(line["D"])


def _over_training(metrics, analysis, path: Path, panels: list[tuple], title: str) -> None:
    """Panels ``(label, value_fn)`` against tokens seen: analysed checkpoints and training log."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    names = list(dict.fromkeys([*analysis, *metrics]))
    for ax, (label, value_fn) in zip(axes[0], panels, strict=True):
        for n, name in enumerate(names):
            train = [x for x in _train(metrics.get(name, [])) if "tokens" in x]
            if train:
                ax.plot(_mtok(train), [value_fn(x) for x in train], "-", lw=0.8, alpha=0.5,
                        color=f"C{n}", label=f"{name}: training log")  # fmt: skip
            lines = analysis.get(name, [])
            if lines:
                ax.plot(_mtok(lines, "tokens_seen"), [value_fn(x) for x in lines], "o-", lw=2,
                        color=f"C{n}", label=f"{name}: checkpoints, held-out")  # fmt: skip
        style(ax, _TOKENS, label, label)
    finish(fig, path, title)


def _per_layer_by_step(analysis: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, len(analysis), figsize=(6 * len(analysis), 4.2), squeeze=False,
                             sharey=True)  # fmt: skip
    for ax, (name, lines) in zip(axes[0], analysis.items(), strict=True):
        its = [x["iteration"] for x in lines]
        norm = plt.Normalize(min(its), max(max(its), min(its) + 1))
        for x in lines:
            ax.plot(range(1, len(x["D"]) + 1), x["D"], "o-", ms=3,
                    color=plt.cm.viridis(norm(x["iteration"])), label=f"iter {x['iteration']}")  # fmt: skip
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        style(ax, "layer l", "D_l (mean displacement Psi, log scale)", name, log=True)
    finish(fig, path, "Per-layer displacement D_l by checkpoint (held-out sample)")


def _pick(lines: list[dict]) -> list[dict]:
    """First, middle and last (fewer when there are fewer checkpoints)."""
    idx = sorted({0, (len(lines) - 1) // 2, len(lines) - 1})
    return [lines[i] for i in idx]


def _per_layer_rows(analysis: dict, path: Path, panels: list[tuple], title: str, pick) -> None:
    """One row per run, panels ``(ylabel, value_fn, first_layer, log)`` against layer."""
    fig, axes = plt.subplots(len(analysis), len(panels), figsize=(6 * len(panels),
                             4 * len(analysis)), squeeze=False, sharey="col")  # fmt: skip
    for row, (name, lines) in zip(axes, analysis.items(), strict=True):
        for ax, (label, value_fn, first, log) in zip(row, panels, strict=True):
            for n, x in enumerate(pick(lines)):
                for suffix, values, fmt in value_fn(x):
                    ax.plot(range(first, first + len(values)), values, fmt, ms=4,
                            color=f"C{n}", label=f"iter {x['iteration']}{suffix}")  # fmt: skip
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            xlabel = "layer l (0 = embeddings)" if first == 0 else "layer l"
            style(ax, xlabel, label, f"{name}: {label.split(' (')[0]}", log)
    finish(fig, path, title)


def plot_runs(runs: list[Path], out: Path) -> list[Path]:
    """Draw every figure the runs' files allow into ``out``; returns the files written."""
    for run in runs:
        if not run.is_dir():
            raise EvalError(f"run directory {run} does not exist")
    metrics = {r.name: m for r in runs if (m := read_metrics(r))}
    analysis = {r.name: a for r in runs if (a := read_analysis(r))}
    for run in runs:
        if run.name not in analysis:
            print(f"warning: {run} has no {ANALYSIS_FILE}: the checkpoint figures (D_per_layer, "
                  f"logit_lens, activations, markers in jump_growth and S_model) leave it out; "
                  f"run make analyze RUN={run_arg(run)}", file=sys.stderr, flush=True)  # fmt: skip
        if run.name not in metrics:
            print(f"warning: {run} has no metrics.jsonl: training.png and the training-log lines "
                  "leave it out", file=sys.stderr, flush=True)  # fmt: skip
    layers = {r.name: r / "lm_eval" for r in runs if layer_scores.has_layers(r / "lm_eval")}
    if not metrics and not analysis and not layers:
        names = ", ".join(str(r) for r in runs)
        raise EvalError(f"nothing to plot in {names}: no metrics.jsonl and no {ANALYSIS_FILE}")
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def target(name: str) -> Path:
        written.append(out / name)
        return written[-1]

    over = {k: [x for x in v if x.get("tokens_seen") is not None] for k, v in analysis.items()}
    over = {k: v for k, v in over.items() if v}  # HF models (eval.analyze_hf) have no tokens
    if metrics or over:
        _over_training(metrics, over, target("jump_growth.png"), [
            ("last-layer displacement D_L", lambda x: x["D"][-1]),
            ("jump ratio D_L / D_{L-1}", lambda x: x["jump_ratio"]),
            ("jump rate zeta_L = 100 max(0, D_L - D_{L-1})", zeta_l),
        ], "Jump growth over training")  # fmt: skip
        _over_training(metrics, over, target("S_model.png"), [
            ("convergence score S_model (0..1)", lambda x: x["S_model"]),
        ], "S_model over training")  # fmt: skip
    if metrics:
        _training(metrics, target("training.png"))
    if analysis:
        _per_layer_by_step(analysis, target("D_per_layer.png"))
        _per_layer_rows(analysis, target("logit_lens.png"), [
            ("next-token accuracy (fraction)", lambda x: [("", x["lens"]["acc"], "o-")], 0, False),
            ("perplexity (log scale)", lambda x: [("", x["lens"]["ppl"], "o-")], 0, True),
        ], "Logit lens: final norm + output layer on h_l (held-out sample)", _pick)  # fmt: skip
        _per_layer_rows(analysis, target("activations.png"), [
            ("|activation| (log scale)", lambda x: [
                (" max", [t[0] for t in x["massive"]["top"]], "o-"),
                (" median", x["massive"]["median"], "s--")], 0, True),
            ("active-token rate (fraction)", lambda x: [
                (f", alpha {x['voids']['alpha']}", x["voids"]["layer_rate"], "o-")], 1, False),
        ], "Massive activations and voids of the residual stream (last checkpoint)",
            lambda lines: lines[-1:])  # fmt: skip
        plots_depth.depth_profile(analysis, target("depth_profile.png"))
        if not plots_depth.decision_depth(analysis, target("decision_depth.png")):
            written.pop()
    if layers:
        layer_scores.plot_layers(layers, target("layer_scores.png"))
    return written


def run_arg(run: Path) -> str:
    """How to name ``run`` in a make command: its name under runs/, else its path."""
    return run.name if run.parent == REPO / "runs" else str(run)


def compare_dir(runs: list[Path]) -> Path:
    """Where a comparison of several runs goes by default: ``<first run>/plots/compare-a-b``."""
    return runs[0] / "plots" / ("compare-" + "-".join(r.name for r in runs))


def _training(metrics: dict, path: Path) -> None:
    """LM loss and regulariser loss, training lines and validation-pass markers."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for n, (name, lines) in enumerate(metrics.items()):
        train = [x for x in _train(lines) if "tokens" in x]
        evals = [x for x in lines if x.get("split") in ("valid", "test") and "tokens" in x]
        kinds = [
            ("o", "validation, in training", [x for x in evals if x["split"] == "valid"
                                             and not x.get("after_training")]),
            ("x", "validation after training (next batches)", [
                x for x in evals if x["split"] == "valid" and x.get("after_training")]),
            ("s", "test, after training", [x for x in evals if x["split"] == "test"]),
        ]  # fmt: skip
        for ax, key in zip(axes, ("lm_loss", "jreg_loss"), strict=True):
            ax.plot(_mtok(train), [x[key] for x in train], "-", color=f"C{n}",
                    label=f"{name}: train")  # fmt: skip
            for marker, label, points in kinds:
                if points:
                    ax.plot(_mtok(points), [x[key] for x in points], marker, ms=7,
                            color=f"C{n}", mfc="none" if marker == "s" else None,
                            label=f"{name}: {label}")  # fmt: skip
    style(axes[0], _TOKENS, "LM loss (nats/token)", "LM loss")
    style(axes[1], _TOKENS, "regulariser loss (unscaled)", "regulariser loss")
    finish(fig, path, "Training curves (metrics.jsonl)")
