"""``python -m eval <command> KEY=value ...``: the entry point behind ``make analyze|plots|export|
import|eval``.

Every setting is checked, and the run directory read, before Megatron or lm-eval is imported, so a
wrong RUN, ITER or TASKS fails in about a second with one line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from common.settings import int_setting
from common.settings import parse_settings as _parse
from eval.console_log import library_output_to
from eval.rundir import REPO, EvalError, RunDir, load_run, resolve_run

DEFAULT_RUN = "tiny-jreg"  # what `make pretrain` with no settings trains
HF_DIR = REPO / "runs" / "hf"  # MODEL= results without a run: runs/hf/<name>/
COMMON = {
    "RUN": f"run name under runs/, or a path (default {DEFAULT_RUN})",
    "OUT": "output root (default: the run dir)",
}
COMMANDS = {
    "analyze": {
        **COMMON,
        "ITER": "all (default) | latest | 100,200",
        "SAMPLES": "held-out sequences per checkpoint (default 64)",
        "SPLIT": "split of the held-out sample: test (default) | valid | train",
        "VALID": "auto (default): the validation pass after each checkpoint | off | pass number",
        "ALPHA": "void threshold scale alpha (default 0.8)",
        "FORCE": "1: redo checkpoints already in analysis.jsonl (default 0)",
        "DEVICE": "cpu | cuda (default: cuda when available)",
        "MODEL": "a HF causal LM (local folder or hub id) instead of RUN; see README",
        "TEXT": "with MODEL: dataset folder | .txt | .jsonl (default: the run's sample for our "
        "exports, else data/default)",
        "SEQ": "with MODEL: tokens per sequence (default 512; an export: the run's)",
        "BATCH": "with MODEL: sequences per forward pass (default 4; an export: the run's)",
        "DTYPE": "with MODEL: float32 (default) | bfloat16 | float16 compute dtype",
    },
    "plots": {
        "RUN": "a run (its plots/ folder gets the figures); several separated by spaces/commas",
        **{f"RUN{n}": "another run overlaid" for n in range(2, 10)},
        "OUT": "output folder (default: <RUN>/plots; several runs: <RUN>/plots/compare-<names>)",
    },
    "export": {
        **COMMON,
        "ITER": "latest (default) | all | 100,200",
        "DTYPE": "as-saved (default) | float32 | bfloat16",
    },
    "import": {
        "MODEL": "a HF Llama / Qwen2 folder or hub id (config.json + *.safetensors)",
        "RUN": "output folder: a name under runs/ or a path (default runs/import-<model name>)",
        "DTYPE": "float32 (default) | bfloat16: the checkpoint's weights",
    },
    "eval": {
        **COMMON,
        "ITER": "all (default) | latest | 100,200",
        "TASKS": "comma list of lm-eval tasks or groups (default heldout_perplexity,"
        "heldout_lastword, from the run's held-out split)",
        "NUM_FEWSHOT": "few-shot examples, for the tasks that allow them (default: each task's)",
        "LIMIT": "documents per task (default: all); the scores then say they are a sample",
        "BATCH": "lm-eval batch size or auto (default 8)",
        "DTYPE": "float32 | bfloat16 | float16 (default bfloat16 on GPU, float32 on CPU)",
        "MODEL": "a HF model folder or hub id scored with the same settings (a baseline); its "
        "column joins RUN's table when RUN is given",
        "KEEP_EXPORTS": "0: delete each checkpoint's export once scored (default 1)",
        "DOCS": "held-out documents used to build the local tasks (default 500)",
        "DEVICE": "cpu | cuda (default: cuda when available)",
        "LAYERS": "all | 0,8,16: score each layer through the logit lens (0 = embeddings)",
    },
    "scores": {**COMMON},
    "checkpoints": {"RUN": COMMON["RUN"], "ITER": "all (default) | latest | 100,200"},
}


def parse_settings(command: str, argv: list[str]) -> dict[str, str]:
    """``KEY=value`` arguments of ``command``; EvalError for an unknown or malformed one."""
    out = _parse(argv, COMMANDS[command], EvalError, strip=True, where=f" for {command}")
    out.setdefault("RUN", DEFAULT_RUN)
    return out


def _flag(settings: dict, key: str, default: str = "0") -> bool:
    value = settings.get(key, default)
    if value not in ("0", "1"):
        raise EvalError(f"{key} must be 0 or 1, got {value!r}")
    return value == "1"


def _float(settings: dict, key: str, default: float) -> float:
    try:
        return float(settings.get(key, default))
    except ValueError:
        raise EvalError(f"{key} must be a number, got {settings[key]!r}") from None


def _int(settings: dict, key: str, default: int | None) -> int | None:
    return int_setting(settings, key, default, EvalError)


def quiet() -> None:
    """Keep import-time warnings of Megatron/torch (no Apex, no TE, no CUDA) off the console."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("megatron", "torch.utils.cpp_extension"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _out(settings: dict, run: RunDir) -> Path:
    return Path(settings["OUT"]).resolve() if "OUT" in settings else run.path


_HF_ONLY = ("TEXT", "SEQ", "BATCH", "DTYPE")
_RUN_ONLY = ("ITER", "SPLIT", "VALID")


def cmd_analyze_model(s: dict) -> int:
    """``analyze MODEL=``: any HF causal LM (eval.analyze_hf)."""
    from eval.hf_model import resolve

    if s["RUN"] != DEFAULT_RUN:
        raise EvalError("give RUN= (our checkpoints) or MODEL= (a HF model), not both")
    if wrong := [k for k in _RUN_ONLY if k in s]:
        raise EvalError(f"{', '.join(wrong)} apply to RUN=, not MODEL=")
    resolve(s["MODEL"])
    from eval.analyze_hf import HFAnalyzeConfig, analyze_model

    cfg = HFAnalyzeConfig(
        model=s["MODEL"], text=s.get("TEXT", ""), samples=_int(s, "SAMPLES", 64),
        seq=_int(s, "SEQ", None), batch=_int(s, "BATCH", None), dtype=s.get("DTYPE", "float32"),
        alpha=_float(s, "ALPHA", 0.8), force=_flag(s, "FORCE"), device=s.get("DEVICE", ""),
        out_dir=Path(s["OUT"]).resolve() if "OUT" in s else None,
    )  # fmt: skip
    quiet()
    path = analyze_model(cfg)
    print(f"analysis: {path}")
    return 0


def cmd_analyze(s: dict) -> int:
    if "MODEL" in s:
        return cmd_analyze_model(s)
    if wrong := [k for k in _HF_ONLY if k in s]:
        raise EvalError(f"{', '.join(wrong)} apply to MODEL=, not RUN=")
    run = load_run(s["RUN"])
    iterations = run.select(s.get("ITER", "all"))
    from eval.analyze import AnalyzeConfig, analyze

    cfg = AnalyzeConfig(
        iterations=iterations, out_dir=_out(s, run), samples=_int(s, "SAMPLES", 64),
        split=s.get("SPLIT", "test"), valid=s.get("VALID", "auto"),
        alpha=_float(s, "ALPHA", 0.8), force=_flag(s, "FORCE"), device=s.get("DEVICE", ""),
    )  # fmt: skip
    quiet()
    path = analyze(run, cfg)
    print(f"analysis: {path}")
    return 0


def cmd_plots(s: dict) -> int:
    specs = [s["RUN"]] + [s[f"RUN{n}"] for n in range(2, 10) if f"RUN{n}" in s]
    names = [x for spec in specs for x in spec.replace(",", " ").split() if x]
    runs = list(dict.fromkeys(resolve_run(x) for x in names))
    from eval.plots import compare_dir, plot_runs

    if "OUT" in s:
        out = Path(s["OUT"]).resolve()
    else:  # one run: its plots/; several: a folder of their own, so no run's figures are replaced
        out = runs[0] / "plots" if len(runs) == 1 else compare_dir(runs)
    for path in plot_runs(runs, out):
        print(f"wrote {path}")
    return 0


def cmd_export(s: dict) -> int:
    run = load_run(s["RUN"])
    iterations = run.select(s.get("ITER", "latest"))
    dtype = s.get("DTYPE", "as-saved")
    if dtype not in ("as-saved", "float32", "bfloat16"):
        raise EvalError(f"DTYPE must be as-saved, float32 or bfloat16, got {dtype!r}")
    quiet()
    from eval.export import export

    for iteration in iterations:
        print(f"wrote {export(run, iteration, _out(s, run), dtype)}", flush=True)
    return 0


def cmd_import(s: dict) -> int:
    if not s.get("MODEL"):
        raise EvalError("MODEL= is required: a HF Llama / Qwen2 folder or hub id")
    dtype = s.get("DTYPE", "float32")
    if dtype not in ("float32", "bfloat16"):
        raise EvalError(f"DTYPE must be float32 or bfloat16, got {dtype!r}")
    folder = Path(s["MODEL"])
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.model", "*.txt"]
        folder = Path(snapshot_download(s["MODEL"], allow_patterns=patterns))
    out = resolve_run(s.get("RUN") or f"import-{folder.name}")
    quiet()
    from eval.import_hf import import_hf

    print(f"wrote {import_hf(folder, out, dtype)}", flush=True)
    return 0


def _eval_source(s: dict) -> tuple[RunDir | None, list[int], Path]:
    """(run, checkpoints, output root) of ``eval``. With ``MODEL=`` the run (RUN=, else the run
    an export came from, else the default run if it exists) only gives the local tasks' text
    and the table the model's column joins; without one, results go to ``runs/hf/<name>/``."""
    if "MODEL" not in s:
        run = load_run(s["RUN"])
        return run, run.select(s.get("ITER", "all")), _out(s, run)
    from eval.hf_model import resolve

    if "ITER" in s:
        raise EvalError("ITER applies to RUN=, not MODEL=")
    _, name, export = resolve(s["MODEL"])
    source = export.get("run")
    run = None
    if s["RUN"] != DEFAULT_RUN:
        run = load_run(s["RUN"])
    elif source and Path(source).is_dir():
        run = load_run(source)
    elif (resolve_run(DEFAULT_RUN) / "run_config.json").is_file():
        run = load_run(DEFAULT_RUN)
    out = Path(s["OUT"]).resolve() if "OUT" in s else run.path if run else HF_DIR / name
    return run, [], out


def cmd_eval(s: dict) -> int:
    from eval.harness import HarnessConfig, run_harness
    from eval.taskdata import LOCAL_TASKS

    batch = s.get("BATCH", "8")
    settings = dict(
        tasks=[t.strip() for t in s.get("TASKS", "").split(",") if t.strip()] or None,
        limit=_int(s, "LIMIT", None), batch_size=batch if batch == "auto" else _int(s, "BATCH", 8),
        num_docs=_int(s, "DOCS", 500), device=s.get("DEVICE", ""),
        num_fewshot=int_setting(s, "NUM_FEWSHOT", None, EvalError, minimum=0),
        dtype=s.get("DTYPE", ""), model=s.get("MODEL"), keep_exports=_flag(s, "KEEP_EXPORTS", "1"),
        layers=s.get("LAYERS"),
    )  # fmt: skip
    HarnessConfig(iterations=[], out_dir=Path("."), **settings)  # every setting, before any file
    run, iterations, out = _eval_source(s)
    cfg = HarnessConfig(iterations=iterations, out_dir=out, **settings)
    if cfg.layers:
        from eval.layer_eval import check_layers

        check_layers(cfg.layers, run, cfg.model)
    if run is None and any(t in LOCAL_TASKS for t in cfg.tasks):
        raise EvalError(
            f"the local tasks ({', '.join(LOCAL_TASKS)}) are built from a run's held-out split: "
            "give RUN=, or TASKS= of lm-eval tasks"
        )
    with library_output_to(out / "lm_eval" / "logs") as say:
        if run is not None and cfg.model:
            say(f"MODEL={cfg.model}: local tasks from {run.path}, results next to its checkpoints'")
        run_harness(run, cfg, print_fn=say)
    return 0


def cmd_scores(s: dict) -> int:
    """The table, plot and notes of ``<out>/lm_eval/*/results.json`` again (no model), the
    score-vs-layer ones of ``*/layers/*/results.json``, and the run's TensorBoard/W&B scores:
    after the eval job's parallel lanes, or copied results."""
    from eval.layer_scores import write_layer_scores
    from eval.scores import notes, write_scores

    out = Path(s["OUT"]).resolve() if "OUT" in s else resolve_run(s["RUN"])
    scores, layers = write_scores(out / "lm_eval"), write_layer_scores(out / "lm_eval")
    if not scores and not layers:
        raise EvalError(f"no results under {out / 'lm_eval'}; run make eval first")
    for files in (scores, layers):
        if files:
            print(files[1].read_text())
    for line in notes(out / "lm_eval"):
        print(line)
    written = scores + layers
    if "OUT" not in s and scores:  # the run's own results: into its TensorBoard and W&B run too
        from eval.score_log import log_scores

        log_scores(out)
    print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_checkpoints(s: dict) -> int:
    """The complete checkpoints ``ITER=`` selects, one iteration a line (for job scripts)."""
    print("\n".join(map(str, load_run(s["RUN"]).select(s.get("ITER", "all")))))
    return 0


HANDLERS = {"analyze": cmd_analyze, "plots": cmd_plots, "export": cmd_export, "import": cmd_import,
            "eval": cmd_eval, "scores": cmd_scores, "checkpoints": cmd_checkpoints}  # fmt: skip


def usage() -> str:
    lines = [f"usage: python -m eval {{{','.join(COMMANDS)}}} KEY=value ..."]
    for command, keys in COMMANDS.items():
        lines.append(f"  {command}: " + ", ".join(f"{k} ({v})" for k, v in keys.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    try:
        if command not in HANDLERS:
            raise EvalError(f"unknown command {command!r}; valid: {', '.join(HANDLERS)}")
        return HANDLERS[command](parse_settings(command, rest))
    except EvalError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
