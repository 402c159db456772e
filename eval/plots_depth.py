"""Figures that compare runs and HF models on a common depth axis (``make plots``), from
``analysis.jsonl`` files only (the last line of each: the latest checkpoint, or the model).

* ``depth_profile.png``: D_l against normalised depth l / L (so a 16-layer and a 28-layer model
  share the axis), one line per run or model;
* ``decision_depth.png``: per run or model, the distribution of decision depths (l / L) per
  frequency bucket of the final prediction, and guess-then-refine: per layer, the share of
  top-1 predictions that are top-10 tokens and the fraction of those a later layer overturns.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_DEPTH = "normalised depth l / L"


def _depths(n_states: int) -> list[float]:
    """l / L for states h_0..h_L."""
    return [i / (n_states - 1) for i in range(n_states)]


def depth_profile(analysis: dict[str, list[dict]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n, (name, lines) in enumerate(analysis.items()):
        d = lines[-1]["D"]
        ax.plot(_depths(len(d) + 1)[1:], d, "o-", ms=3, color=f"C{n}",
                label=f"{name} (L={len(d)}, zeta_L {lines[-1].get('zeta_L', float('nan')):.2f})")  # fmt: skip
    ax.set_xlabel(_DEPTH)
    ax.set_ylabel("D_l (mean displacement Psi)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Per-layer displacement on a common depth axis (last line of each)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def decision_depth(analysis: dict[str, list[dict]], path: Path) -> bool:
    """Draws when some line has ``decision_depth``; returns whether it did."""
    rows = {k: v[-1] for k, v in analysis.items() if "decision_depth" in v[-1]}
    if not rows:
        return False
    fig, axes = plt.subplots(len(rows), 2, figsize=(12, 4 * len(rows)), squeeze=False)
    for (name, line), (left, right) in zip(rows.items(), axes, strict=True):
        dd = line["decision_depth"]
        for n, bucket in enumerate(dd["buckets"]):
            hist = dd["hist"][bucket]
            left.plot(_depths(len(hist)), hist, "o-", ms=3, color=f"C{n}",
                      label=f"{bucket} (n={dd['num_tokens'][bucket]:.0f}, "
                            f"mean {dd['mean'][bucket]:.2f})")  # fmt: skip
        left.set_title(f"{name}: decision depth by final-token frequency")
        left.set_ylabel("fraction of the bucket's tokens")
        share, over = dd["guess_share"]["top10"], dd["overturned"]["top10"]
        right.plot(_depths(len(share)), share, "o-", ms=3, label="top-1 is a top-10 token (share)")
        right.plot(_depths(len(over)), over, "s--", ms=3, label="of those, overturned later")
        right.set_title(f"{name}: guess-then-refine")
        right.set_ylabel("fraction")
        for ax in (left, right):
            ax.set_xlabel(_DEPTH)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("How the model uses its depth (logit-lens top-1, held-out sample)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
