"""Timing shared by ``make bench``'s parts: interleaved rounds, the median of repeats.

No torch import here, so ``python -m bench`` can refuse bad arguments before torch loads.
"""

from __future__ import annotations

import statistics
import time

REGS = ("none", "jreg", "l2rel", "selfdistill")


def _stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "repeats": xs}


def interleaved(fns: dict, repeats: int, warmup: int, sync) -> dict[str, dict]:
    """Time each callable once per round, rounds A B C A B C ...; seconds per call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {k: _stats(v) for k, v in times.items()}
