"""The report's seed sections: every seed's numbers, then the paired comparisons (study/paired.py)
of jreg against none, and of jreg-final against none, at the last checkpoint.

Only finished runs count (a run still training is shown in the per-run table, not here).
"""

from __future__ import annotations

from study.paired import interval, paired
from study.reading import fmt

METRICS = (("val loss", "val_loss"), ("D_L", "D_L"), ("zeta_L", "zeta_L"),
           ("D_L/D_(L-1)", "jump_ratio"), ("last-quarter share of D", "tail_share"),
           ("S_model", "S_model"), ("lens acc mid", "lens_mid"),
           ("lens loss mid", "lens_loss_mid"))  # fmt: skip
"""(label, key of the run's final numbers) of every metric compared between arms."""


def value(run: dict, key: str) -> float | None:
    f = run["final"]
    return (f["D"][-1] if f["D"] else None) if key == "D_L" else f.get(key)


def by_seed(runs: list[dict], group: str, key: str) -> dict[int, float | None]:
    """``{seed: value}`` of the finished runs of one arm."""
    return {r["seed"]: value(r, key) for r in runs
            if r["group"] == group and r["finished"] and r["final"]["iteration"] is not None}  # fmt: skip


def comparisons(runs: list[dict], other: str, base: str = "none") -> dict[str, dict]:
    """label -> ``paired`` result of arm ``other`` against arm ``base``."""
    return {label: paired(by_seed(runs, base, key), by_seed(runs, other, key))
            for label, key in METRICS}  # fmt: skip


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(x if isinstance(x, str) else fmt(x) for x in r) + " |"
                  for r in rows]  # fmt: skip


def per_seed_rows(runs: list[dict]) -> list[str]:
    """One row per finished run of the arms none and jreg, seed by seed."""
    groups = ("none", "jreg")
    done = [r for r in runs
            if r["group"] in groups and r["finished"] and r["final"]["iteration"] is not None]  # fmt: skip
    rows = [[str(r["seed"]), r["group"], r["name"], *[value(r, key) for _, key in METRICS]]
            for r in sorted(done, key=lambda r: (r["seed"], groups.index(r["group"])))]  # fmt: skip
    if not rows:
        return ["No seed has finished yet."]
    return table(["seed", "arm", "run", *[label for label, _ in METRICS]], rows)


def paired_rows(comps: dict[str, dict]) -> list[str]:
    rows = []
    for label, c in comps.items():
        diffs = ", ".join(f"{s}: {fmt(d, 3)}" for s, d in zip(c["seeds"], c["diffs"], strict=True))
        rows.append([label, str(c["n"]), c["base_mean"], c["other_mean"], diffs or "-", c["mean"],
                     interval(c), f"{c['same_sign']} of {c['n']}" if c["n"] else "-",
                     c["p_sign"], ", ".join(map(str, c["unpaired"])) or "-", c["verdict"]])  # fmt: skip
    return table(["metric", "pairs", "mean none", "mean other", "difference per seed",
                  "mean difference", "95% t-interval", "same sign", "sign test p",
                  "unpaired (not used)", "verdict"], rows)  # fmt: skip


def seeds_section(runs: list[dict]) -> tuple[list[str], dict[str, dict]]:
    """The section's lines and the jreg-vs-none comparisons the reading quotes."""
    jreg = comparisons(runs, "jreg")
    out = ["## Seeds (last checkpoint)", "",
           "Every finished run of `none` and `jreg`, seed by seed (the same seed: the same "
           "initialisation and data order in both arms). The last-quarter share of D is the share "
           "of the displacement of layers 2..L that falls in the last L/4 layers.", "",
           *per_seed_rows(runs), "",
           "Paired by seed, `jreg` - `none`: the mean of the per-seed differences, its 95% "
           "t-interval (t table for n - 1 <= 30), how many seeds' differences share the mean's "
           "sign and the exact two-sided sign test p. A metric is lower or higher only when the "
           "interval excludes 0, otherwise \"not shown\"; a seed finished in one arm only is "
           "listed and not used.", "",
           *paired_rows(jreg)]  # fmt: skip
    final = comparisons(runs, "jreg-final")
    if any(c["n"] for c in final.values()):
        out += ["", "Paired by seed, `jreg-final` - `none`:", "", *paired_rows(final)]
    return out, {"jreg": jreg, "jreg-final": final}
