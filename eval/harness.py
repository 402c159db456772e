"""``make eval``: lm-eval (the real package, Python API) on the HF export of a checkpoint, or on
any HF model (``MODEL=``, a baseline scored with the same settings).

Local tasks (``eval/tasks/``, data from the run's held-out split, see ``eval.taskdata``) run
offline. Any other name must be an lm-eval task or group; those load their data from the Hugging
Face Hub (or its local cache), so they are loaded before the model runs and, when the Hub is
unreachable and the data is not cached, the command stops with one line naming the task. Without
network the Hub libraries are switched to offline mode first, so that failure is immediate instead
of minutes of retries.

Settings as researchers run lm-eval: ``NUM_FEWSHOT`` (lm-eval applies it to the tasks that allow
few-shot; the rolling-perplexity task is zero-shot by its YAML), ``DTYPE`` (bfloat16 on a GPU,
float32 on CPU by default), ``BATCH=auto``. HFLM is set up by ``eval.lm_models`` (BOS as the model
was trained). For each target writes ``<out>/lm_eval/<iter_N | model-name>/results.json``
(lm-eval's results, configs and versions, plus the iteration, tokens seen and every setting) and
``table.md`` (the table lm-eval prints), exporting the checkpoints that have no
``<out>/hf/iter_<N>/`` yet first (one ``python -m eval export`` process for all of them);
``KEEP_EXPORTS=0`` deletes each export once it is scored. Then ``eval.scores`` writes the table
(``lm_eval/scores.csv``, ``scores.md``), ``scores.png`` and notes on metrics that cannot be read,
and (results in the run's own folder) ``eval.score_log`` adds the scores to the run's TensorBoard
and W&B run against tokens seen. ``LAYERS=`` scores each selected layer of each target through the
logit lens instead (``eval.layer_eval``: ``lm_eval/<target>/layers/<l>/``, then
``eval.layer_scores``: ``lm_eval/layers.{csv,md,png}``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from common.files import read_json
from eval.device import check_device, resolve_device
from eval.hf_model import hub_hint, resolve
from eval.layer_eval import lens_models, parse_layers
from eval.layer_scores import write_layer_scores
from eval.lm_models import DTYPES, Target, default_dtype, lm_args
from eval.rundir import REPO, EvalError, RunDir
from eval.score_log import log_scores
from eval.scores import notes, write_scores
from eval.taskdata import LOCAL_TASKS, RENAMED, build_tasks


@dataclass(kw_only=True)
class HarnessConfig:
    """What ``make eval`` runs."""

    iterations: list[int]
    """Checkpoints to evaluate (none with ``model``)."""
    out_dir: Path
    """Output root (``hf/`` and ``lm_eval/`` go under it)."""
    tasks: list[str] | None = None
    """Task names (lm-eval tasks or groups); None for the local tasks."""
    limit: int | None = None
    """Documents per task (None: all)."""
    batch_size: int | str = 8
    """lm-eval batch size, or ``auto`` (the largest that fits, found by lm-eval)."""
    num_docs: int = 500
    """Held-out documents the local tasks are built from."""
    device: str = ""
    """``cpu`` or ``cuda`` (default: cuda when available)."""
    num_fewshot: int | None = None
    """Few-shot examples for tasks that allow them (None: each task's default)."""
    dtype: str = ""
    """Compute dtype (default: bfloat16 on a GPU, float32 on CPU)."""
    model: str | None = None
    """``MODEL=``: a HF folder or hub id scored instead of (or, in the table, next to) the
    run's checkpoints."""
    keep_exports: bool = True
    """False: delete each checkpoint's export once it is scored."""
    layers: str | None = None
    """``LAYERS``: ``all`` or ``0,8,16``, each layer scored through the logit lens
    (``eval.layer_eval``) instead of the whole model; None: the whole model."""

    def __post_init__(self):
        if self.tasks is None:
            self.tasks = list(LOCAL_TASKS)
        self.tasks = [RENAMED.get(t, t) for t in self.tasks]
        if not self.tasks:
            raise EvalError("TASKS is empty")
        check_device(self.device)
        if self.batch_size != "auto" and (not isinstance(self.batch_size, int)
                                          or self.batch_size < 1):  # fmt: skip
            raise EvalError(f"BATCH must be a positive integer or auto, got {self.batch_size!r}")
        if self.num_docs < 1:
            raise EvalError("DOCS must be a positive integer")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise EvalError(f"NUM_FEWSHOT must be 0 or more, got {self.num_fewshot}")
        if self.dtype not in ("", *DTYPES):
            raise EvalError(f"DTYPE must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.layers is not None:
            parse_layers(self.layers)


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hugging Face endpoint accepts a TCP connection."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _ensure_exports(run: RunDir, cfg: HarnessConfig, print_fn) -> dict[int, Path]:
    from eval.export import export_dir  # light: only paths

    folders = {it: export_dir(cfg.out_dir, it) for it in cfg.iterations}
    missing = [it for it, f in folders.items() if not (f / "export.json").is_file()]
    if not missing:
        return folders
    cmd = [sys.executable, "-m", "eval", "export", f"RUN={run.path}",
           f"ITER={','.join(map(str, missing))}", f"OUT={cfg.out_dir}"]  # fmt: skip
    print_fn(f"exporting iterations {missing} first: {' '.join(cmd[1:])}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    sys.stderr.write(proc.stdout + proc.stderr)  # the log under eval.console_log
    if proc.returncode:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["export failed"]
        raise EvalError(lines[-1].removeprefix("error: "))
    return folders


def _task_manager(tasks_dir: Path, hub_tasks: list[str]):
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(tasks_dir), include_defaults=bool(hub_tasks))
    unknown = [t for t in hub_tasks if t not in manager.all_tasks]
    if unknown:
        raise EvalError(
            f"unknown task {unknown[0]!r}: neither a local task ({', '.join(LOCAL_TASKS)}) "
            "nor an lm-eval task (python -m lm_eval ls tasks)"
        )
    for name in hub_tasks:  # fail before the model runs, one line per cause
        try:
            manager.load([name])
        except Exception as err:
            raise EvalError(
                f"lm-eval task {name!r} could not load its data ({_first_line(err)}); it needs "
                "the Hugging Face Hub or a local copy in the datasets cache. Offline, use the "
                f"local tasks {', '.join(LOCAL_TASKS)}"
            ) from None
    return manager


def _targets(run: RunDir | None, cfg: HarnessConfig, print_fn) -> list[Target]:
    """The exports of the selected checkpoints (exported first where missing), or ``MODEL=``."""
    if cfg.model:
        spec, name, export = resolve(cfg.model)
        label = export["iteration"] if isinstance(export.get("iteration"), int) else f"model-{name}"
        return [Target(label=label, pretrained=spec, export=export)]
    folders = _ensure_exports(run, cfg, print_fn)
    return [
        Target(
            label=it,
            pretrained=str(f),
            export=read_json(f / "export.json"),
            delete_after=not cfg.keep_exports,
        )  # fmt: skip
        for it, f in folders.items()
    ]


def _record(target: Target, run: RunDir | None, cfg: HarnessConfig, args: dict, results) -> dict:
    """``results.json``: lm-eval's results with what they were computed on and how."""
    tokens = target.export.get("tokens_seen")
    if tokens is None and run is not None and isinstance(target.label, int):
        tokens = run.tokens_seen(target.label)
    record = {
        "iteration": target.label if isinstance(target.label, int) else None,
        "label": target.label, "tokens_seen": tokens, "model": target.pretrained,
        "requested": list(cfg.tasks), "limit": cfg.limit, "num_fewshot": cfg.num_fewshot,
        "dtype": args["dtype"], "batch_size": str(args["batch_size"]),
        "add_bos_token": args.get("add_bos_token"), "prefix_token_id": args.get("prefix_token_id"),
    }  # fmt: skip
    keys = ("results", "groups", "group_subtasks", "configs", "versions", "n-shot", "n-samples")
    record.update({k: results[k] for k in keys if k in results})
    return record


def _score(hflm: dict, target: Target, run: RunDir | None, cfg: HarnessConfig, manager,
           args: dict, out: Path, extra: dict) -> str:  # fmt: skip
    """One lm-eval pass of ``HFLM(**hflm)`` on ``target`` (set up with ``args``); writes
    ``out/{results.json,table.md}`` (the record plus ``extra``) and returns the table."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.utils import make_table

    try:
        lm = HFLM(**hflm)
    except (OSError, ValueError) as err:
        if target.export or Path(target.pretrained).expanduser().is_dir():
            raise EvalError(f"cannot load {target.pretrained} ({_first_line(err)})") from None
        raise EvalError(hub_hint(target.pretrained)) from None
    results = simple_evaluate(
        model=lm, tasks=list(cfg.tasks), task_manager=manager, limit=cfg.limit,
        num_fewshot=cfg.num_fewshot, bootstrap_iters=1000, log_samples=False,
        verbosity="WARNING",
    )  # fmt: skip
    del lm
    out.mkdir(parents=True, exist_ok=True)
    record = {**_record(target, run, cfg, args, results), **extra}
    (out / "results.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    table = make_table(results)
    (out / "table.md").write_text(table)
    return table


def run_harness(run: RunDir | None, cfg: HarnessConfig, print_fn=print) -> list[Path]:
    """Evaluate every target of ``cfg``; returns the table and plot files written."""
    hub_tasks = [t for t in cfg.tasks if t not in LOCAL_TASKS]
    hub_model = bool(cfg.model) and not Path(cfg.model).expanduser().is_dir()
    if (hub_tasks or hub_model) and not hub_reachable():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    tasks_dir = cfg.out_dir / "lm_eval" / "tasks"
    counts = {}
    if len(hub_tasks) < len(cfg.tasks):
        if run is None:
            raise EvalError("the local tasks are built from a run's held-out split: give RUN=")
        counts = build_tasks(run, tasks_dir, cfg.num_docs)
    manager = _task_manager(tasks_dir, hub_tasks)
    targets = _targets(run, cfg, print_fn)

    device = str(resolve_device(cfg.device))
    dtype = cfg.dtype or default_dtype(device)
    for name in cfg.tasks:
        if name in counts:
            print_fn(f"{name}: {counts[name]} documents from the held-out split")
    if cfg.limit:
        print_fn(f"LIMIT={cfg.limit}: scores on a sample of at most {cfg.limit} documents per task")
    for target in targets:
        args = lm_args(target, device=device, dtype=dtype, batch_size=cfg.batch_size)
        bos = "" if not target.export else (
            f", BOS {'on' if args['add_bos_token'] else 'off'} as in training, first token "
            f"conditioned on id {args['prefix_token_id']}")  # fmt: skip
        print_fn(f"{target.label}: lm-eval on {target.pretrained} ({dtype}, batch "
                 f"{cfg.batch_size}{bos})")  # fmt: skip
        out = cfg.out_dir / "lm_eval" / target.folder
        if cfg.layers is None:
            print_fn(_score(args, target, run, cfg, manager, args, out, {}))
        else:  # the loaded model, truncated: HFLM takes it as it is (device, dtype set)
            lens = {k: v for k, v in args.items() if k not in ("device", "dtype")}
            for layer, num, model in lens_models(target.pretrained, cfg.layers, dtype, device):
                print_fn(f"{target.label}: layer {layer} of {num} (logit lens)")
                print_fn(_score({**lens, "pretrained": model}, target, run, cfg, manager, args,
                                out / "layers" / str(layer), {"layer": layer, "num_layers": num}))  # fmt: skip
        if target.delete_after:
            shutil.rmtree(target.pretrained, ignore_errors=True)
            print_fn(f"KEEP_EXPORTS=0: deleted {target.pretrained} (scored)")
    if cfg.layers is not None:
        written = write_layer_scores(cfg.out_dir / "lm_eval")
        print_fn(written[1].read_text())
        print_fn("wrote " + ", ".join(str(p) for p in written))
        return written
    written = write_scores(cfg.out_dir / "lm_eval")
    print_fn((written[1]).read_text())
    for line in notes(cfg.out_dir / "lm_eval"):
        print_fn(line)
    if run is not None and cfg.out_dir == run.path and not cfg.model:  # next to its curves
        log_scores(run.path, print_fn)
    print_fn("wrote " + ", ".join(str(p) for p in written))
    return written
