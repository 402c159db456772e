"""``make study`` settings and the runs they plan (no torch or Megatron import: errors are instant).

The study trains one recipe (``SIZE``, default ``study``) from the same seed and data three times
(``none``, ``jreg``, ``jreg-final``: REG=jreg with WEIGHTS=final) and repeats ``none`` and ``jreg``
with the extra ``SEEDS``. Each run's settings are written to ``<run>/study_run.json`` when it is
first started; a later ``make study`` with other settings for the same folder is refused, so a
resumed run never mixes two recipes.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.datablend import format_data, parse_data
from common.files import REPO
from common.settings import (
    DEFAULT_DATA,
    DEFAULT_SEED,
    DEFAULT_WEIGHTS,
    int_setting,
    parse_settings,
)
from recipes import SIZES

STUDY_LAMBDA = 1.0
"""The study's LAMBDA: the largest of the lambda pilot's values (0.3, 1.0) whose validation loss
stayed within 1% of REG=none (docs/study.md, Pilots); make pretrain's default stays 0.1."""
SETTINGS = {
    "SIZE": f"model and training recipe: {' '.join(SIZES)} (default study; recipes/sizes.py)",
    "ITERS": "training iterations (default: the recipe's)",
    "SAVE_INTERVAL": "iterations between checkpoints and validation passes (default: recipe's)",
    "LAMBDA": f"JREG weight of the jreg runs (default {STUDY_LAMBDA}, from the lambda pilot)",
    "WEIGHTS": "layer weights of the jreg runs (default uniform; jreg-final uses final)",
    "SEED": f"seed of the three main runs (default {DEFAULT_SEED})",
    "SEEDS": "extra seeds of none and jreg, comma list (default 1235,1236; none: no extra)",
    "DATA": f"prepared dataset or weighted blend 0.7:data/a,0.3:data/b (default {DEFAULT_DATA})",
    "ARGS": "extra Megatron flags for every run",
    "TE": "make pretrain's TE= for every run (TE=0: a GPU node without Transformer Engine)",
    "ROOT": "folder of the study's runs (default runs/study)",
    "DOC": "the report (default docs/study.md; figures in docs/study/)",
    "PILOTS": "run dirs, or folders of run dirs, summarised in the Pilots section (comma list)",
    "SAMPLES": "held-out sequences per analysed checkpoint (default 64)",
    "TASKS": "lm-eval tasks (default: the local held-out tasks)",
    "LIMIT": "documents per lm-eval task (default: all)",
    "DOCS": "held-out documents the local tasks are built from (default 500)",
    "DEVICE": "cpu | cuda for the analysis and eval stages (default: cuda when a GPU is visible)",
    "AT": "compare every run at this iteration, not its last checkpoint (runs a time limit stopped)",
    "STAGES": "comma list of train,analyze,eval,plots,report (default: all)",
    "JOBS": "runs at once, each trained, analysed and evaluated (default 1; same numbers)",
}
STAGES = ("train", "analyze", "eval", "plots", "report")
STUDY_FILE = "study.json"  # <ROOT>/study.json: the settings of the last make study
RUN_FILE = "study_run.json"  # <run>/study_run.json: what the run was started with
LOG_FILE = "study_log.jsonl"  # <ROOT>/study_log.jsonl: one line per finished stage


class StudyError(ValueError):
    """A user error: one line ``error: ...``, exit code 2."""


@dataclass(kw_only=True)
class RunSpec:
    """One training run of the study."""

    name: str
    """Folder name under ROOT (plots and tables label runs by it)."""
    reg: str
    """REG of make pretrain."""
    lam: float
    """LAMBDA (0 for none)."""
    weights: str
    """WEIGHTS."""
    seed: int
    """SEED (weights and data order)."""
    group: str
    """``none`` or ``jreg`` for the seed statistics, ``jreg-final`` for the final-only run."""
    main: bool
    """One of the three main runs (all checkpoints analysed) rather than an extra seed."""

    def record(self, s: StudySettings) -> dict:
        """What must match for a re-run to continue this run's folder."""
        return {"size": s.size, "iters": s.iters, "save_interval": s.save_interval,
                "data": str(s.data), "args": s.args, "reg": self.reg, "lam": self.lam,
                "weights": self.weights, "seed": self.seed}  # fmt: skip


@dataclass(kw_only=True)
class StudySettings:
    """Parsed ``make study`` settings."""

    size: str = "study"
    """Recipe (model and training)."""
    iters: int | None = None
    """ITERS override."""
    save_interval: int | None = None
    """SAVE_INTERVAL override (validation passes follow it)."""
    lam: float = STUDY_LAMBDA
    """LAMBDA of the jreg runs."""
    weights: str = "uniform"
    """WEIGHTS of the jreg run."""
    seed: int = 1234
    """Seed of the main runs."""
    seeds: list[int] = field(default_factory=lambda: [1235, 1236])
    """Extra seeds."""
    data: str = str(REPO / "data" / "default")
    """DATA: a dataset folder or a weighted blend (``common.datablend``), absolute paths."""
    args: str = ""
    """Extra Megatron flags."""
    te: str = ""
    """make pretrain's TE (not part of a run's record: it changes the kernels, not the recipe)."""
    device: str = ""
    """DEVICE of the analyze and eval stages."""
    at: int | None = None
    """AT: the report's "last checkpoint" is this iteration for every run (the lines after it are
    left out), so runs stopped at different points past it are still compared at one point."""
    root: Path = REPO / "runs" / "study"
    """Where the runs go."""
    doc: Path = REPO / "docs" / "study.md"
    """The report."""
    pilots: list[Path] = field(default_factory=list)
    """Pilot run folders (or folders of them)."""
    samples: int = 64
    """Analysis SAMPLES."""
    tasks: str = ""
    """Eval TASKS."""
    limit: int | None = None
    """Eval LIMIT."""
    docs: int | None = None
    """Eval DOCS."""
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    """Stages to run, in the fixed order of STAGES."""
    jobs: int = 1
    """Runs at once (> 1: each run's train, analyze and eval in turn, main runs first)."""

    def __post_init__(self):
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise StudyError(f"LAMBDA must be a number >= 0, got {self.lam}")
        if self.seed in self.seeds:
            raise StudyError(f"SEEDS must not repeat SEED={self.seed}")
        if len(set(self.seeds)) != len(self.seeds):
            raise StudyError(f"SEEDS has a repeated seed: {self.seeds}")
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise StudyError(f"STAGES must be a comma list of {','.join(STAGES)}, got {unknown}")

    def runs(self) -> list[RunSpec]:
        """The main runs first, then each extra seed's none and jreg."""
        out = [RunSpec(name="none", reg="none", lam=0.0, weights="uniform", seed=self.seed,
                       group="none", main=True),
               RunSpec(name="jreg", reg="jreg", lam=self.lam, weights=self.weights,
                       seed=self.seed, group="jreg", main=True),
               RunSpec(name="jreg-final", reg="jreg", lam=self.lam, weights="final",
                       seed=self.seed, group="jreg-final", main=True)]  # fmt: skip
        for seed in self.seeds:
            out.append(RunSpec(name=f"none-seed{seed}", reg="none", lam=0.0, weights="uniform",
                               seed=seed, group="none", main=False))  # fmt: skip
            out.append(RunSpec(name=f"jreg-seed{seed}", reg="jreg", lam=self.lam, seed=seed,
                               weights=self.weights, group="jreg", main=False))  # fmt: skip
        return out

    def launch_settings(self, run: RunSpec) -> list[str]:
        """``KEY=value`` arguments of ``python -m launcher`` for ``run``."""
        out = [f"RUN={self.root / run.name}", f"SIZE={self.size}", f"REG={run.reg}",
               f"LAMBDA={run.lam}", f"WEIGHTS={run.weights}", f"SEED={run.seed}",
               f"DATA={self.data}"]  # fmt: skip
        if self.iters:
            out.append(f"ITERS={self.iters}")
        args = self.args
        if self.save_interval:
            out.append(f"SAVE_INTERVAL={self.save_interval}")
            args = f"--eval-interval {self.save_interval} {args}".strip()  # a pass per checkpoint
        if args:
            out.append(f"ARGS={args}")
        if self.te:
            out.append(f"TE={self.te}")
        return out

    def to_json(self) -> dict:
        out = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()} | {
            "pilots": [str(p) for p in self.pilots]
        }


def _int(v: dict, key: str, default: int | None) -> int | None:
    return int_setting(v, key, default, StudyError)


def _path(text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else REPO / path


def _data(text: str) -> str:
    """DATA with its paths made absolute (a blend's weights normalised)."""
    try:
        return format_data(parse_data(text, REPO))
    except ValueError as err:
        raise StudyError(str(err)) from None


def _same_data(old: str, new: str) -> bool:
    """The same datasets and weights: a path that resolves to the same folder (a symlinked data/
    in another checkout) is the same."""
    try:
        a, b = parse_data(old, REPO), parse_data(new, REPO)
    except ValueError:
        return False
    return [(round(m.weight, 6), os.path.realpath(m.path)) for m in a] == [
        (round(m.weight, 6), os.path.realpath(m.path)) for m in b
    ]


def parse(argv: list[str]) -> StudySettings:
    """``KEY=value`` arguments -> settings; StudyError for anything malformed or unknown."""
    v = parse_settings(argv, SETTINGS, StudyError, strip=True)
    try:
        lam = float(v.get("LAMBDA", str(STUDY_LAMBDA)))
    except ValueError:
        raise StudyError(f"LAMBDA must be a number >= 0, got {v['LAMBDA']!r}") from None
    seeds_text = v.get("SEEDS", "1235,1236")
    seeds = [] if seeds_text == "none" else [
        _int({"SEEDS": x.strip()}, "SEEDS", None) for x in seeds_text.split(",") if x.strip()
    ]  # fmt: skip
    pilots = [_path(x.strip()) for x in v.get("PILOTS", "").split(",") if x.strip()]
    for pilot in pilots:
        if not pilot.is_dir():
            raise StudyError(f"PILOTS: {pilot} is not a folder")
    return StudySettings(
        size=v.get("SIZE", "study"), iters=_int(v, "ITERS", None),
        save_interval=_int(v, "SAVE_INTERVAL", None), lam=lam,
        weights=v.get("WEIGHTS", DEFAULT_WEIGHTS), seed=_int(v, "SEED", DEFAULT_SEED), seeds=seeds,
        data=_data(v.get("DATA", DEFAULT_DATA)), args=v.get("ARGS", ""), te=v.get("TE", ""),
        device=v.get("DEVICE", ""), at=_int(v, "AT", None),
        root=_path(v.get("ROOT", "runs/study")), doc=_path(v.get("DOC", "docs/study.md")),
        pilots=pilots, samples=_int(v, "SAMPLES", 64), tasks=v.get("TASKS", ""),
        limit=_int(v, "LIMIT", None), docs=_int(v, "DOCS", None),
        stages=[x.strip() for x in v.get("STAGES", ",".join(STAGES)).split(",") if x.strip()],
        jobs=_int(v, "JOBS", 1),
    )  # fmt: skip


def check_run_record(s: StudySettings, run: RunSpec) -> None:
    """Refuse to continue a run folder that was started with other settings."""
    path = s.root / run.name / RUN_FILE
    if not path.is_file():
        return
    old, new = json.loads(path.read_text()), run.record(s)
    same_data = _same_data(old.get("data", ""), new["data"])
    diff = [k for k in new if old.get(k) != new[k] and not (k == "data" and same_data)]
    if diff:
        changes = ", ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in diff)
        raise StudyError(
            f"{s.root / run.name} was started with other settings ({changes}); keep the "
            "settings to resume it, or use ROOT= another folder"
        )
