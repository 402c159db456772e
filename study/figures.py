"""The report's two figures (small PNGs next to docs/study.md), from ``analysis.jsonl`` lines only.

* ``jump_over_tokens.png``: D_L and zeta_L against tokens seen, every analysed checkpoint of the
  main runs (lines) and the last checkpoint of the extra seeds (open markers), one colour per
  group (none, jreg, jreg-final);
* ``D_per_layer.png``: D_l against layer (log scale) at the first, middle and last analysed
  checkpoint, one panel per main run.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from megatron_ext.metrics import jump_rate  # noqa: E402

COLOURS = {"none": "C0", "jreg": "C3", "jreg-final": "C2"}


def zeta(line: dict) -> float:
    return line["zeta_L"] if "zeta_L" in line else jump_rate(line["D"])


def pick(lines: list[dict]) -> list[dict]:
    """First, middle and last (fewer when there are fewer lines)."""
    return [lines[i] for i in sorted({0, (len(lines) - 1) // 2, len(lines) - 1})] if lines else []


def over_tokens(runs: list[dict], path: Path) -> Path:
    """``runs``: dicts with ``name``, ``group``, ``main`` and ``analysis`` (lines by iteration)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = (("D_L (last-layer mean displacement)", lambda x: x["D"][-1]),
              ("zeta_L = 100 max(0, D_L - D_(L-1))", zeta))  # fmt: skip
    for ax, (label, value) in zip(axes, panels, strict=True):
        for run in runs:
            lines = run["analysis"] if run["main"] else run["analysis"][-1:]
            if not lines:
                continue
            tokens = [x["tokens_seen"] / 1e6 for x in lines]
            style = dict(color=COLOURS.get(run["group"], "k"), label=run["name"])
            if run["main"]:
                ax.plot(tokens, [value(x) for x in lines], "o-", ms=4, **style)
            else:
                ax.plot(tokens, [value(x) for x in lines], "o", mfc="none", ms=8, **style)
        ax.set(xlabel="tokens seen (millions)", ylabel=label, title=label.split(" (")[0])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Final-layer jump over training (held-out sample)")
    return _save(fig, path)


def per_layer(runs: list[dict], path: Path) -> Path:
    """D_l against layer at the first, middle and last analysed checkpoint of each main run."""
    main = [r for r in runs if r["main"] and r["analysis"]]
    fig, axes = plt.subplots(1, max(1, len(main)), figsize=(4.5 * max(1, len(main)), 3.8),
                             squeeze=False, sharey=True)  # fmt: skip
    for ax, run in zip(axes[0], main, strict=False):
        for n, line in enumerate(pick(run["analysis"])):
            ax.plot(range(1, len(line["D"]) + 1), line["D"], "o-", ms=3, color=f"C{n}",
                    label=f"iter {line['iteration']}")  # fmt: skip
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="layer l", ylabel="D_l (log scale)", title=run["name"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("D_l per layer at the first, middle and last checkpoint (held-out sample)")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
