"""The study's "honest reading": every sentence comes from the numbers by a stated rule.

Pure functions over plain lists (no file, torch or Megatron), tested on hand-made numbers:

* growth: a series grows monotonically when no checkpoint is below the one before it;
* a difference between two seed groups (mean over seeds) is reported as a difference only when
  it is larger than the spread, the larger of the two groups' ranges (max - min over seeds); with
  one seed in a group the spread is unknown and the comparison is "undecided";
* the jump's layer: the layer l >= 2 with the largest rise D_l - D_{l-1} (the layer whose own
  term of zeta starts there), and argmax_{l >= 2} D_l (layer 1 is left out: it maps the token
  embeddings and dominates D at these scales).
"""

from __future__ import annotations

import math
import statistics


def monotonic(values: list[float]) -> bool:
    """No value below the one before it (True for fewer than two values)."""
    return all(b >= a for a, b in zip(values, values[1:], strict=False))


def fmt(x: float | None, digits: int = 5) -> str:
    """A number for the tables: ``-`` when missing, 5 significant digits otherwise."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}"


def growth(name: str, values: list[float], iterations: list[int]) -> str:
    """``name grows monotonically over checkpoints: yes/no`` with first, last and the falls."""
    if len(values) < 2:
        return f"{name} over checkpoints: fewer than two analysed checkpoints, not decided."
    falls = [it for it, a, b in zip(iterations[1:], values, values[1:], strict=False) if b < a]
    if all(v == 0 for v in values):
        return f"{name} grows monotonically over checkpoints: no, it is 0 at every checkpoint."
    verdict = "yes" if not falls else f"no (it falls at iteration(s) {', '.join(map(str, falls))})"
    trend = "rises" if values[-1] > values[0] else "does not rise"
    return (
        f"{name} grows monotonically over checkpoints: {verdict}; it {trend} from "
        f"{fmt(values[0])} (iteration {iterations[0]}) to {fmt(values[-1])} (iteration "
        f"{iterations[-1]})."
    )


def stats(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value), min, max and range over seeds."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None, "range": None}
    return {"n": len(values), "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values),
            "range": max(values) - min(values) if len(values) > 1 else None}  # fmt: skip


def compare(base: list[float], other: list[float]) -> dict:
    """``other`` against ``base`` over seeds: difference of means, relative change, verdict.

    verdict: ``lower`` / ``higher`` (|difference| > spread), ``no difference`` (<= spread),
    ``undecided`` (a group has one seed: no spread), ``missing`` (a group has no value).
    """
    a, b = stats(base), stats(other)
    if not a["n"] or not b["n"]:
        return {"base": a, "other": b, "diff": None, "rel": None, "spread": None,
                "verdict": "missing"}  # fmt: skip
    diff = b["mean"] - a["mean"]
    rel = 100 * diff / abs(a["mean"]) if a["mean"] else None
    spread = None if a["range"] is None or b["range"] is None else max(a["range"], b["range"])
    if spread is None:
        verdict = "undecided"
    elif abs(diff) <= spread:
        verdict = "no difference"
    else:
        verdict = "lower" if diff < 0 else "higher"
    return {"base": a, "other": b, "diff": diff, "rel": rel, "spread": spread, "verdict": verdict}


def describe_change(what: str, c: dict, other: str, base: str) -> str:
    """One sentence for a ``compare`` result."""
    if c["verdict"] == "missing":
        return f"{what}: not measured for both {other} and {base}."
    a, b = c["base"], c["other"]
    rel = f" ({c['rel']:+.2f}%)" if c["rel"] is not None else ""
    counts = f"{b['n']} seed(s) vs {a['n']}"
    change = f"{fmt(b['mean'])} vs {fmt(a['mean'])}, difference {fmt(c['diff'])}{rel}, {counts}"
    if c["verdict"] == "undecided":
        return f"{what}: {other} {change}; spread unknown (one seed), so not decided."
    spread = f"spread {fmt(c['spread'])}"
    if c["verdict"] == "no difference":
        return f"{what}: no difference ({change}, smaller than the {spread})."
    return f"{what}: {other} is {c['verdict']} than {base} ({change}, larger than the {spread})."


def rises(d: list[float]) -> list[float]:
    """D_l - D_{l-1} for l = 2..L (index 0 is layer 2)."""
    return [b - a for a, b in zip(d, d[1:], strict=False)]


def jump_layers(d: list[float]) -> dict:
    """``top_rise``: layer (2..L) of the largest positive rise, None when D never rises;
    ``argmax``: argmax over l >= 2 of D_l (1-based)."""
    r = rises(d)
    top = max(range(len(r)), key=lambda i: r[i]) if r else None
    argmax = max(range(1, len(d)), key=lambda i: d[i]) + 1 if len(d) > 1 else None
    return {"top_rise": top + 2 if top is not None and r[top] > 0 else None, "argmax": argmax}


def final_only_moves(d_none: list[float], d_final: list[float]) -> str:
    """Does penalising only the last layer move the jump from layer L to L-1?"""
    last = len(d_none)
    a, b = jump_layers(d_none), jump_layers(d_final)
    seen = (
        f"largest rise of D at layer {a['top_rise'] or 'none'} without JREG, "
        f"{b['top_rise'] or 'none'} with final-only; argmax_(l>=2) D_l {a['argmax']} vs "
        f"{b['argmax']}; D_(L-1), D_L: {fmt(d_none[-2])}, {fmt(d_none[-1])} vs "
        f"{fmt(d_final[-2])}, {fmt(d_final[-1])}"
    )
    if a["top_rise"] != last:
        return (
            f"Final-only moves the jump to layer L-1 = {last - 1}: not applicable, the baseline's "
            f"largest rise is not at the last layer ({seen})."
        )
    moved = b["top_rise"] == last - 1
    return (
        f"Final-only moves the jump to layer L-1 = {last - 1}: {'yes' if moved else 'no'} ({seen})."
    )
