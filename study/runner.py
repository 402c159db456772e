"""The stages of ``make study``, each a subprocess of an existing CLI; runs talk through files.

Resumable: a run whose latest complete checkpoint is the last iteration is not trained again (an
unfinished one is resumed by the launcher from its latest checkpoint), checkpoints already in
``analysis.jsonl`` are not analysed again, a checkpoint with ``lm_eval/iter_N/results.json`` is
not evaluated again. The three main runs go first (train, analyze every checkpoint, eval, plots,
report), then the extra seeds (train, analyze and eval the last checkpoint, plots, report), so an
interrupted study still leaves a report of what it finished.

Every finished stage appends one line to ``<ROOT>/study_log.jsonl`` (run, stage, seconds, exit
code, machine); the report takes training wall times and the machine from there.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.files import REPO
from megatron_ext import resume
from study.settings import LOG_FILE, RUN_FILE, STUDY_FILE, RunSpec, StudyError, StudySettings


class StageError(RuntimeError):
    """A stage's subprocess failed: one line naming it and its log, exit code 1."""


def machine() -> dict:
    """What the numbers were measured on (no torch import)."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [x.split(":", 1)[1].strip() for x in cpuinfo.read_text().splitlines()
                 if x.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    mem = Path("/proc/meminfo")
    gib = None
    if mem.is_file():
        kb = int(mem.read_text().split("MemTotal:")[1].split()[0])
        gib = round(kb / 2**20, 1)
    gpus = ""
    try:
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        gpus = proc.stdout.strip() if proc.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"cpu": cpu, "cpus": len(os.sched_getaffinity(0)), "memory_gib": gib,
            "gpus": gpus or "none", "omp_threads": os.environ.get("OMP_NUM_THREADS", ""),
            "python": platform.python_version(), "os": platform.platform()}  # fmt: skip


def last_checkpoint(run_dir: Path) -> int | None:
    return resume.last_checkpoint(run_dir / "checkpoints")


def planned_iters(run_dir: Path) -> int | None:
    record = run_dir / "launch.json"
    return json.loads(record.read_text()).get("train_iters") if record.is_file() else None


def checkpoints(run_dir: Path) -> list[int]:
    last = last_checkpoint(run_dir) or 0
    its = [
        int(p.name[5:]) for p in (run_dir / "checkpoints").glob("iter_*") if p.name[5:].isdigit()
    ]
    return sorted(i for i in its if i <= last)


def analysed(run_dir: Path) -> set[int]:
    path = run_dir / "analysis.jsonl"
    out = set()
    for text in path.read_text().splitlines() if path.is_file() else []:
        try:
            out.add(json.loads(text)["iteration"])
        except (json.JSONDecodeError, KeyError):
            continue
    return out


def run_logged(cmd: list[str], log: Path, *, echo: bool = False) -> int:
    """Run ``cmd`` from the repository root (on its PYTHONPATH), append its output to ``log``
    and, with ``echo``, to the console; its exit code. The study's programs run every stage so."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with log.open("a") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        for text in proc.stdout:
            f.write(text)
            if echo:
                sys.stdout.write(text)
        return proc.wait()


class Runner:
    """Runs the stages for ``settings``; ``print_fn`` gets one line per decision."""

    def __init__(self, settings: StudySettings, print_fn=print):
        self.s = settings
        self.print = print_fn
        self.machine = machine()
        self.log_dir = settings.root / "logs"

    def _log(self, **line) -> None:
        with (self.s.root / LOG_FILE).open("a") as f:
            f.write(json.dumps(line | {"time": time.time(), "machine": self.machine}) + "\n")

    def _call(self, run: str, stage: str, cmd: list[str], *, quiet: bool = False) -> None:
        """Run ``cmd`` from the repo root, its output to ``logs/<run>.<stage>`` and, unless
        ``quiet`` (runs trained side by side), to the console."""
        log = self.log_dir / f"{run}.{stage}.log"
        self.print(f"study: {stage} {run}: {' '.join(cmd[1:])} (log: {log})")
        start, code = time.perf_counter(), None
        try:
            code = run_logged(cmd, log, echo=not quiet)
        finally:
            self._log(run=run, stage=stage, seconds=round(time.perf_counter() - start, 1),
                      returncode=code)  # fmt: skip
        if code:
            raise StageError(f"{stage} of {run} failed (exit code {code}); see {log}")
        if quiet:
            self.print(f"study: {stage} {run}: done in {time.perf_counter() - start:.0f} s")

    def finished(self, run: RunSpec) -> bool:
        run_dir = self.s.root / run.name
        last = last_checkpoint(run_dir)
        return last is not None and last == planned_iters(run_dir)

    def check(self) -> None:
        """Validate the settings with the launcher's DRY_RUN before anything runs: once for each
        kind of run (REG, WEIGHTS) that still has a run to train."""
        kinds = {}
        for run in self.s.runs():
            if not self.finished(run):
                kinds.setdefault((run.reg, run.weights), run)
        for run in kinds.values():
            cmd = [sys.executable, "-m", "launcher", *self.s.launch_settings(run)]
            proc = subprocess.run(cmd + ["DRY_RUN=1"], cwd=REPO, capture_output=True, text=True)
            if proc.returncode:
                lines = (proc.stderr or proc.stdout).strip().splitlines() or ["launch failed"]
                raise StudyError(f"run {run.name}: {lines[-1].removeprefix('error: ')}")

    def train(self, run: RunSpec, *, quiet: bool = False) -> None:
        run_dir = self.s.root / run.name
        if self.finished(run):
            last = last_checkpoint(run_dir)
            self.print(f"study: train {run.name}: finished at iteration {last}, not redone")
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_FILE).write_text(json.dumps(run.record(self.s)) + "\n")
        launch = [sys.executable, "-m", "launcher", *self.s.launch_settings(run)]
        self._call(run.name, "train", launch, quiet=quiet)

    def side_by_side(self, runs: list[RunSpec]) -> None:
        """JOBS > 1: each run's train, analyze and eval stages in turn, JOBS runs at a time, main
        runs first; after a failure no new run starts, the ones already going finish (each is
        resumable), then the failure is raised."""
        failed: list[StageError] = []
        steps = [
            step
            for stage, step in (
                ("train", self.train),
                ("analyze", self.analyze),
                ("eval", self.evaluate),
            )
            if stage in self.s.stages
        ]

        def one(run: RunSpec) -> None:
            try:
                for step in steps:
                    if not failed:
                        step(run, quiet=True)
            except StageError as err:
                failed.append(err)

        with ThreadPoolExecutor(self.s.jobs) as pool:
            list(pool.map(one, runs))
        if failed:
            raise failed[0]

    def _device(self) -> list[str]:
        return [f"DEVICE={self.s.device}"] if self.s.device else []

    def analyze(self, run: RunSpec, *, quiet: bool = False) -> None:
        run_dir = self.s.root / run.name
        wanted = checkpoints(run_dir) if run.main else checkpoints(run_dir)[-1:]
        if not wanted:
            self.print(f"study: analyze {run.name}: no checkpoint yet, skipped")
            return
        todo = [i for i in wanted if i not in analysed(run_dir)]
        if not todo:
            self.print(f"study: analyze {run.name}: checkpoints {wanted} already analysed")
            return
        self._call(run.name, "analyze", [sys.executable, "-m", "eval", "analyze",
                   f"RUN={run_dir}", f"ITER={','.join(map(str, todo))}",
                   f"SAMPLES={self.s.samples}", *self._device()], quiet=quiet)  # fmt: skip

    def evaluate(self, run: RunSpec, *, quiet: bool = False) -> None:
        run_dir = self.s.root / run.name
        last = checkpoints(run_dir)[-1:]
        if not last:
            self.print(f"study: eval {run.name}: no checkpoint yet, skipped")
            return
        if (run_dir / "lm_eval" / f"iter_{last[0]:07d}" / "results.json").is_file():
            self.print(f"study: eval {run.name}: iteration {last[0]} already evaluated")
            return
        cmd = [sys.executable, "-m", "eval", "eval", f"RUN={run_dir}", f"ITER={last[0]}"]
        cmd += self._device()
        for key, value in (("TASKS", self.s.tasks), ("LIMIT", self.s.limit),
                           ("DOCS", self.s.docs)):  # fmt: skip
            if value:
                cmd.append(f"{key}={value}")
        self._call(run.name, "eval", cmd, quiet=quiet)

    def plots(self) -> None:
        runs = [str(self.s.root / r.name) for r in self.s.runs()
                if (self.s.root / r.name / "metrics.jsonl").is_file()]  # fmt: skip
        if runs:
            self._call("all", "plots", [sys.executable, "-m", "eval", "plots",
                       f"RUN={','.join(runs)}", f"OUT={self.s.root / 'plots'}"])  # fmt: skip

    def report(self) -> None:
        from study.report import write_report

        for path in write_report(self.s):
            self.print(f"study: wrote {path}")

    def run(self) -> None:
        """Every stage of ``settings.stages``, main runs first, then the extra seeds."""
        self.s.root.mkdir(parents=True, exist_ok=True)
        (self.s.root / STUDY_FILE).write_text(json.dumps(self.s.to_json(), indent=1) + "\n")
        runs = self.s.runs()
        if self.s.jobs > 1:
            self.side_by_side(runs)
        for phase in ([r for r in runs if r.main], [r for r in runs if not r.main]):
            if not phase:
                continue
            steps = {"train": self.train, "analyze": self.analyze, "eval": self.evaluate}
            for stage, step in steps.items():
                if stage in self.s.stages:
                    for run in phase:
                        step(run)
            if "plots" in self.s.stages:
                self.plots()
            if "report" in self.s.stages:
                self.report()
