"""Resuming a run directory: which checkpoint is complete, and what earlier output it supersedes.

Megatron writes ``latest_checkpointed_iteration.txt`` only after every rank has finished writing
``iter_N/``, so a run killed during a save still points at the previous complete checkpoint. What
the killed run left behind is moved aside, never deleted: half-written ``iter_N/`` folders newer
than the tracker, and ``metrics.jsonl`` lines past the resumed iteration (they are re-run).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common.files import TRACKER


def last_checkpoint(save_dir: str | Path | None) -> int | None:
    """Iteration of the latest complete checkpoint under ``save_dir`` (None if there is none)."""
    if not save_dir:
        return None
    tracker = Path(save_dir) / TRACKER
    if not tracker.is_file():
        return None
    text = tracker.read_text().strip()
    return int(text) if text.isdigit() else None


def set_aside_incomplete(save_dir: str | Path) -> list[Path]:
    """Rename ``iter_*`` folders newer than the tracker (interrupted saves); returns new paths."""
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        return []
    last = last_checkpoint(save_dir) or 0
    moved = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in sorted(save_dir.glob("iter_*")):
        suffix = path.name[len("iter_") :]
        if suffix.isdigit() and int(suffix) > last:
            target = path.with_name(f"{path.name}.incomplete-{stamp}")
            path.rename(target)
            moved.append(target)
    return moved


def supersede_metrics(path: Path, resumed_iteration: int) -> int:
    """Move lines past ``resumed_iteration`` to ``<path>.superseded``; returns how many moved."""
    path = Path(path)
    if not path.is_file():
        return 0
    keep, drop = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            iteration = json.loads(line).get("iteration", 0)
        except json.JSONDecodeError:
            iteration = resumed_iteration + 1  # a torn last line from a kill: set it aside
        (drop if iteration > resumed_iteration else keep).append(line)
    if drop:
        with path.with_name(path.name + ".superseded").open("a") as f:
            f.write("\n".join(drop) + "\n")
        path.write_text("".join(line + "\n" for line in keep))
    return len(drop)
