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

from eval.figures import finish, plt, style

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
    style(ax, _DEPTH, "D_l (mean displacement Psi)",
          "Per-layer displacement on a common depth axis (last line of each)", log=True)  # fmt: skip
    finish(fig, path, None)


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
            depth = len(hist) - 1  # the mean is in layers (eval.depth): shown as l / L, the axis
            left.plot(_depths(len(hist)), hist, "o-", ms=3, color=f"C{n}",
                      label=f"{bucket} (n={dd['num_tokens'][bucket]:.0f}, "
                            f"mean l/L {dd['mean'][bucket] / depth:.2f})")  # fmt: skip
        style(left, _DEPTH, "fraction of the bucket's tokens",
              f"{name}: decision depth by final-token frequency")  # fmt: skip
        share, over = dd["guess_share"]["top10"], dd["overturned"]["top10"]
        right.plot(_depths(len(share)), share, "o-", ms=3, label="top-1 is a top-10 token (share)")
        right.plot(_depths(len(over)), over, "s--", ms=3, label="of those, overturned later")
        style(right, _DEPTH, "fraction", f"{name}: guess-then-refine")
    finish(fig, path, "How the model uses its depth (logit-lens top-1, held-out sample)")
    return True
