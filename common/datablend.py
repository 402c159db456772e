"""``DATA=``: one prepared dataset folder, or a weighted blend ``0.7:data/ja,0.2:data/en,0.1:data/code``.

The one parser the launcher and the study use. A blend's weights are normalised to sum to 1 and
go to Megatron's own blending (``--train-data-path W1 PREFIX1 W2 PREFIX2 ...``, one blend per
split, ``get_blend_and_blend_per_split`` in megatron/training/utils/common_utils.py:507); a
single folder is a blend of one member with weight 1. Errors are ``ValueError``: one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Member:
    """One dataset of a blend."""

    weight: float
    """Normalised weight (1.0 for a single dataset)."""
    path: Path
    """The dataset folder (absolute)."""


def parse_data(text: str, root: Path) -> list[Member]:
    """``DATA`` -> its members (relative paths resolved against ``root``); ValueError if bad."""
    entries = [e.strip() for e in text.split(",")]
    if not all(entries):
        raise ValueError(f"DATA={text}: an empty entry; use a folder or 0.7:data/a,0.3:data/b")
    weights, paths = [], []
    for entry in entries:
        head, sep, rest = entry.partition(":")
        if sep and rest and not _is_number(head) and _exists(entry, root):
            sep = ""  # a folder whose name holds a colon
        if sep and rest:
            try:
                weight = float(head)
            except ValueError:
                raise ValueError(
                    f"DATA={text}: the weight {head!r} of {entry!r} is not a number; weights must "
                    "be positive numbers, e.g. 0.7:data/ja,0.3:data/en"
                ) from None
            if not math.isfinite(weight) or weight <= 0:
                raise ValueError(
                    f"DATA={text}: the weight {head!r} of {entry!r} is not a positive number; "
                    "weights must be positive numbers, e.g. 0.7:data/ja,0.3:data/en"
                )
            weights.append(weight)
            paths.append(rest)
        else:
            weights.append(None)
            paths.append(entry)
    if len(entries) > 1 and None in weights:
        bare = entries[weights.index(None)]
        raise ValueError(
            f"DATA={text}: {bare!r} has no weight; give every member of a blend one, "
            "e.g. 0.7:data/ja,0.3:data/en"
        )
    total = sum(w or 1.0 for w in weights)
    members = []
    for weight, raw in zip(weights, paths, strict=True):
        path = Path(raw).expanduser()
        path = path if path.is_absolute() else root / path
        path = path.parent if path.name == "manifest.json" else path
        members.append(Member((weight or 1.0) / total, path))
    seen = set()
    for m in members:
        if m.path.resolve() in seen:
            raise ValueError(f"DATA={text}: {m.path} appears twice; give each dataset once")
        seen.add(m.path.resolve())
    return members


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _exists(entry: str, root: Path) -> bool:
    path = Path(entry).expanduser()
    return (path if path.is_absolute() else root / path).exists()


def format_data(members: list[Member]) -> str:
    """The blend as ``DATA=`` takes it (a single folder as its path)."""
    if len(members) == 1:
        return str(members[0].path)
    return ",".join(f"{m.weight:.6g}:{m.path}" for m in members)
