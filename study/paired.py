"""Paired comparisons between two arms of the study (issue 25): the same seed means the same
initialisation and data order in both arms, so each seed gives one difference ``other - base``.

Pure functions over plain numbers (no file, torch or scipy), tested on hand-made numbers:

* only seeds with a number in both arms are paired; a seed in one arm only is listed as unpaired
  and left out of every statistic;
* the 95% interval is the t-interval on the paired differences, mean +- t_(0.975, n-1) * sd /
  sqrt(n); t comes from the table T975 below (the standard two-sided 95% quantiles, exact to
  the 3 decimals printed in every t table) for n - 1 <= 30, and from the Cornish-Fisher expansion
  of the t quantile around the normal one above (error < 1e-3 there);
* the sign count: how many differences share the sign of the mean difference; with few pairs the
  exact two-sided sign test p (binomial, p = 1/2, zero differences dropped) is printed as well;
* the verdict: ``lower`` / ``higher`` only when the interval excludes 0; ``not shown`` when it
  contains 0, or when there is one pair (no interval); ``missing`` when no seed is paired.
"""

from __future__ import annotations

import math
import statistics

from study.reading import fmt

T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip
"""Two-sided 95% quantiles of Student's t, t_(0.975, df) for df = 1..30."""
Z975 = 1.959964


def t975(df: int) -> float:
    """t_(0.975, df): the table, then the Cornish-Fisher expansion (df > 30)."""
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))  # fmt: skip


def sign_test_p(differences: list[float]) -> float | None:
    """Exact two-sided sign test p (zeros dropped); None when every difference is 0."""
    signs = [d for d in differences if d != 0]
    n = len(signs)
    if not n:
        return None
    k = min(sum(d > 0 for d in signs), sum(d < 0 for d in signs))
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def usable(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def paired(base: dict[int, float | None], other: dict[int, float | None]) -> dict:
    """``other`` against ``base``, both ``{seed: value}``: pairs, differences and the verdict."""
    seeds = sorted(set(base) | set(other))
    pairs = [s for s in seeds if usable(base.get(s)) and usable(other.get(s))]
    unpaired = [s for s in seeds if s not in pairs and (usable(base.get(s))
                                                        or usable(other.get(s)))]  # fmt: skip
    diffs = [other[s] - base[s] for s in pairs]
    out = {"seeds": pairs, "unpaired": unpaired, "diffs": diffs, "n": len(diffs), "mean": None,
           "low": None, "high": None, "same_sign": None, "p_sign": None, "rel": None,
           "base_mean": None, "other_mean": None, "verdict": "missing"}  # fmt: skip
    if not diffs:
        return out
    mean = statistics.fmean(diffs)
    base_mean = statistics.fmean(base[s] for s in pairs)
    out.update(mean=mean, base_mean=base_mean, other_mean=statistics.fmean(other[s] for s in pairs),
               rel=100 * mean / abs(base_mean) if base_mean else None,
               same_sign=sum((d > 0) == (mean > 0) and d != 0 for d in diffs),
               p_sign=sign_test_p(diffs), verdict="not shown")  # fmt: skip
    if len(diffs) > 1:
        half = t975(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
        out.update(low=mean - half, high=mean + half)
        if out["low"] > 0 or out["high"] < 0:
            out["verdict"] = "higher" if mean > 0 else "lower"
    return out


def interval(c: dict) -> str:
    """``[low, high]``, or why there is none."""
    if c["low"] is None:
        return "none (one pair)" if c["n"] == 1 else "-"
    return f"[{fmt(c['low'], 3)}, {fmt(c['high'], 3)}]"


def describe(what: str, c: dict, other: str, base: str) -> str:
    """One sentence for a ``paired`` result, its interval always printed."""
    if c["verdict"] == "missing":
        return f"{what}: no seed finished in both {other} and {base}, not measured."
    rel = f" ({c['rel']:+.2f}%)" if c["rel"] is not None else ""
    p = f", sign test p {fmt(c['p_sign'], 3)}" if c["p_sign"] is not None else ""
    facts = (f"{other} - {base} over {c['n']} paired seed(s) {', '.join(map(str, c['seeds']))}: "
             f"mean difference {fmt(c['mean'])}{rel}, 95% t-interval {interval(c)}, "
             f"{c['same_sign']} of {c['n']} with that sign{p}")  # fmt: skip
    if c["unpaired"]:
        facts += f"; unpaired seed(s) {', '.join(map(str, c['unpaired']))} not used"
    if c["verdict"] == "not shown":
        why = "one pair gives no interval" if c["low"] is None else "the interval contains 0"
        return f"{what}: not shown ({why}; {facts})."
    return f"{what}: {other} is {c['verdict']} than {base} (the interval excludes 0; {facts})."
