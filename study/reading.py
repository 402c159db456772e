"""The study's "honest reading": every sentence comes from the numbers by a stated rule.

Pure functions over plain lists (no file, torch or Megatron), tested on hand-made numbers:

* growth: a series grows monotonically when no checkpoint is below the one before it;
* comparisons between two arms are paired by seed (study/paired.py);
* the D_l profile's shape: the share of the displacement of layers 2..L that falls in the last
  quarter of the layers (the last max(1, L // 4) layers); layer 1 is left out as below;
* the jump's layer: the layer l >= 2 with the largest rise D_l - D_{l-1} (the layer whose own
  term of zeta starts there), and argmax_{l >= 2} D_l (layer 1 is left out: it maps the token
  embeddings and dominates D at these scales).
"""

from __future__ import annotations

import math


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


def tail_share(d: list[float] | None) -> float | None:
    """sum of D_l over the last max(1, L // 4) layers / sum of D_l over l = 2..L (None when
    there are fewer than two layers or no displacement after layer 1)."""
    if not d or len(d) < 2:
        return None
    total = sum(d[1:])
    return sum(d[len(d) - max(1, len(d) // 4) :]) / total if total > 0 else None


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
