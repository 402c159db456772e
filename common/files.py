"""File rules of a run directory, written once: where a run lives, the checkpoint tracker's name,
atomic writes, and JSON-lines files that may end in a torn line (a run killed mid-write)."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACKER = "latest_checkpointed_iteration.txt"
"""Megatron's tracker file in a checkpoint folder: the latest complete iteration."""
WANDB_ID = Path("wandb") / "run_id"
"""A run's W&B id, relative to the run directory (made by launcher.wandb_run, read by eval)."""


def run_dir(run: str) -> Path:
    """``RUN=``: a name under ``runs/``, or (with a ``/``) a path; relative paths are relative to
    the repo. (jobs/lib.sh ``job_run_dir`` is the shell copy of this rule.)"""
    path = Path(run) if "/" in run else REPO / "runs" / run
    return path if path.is_absolute() else REPO / path


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    """The lines of a JSON-lines file (none if it is missing); unreadable (torn) lines skipped."""
    out = []
    for text in path.read_text().splitlines() if path.is_file() else []:
        try:
            out.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return out


def read_json(path: Path) -> dict:
    """A JSON object file, or ``{}`` when there is none."""
    return json.loads(path.read_text()) if path.is_file() else {}
