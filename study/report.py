"""docs/study.md from the study's run files (``make study``, or ``STAGES=report`` alone).

Nothing in it is typed by hand except the paragraph between the ``hand-written`` markers, which is
kept when the report is regenerated. Figures go to ``<DOC folder>/<DOC name>/`` (docs/study/).
"""

from __future__ import annotations

import os
from pathlib import Path

from common.files import atomic_write_text
from megatron_ext.metrics import jump_rate
from study import collect, figures
from study.paired import describe
from study.reading import final_only_moves, fmt, growth, jump_layers
from study.seeds import seeds_section
from study.settings import StudySettings

CLAIMS = (("D_L", "JREG lowers D_L"), ("zeta_L", "JREG lowers zeta_L"),
          ("D_L/D_(L-1)", "JREG lowers the jump ratio"),
          ("last-quarter share of D", "JREG lowers the last quarter's share of D"),
          ("S_model", "JREG changes S_model (smoother transitions)"),
          ("lens acc mid", "JREG's middle layer contributes more (logit-lens accuracy at L/2)"),
          ("lens loss mid", "JREG's middle layer contributes more (logit-lens loss at L/2)"),
          ("val loss", "JREG's cost in validation loss"))  # fmt: skip
"""(label in study.seeds.METRICS, claim) of the reading's jreg-vs-none sentences."""
START, END = "<!-- hand-written: start -->", "<!-- hand-written: end -->"
PLACEHOLDER = (
    "_(The lead's reading of these numbers goes here; kept when the page is regenerated.)_"
)


def table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(fmt(x) if not isinstance(x, str) else x for x in r) + " |"
                  for r in rows]  # fmt: skip


def hand_written(doc: Path) -> str:
    text = doc.read_text() if doc.is_file() else ""
    if START in text and END in text:
        return text.split(START, 1)[1].split(END, 1)[0].strip()
    return PLACEHOLDER


def setup_section(s: StudySettings, runs: list[dict], root: Path) -> list[str]:
    info = next((collect.setup(r["dir"]) for r in runs if r["exists"]), {})
    if not info:
        return ["## Setup", "", "No run has started yet (`make study`)."]
    done = ", ".join(r["name"] for r in runs if r["final"]["iteration"] is not None)
    out = ["## Setup", "",
           f"- Recipe: `SIZE={s.size}`, {info['num_layers']} layers x hidden "
           f"{info['hidden_size']} (ffn {info['ffn_hidden_size']}, {info['num_attention_heads']} "
           f"heads, {info['num_query_groups']} KV groups), sequence {info['seq_length']}.",
           f"- Schedule: {info['train_iters']} iterations x {info['global_batch_size']} sequences "
           f"= {fmt(info['tokens'])} tokens; lr {info['lr']} cosine to {info['min_lr']}; a "
           f"checkpoint every {info['save_interval']} iterations, a validation pass "
           f"({info['eval_iters']} iterations) every {info['eval_interval']}.",
           f"- Data: {info.get('data', info['train_data_path'])}.",
           f"- JREG: `LAMBDA={s.lam}`, `WEIGHTS={s.weights}` (run `jreg`), `WEIGHTS=final` (run "
           f"`jreg-final`); main seed {s.seed}, extra seeds "
           f"{', '.join(map(str, s.seeds)) or 'none'}.",
           f"- Analysis: {s.samples} held-out sequences of the test split per checkpoint "
           "(`make analyze`); tasks: `make eval` on the last checkpoint.",
           f"- Runs with numbers: {done or 'none yet'}.",
           "- Machine(s): " + ("; ".join(
               f"{m['cpu']}, {m['cpus']} CPU(s), {m['memory_gib']} GiB, GPUs: {m['gpus']}, "
               f"OMP_NUM_THREADS={m['omp_threads'] or 'unset'}" for m in collect.machines(root)
           ) or "not recorded (no stage finished: every run was stopped)"),
           "- Reproduce: `make study " + " ".join(
               f"{k}={v}" for k, v in (("SIZE", s.size), ("LAMBDA", s.lam),
                                       ("WEIGHTS", s.weights), ("SEED", s.seed)))
           + (f" SEEDS={','.join(map(str, s.seeds))}" if s.seeds else " SEEDS=none")
           + (f" ITERS={s.iters}" if s.iters else "")
           + (f" SAVE_INTERVAL={s.save_interval}" if s.save_interval else "")
           + (f" DATA={collect.rel_data(s.data)}" if s.data != StudySettings().data else "")
           + (f" ARGS='{s.args}'" if s.args else "") + (f" TE={s.te}" if s.te else "")
           + (f" AT={s.at}" if s.at is not None else "") + "`.",
           *([f"- Compared at iteration {s.at} (`AT={s.at}`): every run's numbers are its "
              f"validation pass / analysis there, the lines after it are left out."]
             if s.at is not None else []),
           ""]  # fmt: skip
    rows = [[r["name"], r["seed"], fmt(r["seconds"] / 60, 3) if r["seconds"] else "-",
             r["final"]["iteration"] if r["final"]["iteration"] is not None else "-"]
            for r in runs if r["exists"]]  # fmt: skip
    return out + table(["run", "seed", "training wall time (min)", "last checkpoint"], rows)


def final_section(runs: list[dict]) -> list[str]:
    header = ["run", "iteration", "tokens", "val loss", "val ppl", "D_L", "zeta_L", "D_L/D_(L-1)",
              "S_model", "lens acc mid", "lens acc last", "active fraction",
              "max abs act."]  # fmt: skip
    rows = []
    for r in runs:
        f = r["final"]
        if f["iteration"] is None:
            continue
        name = r["name"] if r["finished"] else f"{r['name']} (unfinished)"
        rows.append([name, f["iteration"], f["tokens"], f["val_loss"], f["val_ppl"],
                     f["D"][-1], f.get("zeta_L"), f.get("jump_ratio"), f.get("S_model"),
                     f.get("lens_mid"), f.get("lens_last"), f.get("active"),
                     f.get("max_act")])  # fmt: skip
    out = ["## Every run at its last checkpoint", "",
           "Validation loss: the validation pass after the last checkpoint; D, zeta, ratio, "
           "S_model, logit-lens accuracy (middle layer L/2 and last layer L), void active fraction "
           "and the largest |activation| of the residual stream: the held-out analysis sample.",
           ""]  # fmt: skip
    out += table(header, rows) if rows else ["No run has a checkpoint yet."]
    names = sorted({k for r in runs for k in r["scores"]})
    if names:
        out += ["", "Local task scores (`make eval`, last checkpoint):", ""]
        out += table(["run", *names], [[r["name"], *[r["scores"].get(k) for k in names]]
                                       for r in runs if r["scores"]])  # fmt: skip
    return out


def over_training_section(main: list[dict], fig_dir: Path, doc: Path) -> list[str]:
    out = ["## The jump over training", ""]
    rel = os.path.relpath(fig_dir, doc.parent)
    out += [f"![D_L and zeta_L over tokens seen]({rel}/jump_over_tokens.png)", ""]
    its = sorted({x["iteration"] for r in main for x in r["analysis"]})
    if its:
        by = {r["name"]: {x["iteration"]: x for x in r["analysis"]} for r in main}
        header = ["iteration", "tokens"] + [f"{r['name']} {k}" for r in main
                                            for k in ("D_L", "zeta_L")]  # fmt: skip
        rows = []
        for it in its:
            line = next(by[r["name"]][it] for r in main if it in by[r["name"]])
            row: list = [it, line["tokens_seen"]]
            for r in main:
                x = by[r["name"]].get(it)
                row += [x["D"][-1], collect.zeta(x)] if x else ["-", "-"]
            rows.append(row)
        out += table(header, rows)
    out += ["", "## D_l per layer", "", f"![D_l per layer]({rel}/D_per_layer.png)", ""]
    with_lines = [r for r in main if r["analysis"]]
    if with_lines:
        picks = {r["name"]: figures.pick(r["analysis"]) for r in with_lines}
        header = ["layer"] + [f"{n} iter {x['iteration']}" for n, p in picks.items() for x in p]
        layers = len(with_lines[0]["analysis"][-1]["D"])
        out += table(header, [[str(i + 1), *[x["D"][i] for p in picks.values() for x in p]]
                              for i in range(layers)])  # fmt: skip
        out += [
            "",
            "The JREG paper's jump rate per layer, zeta_l = 100 sum_(k=l..L) "
            "max(0, D_k - D_(k-1)), at the last checkpoint (zeta_L is the last row):",
            "",
        ]
        finals = [r["analysis"][-1]["D"] for r in with_lines]
        out += table(["layer", *[r["name"] for r in with_lines]],
                     [[str(layer), *[jump_rate(d, layer) for d in finals]]
                      for layer in range(2, layers + 1)])  # fmt: skip
    return out


def reading_section(main: dict, comparisons: dict, s: StudySettings) -> list[str]:
    out = ["## Honest reading (generated by rules from the numbers above)", ""]
    base = main.get("none")
    if base and base["analysis"]:
        lines = base["analysis"]
        its = [x["iteration"] for x in lines]
        out.append("- Baseline (`none`): " + growth("D_L", [x["D"][-1] for x in lines], its))
        out.append(
            "- Baseline (`none`): " + growth("zeta_L", [collect.zeta(x) for x in lines], its)
        )
        jumped = [x["iteration"] for x in lines if x["D"][-1] > x["D"][-2]]
        last = lines[-1]["D"]
        out.append("- Baseline: a final-layer jump (D_L > D_(L-1)) first at iteration: "
                   f"{jumped[0] if jumped else 'never'}; at the last checkpoint: "
                   f"{'yes' if last[-1] > last[-2] else 'no'}, layer of the largest rise of D: "
                   f"{jump_layers(last)['top_rise'] or 'none'}.")  # fmt: skip
    else:
        out.append("- Baseline (`none`): not analysed yet.")
    for label, what in CLAIMS:
        out.append(
            f"- {describe(what, comparisons['jreg'][label], f'jreg (LAMBDA={s.lam})', 'none')}"
        )
    final = main.get("jreg-final")
    if base and final and base["final"]["D"] and final["final"]["D"]:
        out.append("- " + final_only_moves(base["final"]["D"], final["final"]["D"]))
        out.append("- " + describe("Final-only's cost in validation loss",
                                   comparisons["jreg-final"]["val loss"], "jreg-final", "none"))  # fmt: skip
    else:
        out.append("- Final-only (`jreg-final`) against `none`: not measured yet.")
    return out


def pilots_section(paths: list[Path]) -> list[str]:
    """One table per PILOTS entry (a run dir, or a folder of them): its pilots compared at the
    last checkpoint all of them have analysed (``make analyze``), else at the last validation pass
    all of them reached; validation loss against the REG=none pilot of the same shape."""
    out = ["## Pilots", ""]
    for path in paths:
        dirs = collect.pilot_dirs([path])
        analysed = [collect.analysed_iterations(d) for d in dirs]
        if dirs and all(analysed):
            common, by_analysis = min(a[-1] for a in analysed), True
        else:
            lasts = [i for i in map(collect.last_valid_iteration, dirs) if i is not None]
            common, by_analysis = (min(lasts) if lasts else None), False
        pilots = [p for p in (collect.pilot(d, common, by_analysis) for d in dirs) if p["D"]]
        if not pilots:
            continue
        out += [f"Pilots in `{collect.rel(path)}`" + (f", compared at iteration {common}:" if common else ":"),
                ""]  # fmt: skip
        rows = []
        for p in pilots:
            ref = next((q for q in pilots if q["reg"] == "none" and q["shape"] == p["shape"]
                        and q["iteration"] == p["iteration"]), None)  # fmt: skip
            change = "-"
            if ref is not None and p["reg"] != "none" and p["val_loss"] and ref["val_loss"]:
                change = f"{100 * (p['val_loss'] / ref['val_loss'] - 1):+.2f}%"
            rows.append([p["name"], p["shape"], f"{p['iteration']} / {p['planned']}", p["reg"],
                         p["tokens"], p["val_loss"], change, p["D"][-1], p["zeta_L"],
                         p["jump_ratio"], str(jump_layers(p["D"])["top_rise"] or "none"),
                         p["source"]])  # fmt: skip
        out += table(["pilot", "layers x hidden", "iteration / planned", "REG", "tokens",
                      "val loss", "val loss vs none", "D_L", "zeta_L", "D_L/D_(L-1)",
                      "largest rise at layer", "source"], rows)  # fmt: skip
        out += ["", "D_l per layer at that measurement:", ""]
        out += [f"- {p['name']}: " + " ".join(fmt(d, 3) for d in p["D"]) for p in pilots] + [""]
    if len(out) == 2:
        return out + ["No pilot runs given (`make study PILOTS=dir1,dir2` summarises them)."]
    return out


def write_report(s: StudySettings) -> list[Path]:
    """Write the report and its figures; returns the files written."""
    seconds = collect.train_seconds(s.root)
    runs = [collect.collect_run(s, spec, seconds) for spec in s.runs()]
    main = {r["name"]: r for r in runs if r["main"]}
    fig_dir = s.doc.parent / s.doc.stem
    written = [figures.over_tokens(runs, fig_dir / "jump_over_tokens.png"),
               figures.per_layer(runs, fig_dir / "D_per_layer.png")]  # fmt: skip
    seeds, comparisons = seeds_section(runs)
    lines = ["# The study: the final-layer jump over pretraining, with and without JREG", "",
             f"Generated by `make study` (`study/report.py`) from the run files in `{collect.rel(s.root)}`; "
             "do not edit the numbers by hand. zeta and Psi follow the JREG paper, D_l and "
             "S_model the self-distillation paper, the jump ratio D_L/D_(L-1) is ours.", "",
             *setup_section(s, runs, s.root), "", *final_section(runs), "",
             *over_training_section(list(main.values()), fig_dir, s.doc), "", *seeds, "",
             *reading_section(main, comparisons, s), "", "### The lead's reading", "", START,
             hand_written(s.doc), END, "", *pilots_section(s.pilots), ""]  # fmt: skip
    s.doc.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(s.doc, "\n".join(lines))
    return [s.doc, *written]
