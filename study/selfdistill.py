"""``python -m study.selfdistill``: the self-distillation paper's experiment at this project's scale
-> docs/selfdistill.md.

A trained run that shows a last-layer jump (SOURCE, at ITER) is exported to Hugging Face and
imported back (``make export`` then ``make import``: the path a user takes with a released model),
then continued for ITERS more iterations (default a tenth of the source's) in several ways from the
same weights, seed and data order: REG=none (what continuing alone does), REG=jreg and
REG=selfdistill (the paper's k, alpha and KL direction; the self teacher, and the paper's frozen
teacher: the imported model). Every end point and the source are analysed on the same held-out
sample (``make analyze``: D_l, S_model, zeta_L and the logit lens at every layer), and the page
answers the paper's claims by fixed rules, each against the REG=none continuation (so the change
is the regulariser's, not more training's). ``make eval LAYERS=all`` scores every model's layers
on the held-out tasks (the paper's per-layer figures).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common.files import REPO, atomic_write_text, read_jsonl
from common.settings import parse_settings
from eval.rundir import ANALYSIS_FILE
from study.runner import last_checkpoint, run_logged

SETTINGS = {
    "SOURCE": "the trained run to continue (default runs/study/none)",
    "ITER": "its checkpoint (default its last)",
    "ITERS": "iterations of each continuation (default a tenth of ITER)",
    "LR": "peak learning rate of the continuations (default 3e-4, a tenth of the study's)",
    "ROOT": "folder of the imported model and the continuations (default runs/sd)",
    "DOC": "the page (default docs/selfdistill.md; figures in docs/selfdistill/)",
    "STAGES": "comma list of import,train,analyze,layers,report (default all; layers: make eval "
    "LAYERS=all of every model, the paper's per-layer task scores)",
}
ARMS = {
    "none": ["REG=none", "LAMBDA=0"],
    "selfdistill-frozen": ["REG=selfdistill", "LAMBDA=1.0", "SD_TEACHER=frozen"],
    "selfdistill": ["REG=selfdistill", "LAMBDA=1.0"],
    "selfdistill-l0.1": ["REG=selfdistill", "LAMBDA=0.1"],
    "jreg": ["REG=jreg", "LAMBDA=1.0"],
}
"""Continuations: name -> launcher settings (LAMBDA 1.0 is the study's JREG weight; 0.1 is
make pretrain's default), the paper's method first (stages run in this order)."""


LAYER_DOCS = 100
"""Held-out documents of the per-layer tasks (``make eval DOCS=``; 500 by default: 13 layers x 6
models of those took ~1 min per layer on the 2-core VM)."""


def _run(cmd: list[str], log: Path) -> None:
    print(f"selfdistill: {' '.join(cmd[2:])} (log {log})", flush=True)
    code = run_logged(cmd, log)
    if code:
        raise SystemExit(f"error: {' '.join(cmd[2:4])} failed (exit {code}); see {log}")


def analysis_at(run: Path, iteration: int) -> dict | None:
    lines = [x for x in read_jsonl(run / ANALYSIS_FILE) if x["iteration"] == iteration]
    return lines[-1] if lines else None


def numbers(line: dict) -> dict:
    """The page's numbers of one analysis line."""
    D, acc, L = line["D"], line["lens"]["acc"], len(line["D"])
    return {"val_loss": line.get("valid", {}).get("lm_loss"), "heldout_loss": line["lm_loss"],
            "S_model": line["S_model"], "D_L": D[-1], "D_L-1": D[-2],
            "ratio": line["jump_ratio"], "zeta_L": line["zeta_L"], "lens_mid": acc[L // 2],
            "lens_top": sum(acc[L - 3:L]) / 3, "lens_L": acc[L], "D": D, "acc": acc}  # fmt: skip


def move(
    key: str, label: str, up_is_claim: bool, arm: str, x: dict, ref: dict, what: str, source: dict
) -> str:
    """``label: yes|no (...)``: did ``arm`` move ``key`` the claimed way against ``ref``?"""
    d = x[key] - ref[key]
    said = (d > 0) == up_is_claim and d != 0
    return (f"{label}: {'yes' if said else 'no'} ({ref[key]:.4g} with {what}, "
            f"{x[key]:.4g} with {arm}, source {source[key]:.4g})")  # fmt: skip


CLAIMS = (("S_model", "S_model rises", True),
          ("D_L", "the last layer's displacement D_L falls", False),
          ("lens_top", "logit-lens accuracy of layers L-3..L-1 rises", True),
          ("val_loss", "validation loss (the cost in final-layer quality) rises", True),
          ("lens_L", "final-layer accuracy on the held-out sample falls", False))  # fmt: skip
"""(number, the paper's claim as a sentence, whether the claim is that it goes up)."""


def claims(before: dict, after: dict[str, dict]) -> list[str]:
    """One sentence per paper claim, each arm against the REG=none continuation."""
    ref = after.get("none") or before
    what = "the REG=none continuation" if "none" in after else "the source"
    out = []
    for arm in (a for a in after if a != "none"):
        out.append(f"- `{arm}`:")
        out += ["  - " + move(key, label, up, arm, after[arm], ref, what, before)
                for key, label, up in CLAIMS]  # fmt: skip
    return out + ["", "One run per arm (one seed): a difference here is not tested against seed "
                  "noise; docs/study.md's paired seeds show how large that noise is."]  # fmt: skip


def figure(rows: dict[str, dict], key: str, ylabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, x in rows.items():
        start = 1 if key == "D" else 0
        ax.plot(range(start, start + len(x[key])), x[key], marker="o", ms=3, label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    if key == "D":
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def layer_scores(run: Path, iteration: int) -> dict | None:
    """``make eval LAYERS=all``'s scores of ``run`` at ``iteration``: ``{(task, metric): [score
    at layer 0..L]}`` (None until every layer is scored)."""
    from eval.layer_scores import collect_layers

    target = collect_layers(run / "lm_eval").get(f"iter_{iteration:07d}")
    if target is None or len(target["layers"]) != target["num_layers"] + 1:
        return None
    keys = sorted({k for scores, _ in target["layers"].values() for k in scores})
    return {k: [scores.get(k) for scores, _ in target["layers"].values()] for k in keys}


def layer_section(models: dict[str, tuple[Path, int]], doc: Path) -> list[str]:
    """The page's per-layer task scores: a table per (task, metric), one row per model."""
    from eval.layer_scores import plot_layers

    scored = {name: layer_scores(run, n) for name, (run, n) in models.items()}
    scored = {name: x for name, x in scored.items() if x}
    if not scored:
        return []
    figure_path = doc.parent / doc.stem / "layer_scores.png"
    sources = {name: models[name][0] / "lm_eval" for name in scored}
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    plot_layers(sources, figure_path)
    lines = ["## Per-layer task scores (`make eval LAYERS=all`)", "",
             f"lm-eval on the run's held-out tasks built from {LAYER_DOCS} held-out documents "
             "(`DOCS=`), every layer through the logit lens (layer 0: the embeddings; L: the "
             "model). The source's row is its own checkpoint.", "",
             f"![task scores per layer]({doc.stem}/{figure_path.name})", ""]  # fmt: skip
    for key in sorted({k for x in scored.values() for k in x}):
        width = max(len(x.get(key, [])) for x in scored.values())
        lines += [f"**{key[0]}: {key[1]}**", "",
                  "| model | " + " | ".join(f"{i}" for i in range(width)) + " |",
                  "|---|" + "---|" * width]  # fmt: skip
        lines += [f"| {name} | " + " | ".join(fmt(v) for v in x.get(key, [])) + " |"
                  for name, x in scored.items()]  # fmt: skip
        lines.append("")
    return lines


def fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def report(source: Path, it: int, root: Path, iters: int, doc: Path) -> None:
    before = analysis_at(source, it)
    if before is None:
        raise SystemExit(f"error: {source} iteration {it} is not analysed (STAGES=analyze)")
    rows = {f"source (iteration {it})": numbers(before)}
    after = {}
    for arm in ARMS:
        line = analysis_at(root / arm, iters)
        if line is not None:
            after[arm] = rows[arm] = numbers(line)
    figs = doc.parent / doc.stem
    figure(rows, "D", "D_l (held-out)", figs / "D_per_layer.png")
    figure(rows, "acc", "logit-lens accuracy (held-out)", figs / "lens_acc_per_layer.png")
    cmd = json.loads((root / "experiment.json").read_text())
    keys = [("val_loss", "val loss"), ("heldout_loss", "held-out loss"), ("S_model", "S_model"),
            ("D_L", "D_L"), ("D_L-1", "D_(L-1)"), ("ratio", "D_L/D_(L-1)"), ("zeta_L", "zeta_L"),
            ("lens_mid", "lens acc L/2"), ("lens_top", "lens acc L-3..L-1"),
            ("lens_L", "acc at L")]  # fmt: skip
    L = len(before["D"])
    lines = ["# Self-distillation against JREG, continuing a trained run", "",
             "Generated by `python -m study.selfdistill` (`study/selfdistill.py`) from the run "
             "files; do not edit the numbers by hand.", "",
             "## Setup", "",
             f"- Source: `{cmd['source']}` at iteration {it} ({L} layers), exported with "
             f"`make export` and imported with `make import` into `{cmd['root']}/base`.",
             f"- Each continuation: {iters} iterations from the imported weights (`INIT=`), "
             f"peak lr {cmd['lr']} (cosine, a tenth of the study's), the study's batch and "
             "data, seed 1234; settings: " + "; ".join(
                 f"`{a}`: {' '.join(s)}" for a, s in ARMS.items()) + ".",
             "- `REG=selfdistill` uses the paper's settings (k = 0.25, alpha = 1, KL(q_l || "
             "q_target) as the paper writes it); the target is the model's own detached output "
             "(`SD_TEACHER=self`) unless the arm says `SD_TEACHER=frozen` (the paper's: the "
             "imported model's output, a frozen copy read from `INIT=`).",
             "- Analysis: the same 64 held-out sequences for every model (`make analyze`); "
             "validation loss: the validation pass training ran, replayed.",
             f"- Reproduce: `python -m study.selfdistill {cmd['argv']}`.", "",
             "## Before and after", "",
             "| model | " + " | ".join(k[1] for k in keys) + " |",
             "|---|" + "---|" * len(keys)]  # fmt: skip
    lines += [f"| {name} | " + " | ".join(fmt(x[k]) for k, _ in keys) + " |"
              for name, x in rows.items()]  # fmt: skip
    lines += ["", "## Per layer", "", "![D_l per layer](selfdistill/D_per_layer.png)",
              "![logit-lens accuracy per layer](selfdistill/lens_acc_per_layer.png)", "",
              "| model | " + " | ".join(f"acc {i}" for i in range(L + 1)) + " |",
              "|---|" + "---|" * (L + 1)]  # fmt: skip
    lines += [f"| {name} | " + " | ".join(f"{a:.3f}" for a in x["acc"]) + " |"
              for name, x in rows.items()]  # fmt: skip
    lines += ["", "| model | " + " | ".join(f"D_{i}" for i in range(1, L + 1)) + " |",
              "|---|" + "---|" * L]  # fmt: skip
    lines += [f"| {name} | " + " | ".join(f"{d:.4f}" for d in x["D"]) + " |"
              for name, x in rows.items()]  # fmt: skip
    models = {f"source (iteration {it})": (source, it), **{a: (root / a, iters) for a in after}}
    lines += ["", *layer_section(models, doc)]
    lines += ["## The paper's claims, by rule", "", *claims(rows[next(iter(rows))], after), ""]
    atomic_write_text(doc, "\n".join(lines))
    print(f"selfdistill: wrote {doc}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        v = parse_settings(argv, SETTINGS, ValueError)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    source, root = REPO / v.get("SOURCE", "runs/study/none"), REPO / v.get("ROOT", "runs/sd")
    it = int(v["ITER"]) if "ITER" in v else last_checkpoint(source)
    if it is None:
        print(f"error: {source} has no checkpoint", file=sys.stderr)
        return 2
    iters, lr = int(v.get("ITERS", max(1, it // 10))), v.get("LR", "3e-4")
    doc = REPO / v.get("DOC", "docs/selfdistill.md")
    stages = v.get("STAGES", "import,train,analyze,layers,report").split(",")
    py, logs = [sys.executable, "-m"], root / "logs"
    root.mkdir(parents=True, exist_ok=True)
    record = {"source": str(source.relative_to(REPO)), "root": str(root.relative_to(REPO)),
              "lr": lr, "argv": " ".join(a for a in argv if not a.startswith("STAGES="))}  # fmt: skip
    (root / "experiment.json").write_text(json.dumps(record) + "\n")
    hf = source / "hf" / f"iter_{it:07d}"
    if "import" in stages and not (root / "base" / "import.json").is_file():
        _run([*py, "eval", "export", f"RUN={source}", f"ITER={it}"], logs / "export.log")
        _run([*py, "eval", "import", f"MODEL={hf}", f"RUN={root / 'base'}"], logs / "import.log")
    for arm, settings in ARMS.items():
        run = root / arm
        if "train" in stages and last_checkpoint(run) != iters:
            _run([*py, "launcher", f"RUN={run}", f"INIT={root / 'base'}", "SIZE=study",
                  "TRAIN=study", *settings, f"ITERS={iters}", f"SAVE_INTERVAL={iters // 3 or 1}",
                  "SEED=1234", f"ARGS=--lr {lr} --min-lr {float(lr) / 10:g} "
                  f"--eval-interval {iters // 3 or 1}"], logs / f"{arm}.log")  # fmt: skip
        if "analyze" in stages and last_checkpoint(run) == iters and not analysis_at(run, iters):
            _run([*py, "eval", "analyze", f"RUN={run}", f"ITER={iters}"], logs / f"{arm}.log")
    if "analyze" in stages and not analysis_at(source, it):
        _run([*py, "eval", "analyze", f"RUN={source}", f"ITER={it}"], logs / "source.log")
    models = {"source": (source, it), **{a: (root / a, iters) for a in ARMS}}
    for name, (run, n) in models.items():
        if "layers" in stages and last_checkpoint(run) and not layer_scores(run, n):
            _run([*py, "eval", "eval", f"RUN={run}", f"ITER={n}", "LAYERS=all", f"DOCS={LAYER_DOCS}"],
                 logs / f"{name}.layers.log")  # fmt: skip
    if "report" in stages:
        report(source, it, root, iters, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
