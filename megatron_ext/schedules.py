"""Layer-weight schedules w_1..w_L (``WEIGHTS=``): names, their parameter, the weights.

Plain Python, no torch: the launcher checks and prints a schedule before any heavy import
(``megatron_ext.jreg.layer_weights`` is the same weights as a tensor, for training).
"""

from __future__ import annotations

import math

_SCHEDULE_PARAMS = {
    "uniform": {},
    "final": {},
    "last_k": {"k": None},
    "linear": {},
    "exp": {"k": 0.25},
}
SCHEDULES = tuple(_SCHEDULE_PARAMS)


def weights(num_layers: int, schedule: str = "uniform", **kw: float) -> list[float]:
    """Layer-weight schedule w_1..w_L (floats, sum to 1).

    Schedules: ``uniform``; ``final`` (last layer only); ``last_k`` (uniform over the last ``k``
    layers, ``k`` required); ``linear`` (w_l proportional to l); ``exp`` (w_l = exp(k l) /
    sum_i exp(k i), ``k`` default 0.25 as in the self-distillation paper).

    Raises:
        ValueError: unknown schedule, unknown or invalid parameter.
    """
    if schedule not in _SCHEDULE_PARAMS:
        raise ValueError(
            f"unknown layer-weight schedule {schedule!r}; valid: {', '.join(SCHEDULES)}"
        )
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    allowed = _SCHEDULE_PARAMS[schedule]
    unknown = set(kw) - set(allowed)
    if unknown:
        valid = ", ".join(allowed) or "none"
        raise ValueError(
            f"schedule {schedule!r} takes no parameter {', '.join(sorted(unknown))}; valid: {valid}"
        )
    params = {**allowed, **kw}
    layers = range(1, num_layers + 1)
    if schedule == "uniform":
        w = [1.0] * num_layers
    elif schedule == "final":
        w = [float(layer == num_layers) for layer in layers]
    elif schedule == "last_k":
        k = params["k"]
        if k is None or int(k) != k or not 1 <= k <= num_layers:
            raise ValueError(
                f"last_k needs an integer k in 1..{num_layers} (e.g. last_k:2), got {k}"
            )
        w = [float(layer > num_layers - int(k)) for layer in layers]
    elif schedule == "linear":
        w = [float(layer) for layer in layers]
    else:
        k = float(params["k"])
        if not math.isfinite(k):
            raise ValueError(f"exp schedule needs a finite k, got {k}")
        top = k * (num_layers if k >= 0 else 1)  # softmax without overflow
        w = [math.exp(k * layer - top) for layer in layers]
    total = math.fsum(w)
    return [x / total for x in w]


def parse_schedule(spec: str) -> tuple[str, dict[str, float]]:
    """Parse a ``WEIGHTS`` string such as ``uniform``, ``last_k:2`` or ``exp:0.5``.

    The single optional parameter after ``:`` is the schedule's ``k``.
    """
    name, _, arg = spec.partition(":")
    if name not in _SCHEDULE_PARAMS:
        raise ValueError(f"unknown layer-weight schedule {name!r}; valid: {', '.join(SCHEDULES)}")
    if not arg:
        return name, {}
    if "k" not in _SCHEDULE_PARAMS[name]:
        raise ValueError(f"schedule {name!r} takes no parameter (got {spec!r})")
    try:
        return name, {"k": float(arg)}
    except ValueError:
        raise ValueError(
            f"schedule parameter must be a number, got {spec!r} (e.g. exp:0.25)"
        ) from None
