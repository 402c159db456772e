"""``make eval``: lm-eval (the real package, Python API) on the HF export of a checkpoint.

Local tasks (``eval/tasks/``, data from the run's held-out split, see ``eval.taskdata``) run
offline. Any other name must be an lm-eval task; those load their data from the Hugging Face Hub
(or its local cache), so they are loaded before the model runs and, when the Hub is unreachable
and the data is not cached, the command stops with one line naming the task. Without network the
Hub libraries are switched to offline mode first, so that failure is immediate instead of minutes
of retries.

For each selected checkpoint (every one by default), writes ``<out>/lm_eval/iter_<N>/results.json``
(lm-eval's results, configs and versions, plus the iteration and tokens seen) and ``table.md``
(the table lm-eval prints), exporting the checkpoints that have no ``<out>/hf/iter_<N>/`` yet
first (one ``python -m eval export`` process for all of them). Then ``eval.scores`` writes the
task x iteration table (``lm_eval/scores.csv``, ``scores.md``) and ``scores.png``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from eval.device import check_device, resolve_device
from eval.rundir import REPO, EvalError, RunDir
from eval.scores import write_scores
from eval.taskdata import LOCAL_TASKS, build_tasks


@dataclass(kw_only=True)
class HarnessConfig:
    """What ``make eval`` runs."""

    iterations: list[int]
    """Checkpoints to evaluate."""
    out_dir: Path
    """Output root (``hf/`` and ``lm_eval/`` go under it)."""
    tasks: list[str] | None = None
    """Task names; None for the local tasks."""
    limit: int | None = None
    """Documents per task (None: all)."""
    batch_size: int = 8
    """lm-eval batch size."""
    num_docs: int = 500
    """Held-out documents the local tasks are built from."""
    device: str = ""
    """``cpu`` or ``cuda`` (default: cuda when available)."""

    def __post_init__(self):
        if self.tasks is None:
            self.tasks = list(LOCAL_TASKS)
        if not self.tasks:
            raise EvalError("TASKS is empty")
        check_device(self.device)
        for name in ("batch_size", "num_docs"):
            if getattr(self, name) < 1:
                raise EvalError(f"{name} must be a positive integer")


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


def _ensure_exports(run: RunDir, cfg: HarnessConfig) -> dict[int, Path]:
    from eval.export import export_dir  # light: only paths

    folders = {it: export_dir(cfg.out_dir, it) for it in cfg.iterations}
    missing = [it for it, f in folders.items() if not (f / "export.json").is_file()]
    if not missing:
        return folders
    cmd = [sys.executable, "-m", "eval", "export", f"RUN={run.path}",
           f"ITER={','.join(map(str, missing))}", f"OUT={cfg.out_dir}"]  # fmt: skip
    print(f"exporting iterations {missing} first: {' '.join(cmd[1:])}", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
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


def run_harness(run: RunDir, cfg: HarnessConfig, print_fn=print) -> list[Path]:
    """Evaluate every checkpoint of ``cfg``; returns the table and plot files written."""
    hub_tasks = [t for t in cfg.tasks if t not in LOCAL_TASKS]
    if hub_tasks and not hub_reachable():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    tasks_dir = cfg.out_dir / "lm_eval" / "tasks"
    counts = build_tasks(run, tasks_dir, cfg.num_docs)
    manager = _task_manager(tasks_dir, hub_tasks)
    model_dirs = _ensure_exports(run, cfg)

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.utils import make_table

    device = str(resolve_device(cfg.device))
    for name in cfg.tasks:
        if name in counts:
            print_fn(f"{name}: {counts[name]} documents from the held-out split")
    for iteration, model_dir in model_dirs.items():
        print_fn(f"iter {iteration}: lm-eval on {model_dir}")
        lm = HFLM(pretrained=str(model_dir), device=device, batch_size=cfg.batch_size,
                  dtype="float32")  # fmt: skip
        results = simple_evaluate(
            model=lm, tasks=list(cfg.tasks), task_manager=manager, limit=cfg.limit,
            bootstrap_iters=1000, log_samples=False, verbosity="WARNING",
        )  # fmt: skip
        del lm
        out = cfg.out_dir / "lm_eval" / f"iter_{iteration:07d}"
        out.mkdir(parents=True, exist_ok=True)
        record = {"iteration": iteration, "tokens_seen": run.tokens_seen(iteration),
                  "model": str(model_dir)}  # fmt: skip
        record.update(
            {k: results[k] for k in ("results", "configs", "versions", "n-samples") if k in results}
        )
        (out / "results.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        table = make_table(results)
        (out / "table.md").write_text(table)
        print_fn(table)
    written = write_scores(cfg.out_dir / "lm_eval")
    print_fn((written[1]).read_text())
    print_fn("wrote " + ", ".join(str(p) for p in written))
    return written
