"""Summaries of the per-layer mean displacements D_1..D_L (training logs and checkpoint analysis).

Both take D as a sequence of floats or a 1-D tensor and return a Python float, so the training
tracker and the offline analysis report the same numbers from the same code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _as_list(d: Sequence[float] | torch.Tensor) -> list[float]:
    values = d.detach().double().flatten().tolist() if isinstance(d, torch.Tensor) else list(d)
    if not values:
        raise ValueError("need at least one layer's displacement")
    return [float(v) for v in values]


def convergence_score(d: Sequence[float] | torch.Tensor) -> float:
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


def jump_ratio(d: Sequence[float] | torch.Tensor) -> float:
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


def jump_rate(d: Sequence[float] | torch.Tensor) -> float:
    """zeta_L = 100 * max(0, d_L - d_{L-1}): the last layer's jump in absolute terms (per cent
    of the displacement scale, 0 when the last layer moves less than the one before).

    Raises:
        ValueError: fewer than two layers (the jump is undefined).
    """
    values = _as_list(d)
    if len(values) < 2:
        raise ValueError("jump_rate needs at least two layers")
    return 100.0 * max(0.0, values[-1] - values[-2])
