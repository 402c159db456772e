"""The paired statistics of the study (study/paired.py) on hand-made numbers, in closed form."""

from __future__ import annotations

import math

import pytest

from study.paired import describe, paired, sign_test_p, t975
from study.reading import tail_share


def arms(diffs: list[float], base: float = 10.0) -> tuple[dict, dict]:
    seeds = range(1, len(diffs) + 1)
    return {s: base for s in seeds}, {s: base + d for s, d in zip(seeds, diffs, strict=True)}


def test_t_interval_closed_form():
    c = paired(*arms([1.0, 2.0, 3.0]))  # mean 2, sd 1, n 3
    half = 4.303 * 1.0 / math.sqrt(3)
    assert c["mean"] == pytest.approx(2.0) and c["n"] == 3
    assert (c["low"], c["high"]) == pytest.approx((2 - half, 2 + half))
    assert c["low"] < 0 and c["verdict"] == "not shown" and c["same_sign"] == 3
    assert c["p_sign"] == pytest.approx(0.25)  # 2 * (1/2)^3
    assert c["rel"] == pytest.approx(20.0)  # 2 / 10
    c = paired(*arms([2.0, 2.5, 3.0]))  # mean 2.5, sd 0.5: 2.5 +- 1.242
    assert (c["low"], c["high"]) == pytest.approx((2.5 - 4.303 * 0.5 / math.sqrt(3),
                                                   2.5 + 4.303 * 0.5 / math.sqrt(3)))  # fmt: skip
    assert c["verdict"] == "higher"


def test_interval_containing_zero_is_not_shown():
    c = paired(*arms([-1.0, -2.0, 0.5, -0.5]))  # mean -0.75, sd 1.0408
    half = 3.182 * statistics_sd([-1.0, -2.0, 0.5, -0.5]) / 2
    assert (c["low"], c["high"]) == pytest.approx((-0.75 - half, -0.75 + half))
    assert c["low"] < 0 < c["high"] and c["verdict"] == "not shown"
    assert c["same_sign"] == 3 and c["p_sign"] == pytest.approx(2 * 5 / 16)
    text = describe("JREG lowers D_L", c, "jreg", "none")
    assert text.startswith("JREG lowers D_L: not shown (the interval contains 0;")
    assert f"95% t-interval [{-0.75 - half:.3g}, {-0.75 + half:.3g}]" in text


def statistics_sd(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def test_lower_unpaired_and_missing():
    base = {1: 0.0131, 2: 0.0030, 3: 0.0050, 4: 0.0040}
    other = {1: 0.0095, 2: 0.0000, 3: 0.0017, 5: 0.0010}  # seed 4 and 5: one arm only
    c = paired(base, other)
    assert c["seeds"] == [1, 2, 3] and c["unpaired"] == [4, 5]
    assert c["diffs"] == pytest.approx([-0.0036, -0.0030, -0.0033])
    assert c["verdict"] == "lower" and c["high"] < 0
    text = describe("JREG lowers D_L", c, "jreg", "none")
    assert "jreg is lower than none (the interval excludes 0;" in text
    assert "unpaired seed(s) 4, 5 not used" in text
    one = paired({1: 1.0}, {1: 0.5, 2: 0.1})
    assert one["verdict"] == "not shown" and one["low"] is None and one["unpaired"] == [2]
    assert "not shown (one pair gives no interval;" in describe("x", one, "jreg", "none")
    none = paired({1: 1.0}, {2: 0.5, 3: None})
    assert none["verdict"] == "missing" and none["unpaired"] == [1, 2]
    assert "no seed finished in both" in describe("x", none, "jreg", "none")


def test_sign_test_and_t_quantiles():
    assert sign_test_p([1, 1, 1, 1, 1]) == pytest.approx(2 / 32)
    assert sign_test_p([1, -1]) == 1.0 and sign_test_p([0, 0]) is None
    assert sign_test_p([1, 1, 0]) == pytest.approx(0.5)  # the zero is dropped
    assert t975(2) == 4.303 and t975(30) == 2.042
    assert t975(40) == pytest.approx(2.021, abs=1e-3) and t975(120) == pytest.approx(
        1.980, abs=1e-3
    )
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 4, 9, 30, 31, 60, 500):
        assert t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=1e-3), df
    with pytest.raises(ValueError):
        t975(0)


def test_tail_share():
    assert tail_share([0.4, 0.1, 0.1, 0.2]) == pytest.approx(0.2 / 0.4)  # L=4: layer 4
    d = [9.0] + [1.0] * 10 + [3.0]  # L=12: layers 10..12 over layers 2..12
    assert tail_share(d) == pytest.approx(5.0 / 13.0)
    assert tail_share([0.4]) is None and tail_share([0.4, 0.0]) is None and tail_share(None) is None
