"""Summaries of the per-layer mean displacements D_1..D_L (training logs and checkpoint analysis).

Each takes D as a sequence of floats or a 1-D tensor and returns a Python float, so the training
tracker, the offline analysis and the study report compute the same numbers with the same code.
No torch import: the report and plots use these without loading torch.

Whose metric is whose: D_l (mean Psi per layer) and S_model come from the self-distillation paper,
the jump rate zeta from the JREG paper (EACL 2026), the jump ratio D_L / D_{L-1} is this project's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _as_list(d: Sequence[float] | Any) -> list[float]:
    """Floats from a sequence or a tensor (anything with ``detach``), in layer order."""
    values = d.detach().double().flatten().tolist() if hasattr(d, "detach") else list(d)
    if not values:
        raise ValueError("need at least one layer's displacement")
    return [float(v) for v in values]


def convergence_score(d: Sequence[float] | Any) -> float:
    """S_model = 1 - sum_l max(0, d_l - d_{l-1}) / sum_l |d_l - d_{l-1}|.

    1 when D never increases with depth (including a single layer or a constant profile),
    0 when it only increases.
    """
    values = _as_list(d)
    diffs = [b - a for a, b in zip(values, values[1:], strict=False)]
    total = sum(abs(x) for x in diffs)
    if total == 0.0:
        return 1.0
    return 1.0 - sum(max(0.0, x) for x in diffs) / total


def jump_ratio(d: Sequence[float] | Any) -> float:
    """d_L / d_{L-1}: how much larger the last layer's displacement is than the one before.

    Raises:
        ValueError: fewer than two layers (the ratio is undefined).
    """
    values = _as_list(d)
    if len(values) < 2:
        raise ValueError("jump_ratio needs at least two layers")
    if values[-2] == 0.0:
        return float("inf") if values[-1] > 0 else float("nan")
    return values[-1] / values[-2]


def jump_rate(d: Sequence[float] | Any, layer: int | None = None) -> float:
    """The JREG paper's jump rate zeta_l = 100 * sum_{k=l..L} max(0, d_k - d_{k-1}).

    ``layer`` is l, 1-based, in 2..L (there is no d_0: Psi_1 already compares h_1 with the
    embeddings h_0); the default L gives the final jump rate zeta_L = 100 * max(0, d_L - d_{L-1}).

    Raises:
        ValueError: fewer than two layers, or ``layer`` outside 2..L.
    """
    values = _as_list(d)
    if len(values) < 2:
        raise ValueError("jump_rate needs at least two layers")
    last = len(values)
    layer = last if layer is None else layer
    if not 2 <= layer <= last:
        raise ValueError(f"jump_rate layer must be in 2..{last}, got {layer}")
    rises = (max(0.0, values[k - 1] - values[k - 2]) for k in range(layer, last + 1))
    return 100.0 * sum(rises)
