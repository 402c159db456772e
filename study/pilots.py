"""``python -m study.pilots``: the study's pilot round, trained side by side, and the rule that
picks the study's depth and LAMBDA from it (written to ``<ROOT>/choice.json``).

Why a rule in code: the study's shape must be one where REG=none shows the final-layer jump in
most seeds (issue 25: at 12 x 64 it did in one seed of three), and LAMBDA must not cost validation
loss. Picking both by hand after looking at the runs is the garden of forking paths; a rule fixed
before the pilots run is not, and a cluster user gets the same choice from the same numbers.

The grid: REG=none at every depth in LAYERS for every seed in SEEDS (the depth pilot), and
REG=jreg with WEIGHTS=uniform at every depth for every LAMBDAS value on the first seed (the lambda
pilot), all at width 64 (``SIZE=study``), ITERS iterations. Each run's last checkpoint is analysed
(held-out D, replayed validation loss), then :func:`choose` reads those numbers.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.files import read_jsonl
from common.settings import parse_settings
from eval.rundir import ANALYSIS_FILE
from study.runner import run_logged

SETTINGS = {
    "ROOT": "folder of the pilot runs (default runs/pilots)",
    "LAYERS": "depths at width 64, comma list (default 12,16,24)",
    "SEEDS": "seeds of the REG=none depth pilot (default 1234,1235)",
    "LAMBDAS": "LAMBDA values of the jreg pilot, on the first seed (default 0.3,1.0,3.0)",
    "ITERS": "iterations of every pilot (default 1500)",
    "SAVE_INTERVAL": "iterations between checkpoints (default 300)",
    "DATA": "dataset (default: make pretrain's)",
    "JOBS": "runs at once (default 1)",
    "DEVICE": "cpu | cuda of the analysis (default: cuda when a GPU is visible)",
    "TE": "make pretrain's TE= for every run (TE=0: a GPU node without Transformer Engine)",
}
LOSS_TOLERANCE = 0.01
"""A LAMBDA is affordable when its validation loss is at most 1% above REG=none's (same depth,
same seed): the rule the first lambda pilot used."""


def grid(layers: list[int], seeds: list[int], lambdas: list[float]) -> list[dict]:
    """The pilot runs: name and launcher settings."""
    runs = [{"name": f"L{n}-none-seed{s}", "layers": n, "reg": "none", "lam": 0.0, "seed": s}
            for n in layers for s in seeds]  # fmt: skip
    runs += [{"name": f"L{n}-jreg-l{lam:g}", "layers": n, "reg": "jreg", "lam": lam,
              "seed": seeds[0]} for n in layers for lam in lambdas]  # fmt: skip
    return runs


def last_analysis(run_dir: Path) -> dict | None:
    """The run's last analysed checkpoint that has a replayed validation loss."""
    lines = [x for x in read_jsonl(run_dir / ANALYSIS_FILE) if "valid" in x]
    return max(lines, key=lambda x: x["iteration"]) if lines else None


def has_jump(D: list[float]) -> bool:
    """The final layer moves the hidden state more than the one before it."""
    return len(D) >= 2 and D[-1] > D[-2]


def choose(numbers: dict[str, dict], layers: list[int], seeds: list[int],
           lambdas: list[float]) -> dict:  # fmt: skip
    """The rule. ``numbers``: run name -> {"D": [...], "val_loss": x} (missing runs left out).

    Depth: the one where REG=none shows D_L > D_(L-1) in the most seeds; ties go to the
    shallower (cheaper) depth; with no jump anywhere, the first depth (today's 12) is kept.
    LAMBDA: at that depth, the largest value whose validation loss is within LOSS_TOLERANCE of
    REG=none's on the same seed; if none is, the smallest value (the gentlest)."""
    why = []
    counts = {}
    for n in layers:
        finished = [s for s in seeds if f"L{n}-none-seed{s}" in numbers]
        jumps = [s for s in finished if has_jump(numbers[f"L{n}-none-seed{s}"]["D"])]
        counts[n] = len(jumps)
        why.append(f"{n} layers: REG=none jumps (D_L > D_(L-1)) in {len(jumps)} of "
                   f"{len(finished)} finished seeds")  # fmt: skip
    best = max(counts.values(), default=0)
    depth = next(n for n in layers if counts.get(n, 0) == best) if best else layers[0]
    why.append(f"chosen depth: {depth}" + ("" if best else " (no depth showed the jump: kept)"))
    ref = numbers.get(f"L{depth}-none-seed{seeds[0]}")
    ok = []
    for lam in lambdas:
        run = numbers.get(f"L{depth}-jreg-l{lam:g}")
        if ref is None or run is None:
            why.append(f"LAMBDA {lam:g}: not finished")
            continue
        change = run["val_loss"] / ref["val_loss"] - 1
        within = change <= LOSS_TOLERANCE
        why.append(f"LAMBDA {lam:g}: validation loss {100 * change:+.2f}% vs REG=none"
                   + (" (within 1%)" if within else " (over 1%)"))  # fmt: skip
        if within:
            ok.append(lam)
    lam = max(ok) if ok else min(lambdas)
    why.append(f"chosen LAMBDA: {lam:g}" + ("" if ok else " (none within 1%: the smallest)"))
    return {"layers": depth, "lambda": lam, "jump_counts": counts, "why": why}


def train_and_analyze(run: dict, root: Path, v: dict) -> None:
    run_dir = root / run["name"]
    log = root / "logs" / f"{run['name']}.log"
    start = time.perf_counter()
    launch = [sys.executable, "-m", "launcher", f"RUN={run_dir}", "SIZE=study",
              f"REG={run['reg']}", f"LAMBDA={run['lam']}", "WEIGHTS=uniform",
              f"SEED={run['seed']}", f"ITERS={v['iters']}", f"SAVE_INTERVAL={v['save']}",
              f"ARGS=--num-layers {run['layers']} --eval-interval {v['save']}"]  # fmt: skip
    launch += [f"{k}={v[k.lower()]}" for k in ("DATA", "TE") if v.get(k.lower())]
    code = run_logged(launch, log)
    if code == 0:
        code = run_logged([sys.executable, "-m", "eval", "analyze", f"RUN={run_dir}",
                      f"ITER={v['iters']}", "SAMPLES=64",
                      *([f"DEVICE={v['device']}"] if v.get("device") else [])], log)  # fmt: skip
    print(f"pilots: {run['name']}: exit {code} after {time.perf_counter() - start:.0f} s "
          f"(log {log})", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        v = parse_settings(argv, SETTINGS, ValueError)
        layers = [int(x) for x in v.get("LAYERS", "12,16,24").split(",")]
        seeds = [int(x) for x in v.get("SEEDS", "1234,1235").split(",")]
        lambdas = [float(x) for x in v.get("LAMBDAS", "0.3,1.0,3.0").split(",")]
        opts = {"iters": int(v.get("ITERS", 1500)), "save": int(v.get("SAVE_INTERVAL", 300)),
                "data": v.get("DATA"), "te": v.get("TE"),
                "device": v.get("DEVICE")}  # fmt: skip
        jobs = int(v.get("JOBS", 1))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    root = Path(v.get("ROOT", "runs/pilots"))
    (root / "logs").mkdir(parents=True, exist_ok=True)
    runs = grid(layers, seeds, lambdas)
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda r: train_and_analyze(r, root, opts), runs))
    numbers = {}
    for run in runs:
        line = last_analysis(root / run["name"])
        if line is not None and line["iteration"] == opts["iters"]:
            numbers[run["name"]] = {"D": line["D"], "val_loss": line["valid"]["lm_loss"]}
    choice = choose(numbers, layers, seeds, lambdas) | {"iteration": opts["iters"]}
    (root / "choice.json").write_text(json.dumps(choice, indent=1) + "\n")
    print("\n".join(f"pilots: {w}" for w in choice["why"]))
    print(f"LAYERS={choice['layers']} LAMBDA={choice['lambda']:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
