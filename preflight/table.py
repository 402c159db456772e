"""Preflight results: one line per check, PASS/FAIL with the number behind it; exit code.

Exit codes: 0 every check passed, 1 at least one failed, 2 the node cannot be checked (no GPU).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(kw_only=True)
class Check:
    """One preflight check."""

    name: str
    """Short name, e.g. ``nccl all-reduce``."""
    ok: bool
    """Whether it passed."""
    value: str
    """The number(s) behind the verdict, or why it failed."""

    def __post_init__(self):
        if not self.name or "\n" in self.name or "\n" in self.value:
            raise ValueError(f"a check needs a one-line name and value, got {self.name!r}")


def render(checks: list[Check]) -> str:
    """The table: ``PASS  name  value`` lines and a summary line."""
    if not checks:
        return "preflight: no checks ran\n"
    width = max(len(c.name) for c in checks)
    lines = [f"{'PASS' if c.ok else 'FAIL'}  {c.name:<{width}}  {c.value}" for c in checks]
    failed = sum(not c.ok for c in checks)
    summary = "all passed" if not failed else f"{failed} of {len(checks)} failed"
    lines.append(f"preflight: {len(checks)} checks, {summary}")
    return "\n".join(lines) + "\n"


def exit_code(checks: list[Check]) -> int:
    """0 only when there are checks and every one passed."""
    return 0 if checks and all(c.ok for c in checks) else 1


def dump(checks: list[Check], path) -> None:
    with open(path, "w") as f:
        json.dump([asdict(c) for c in checks], f)


def load(path) -> list[Check]:
    with open(path) as f:
        return [Check(**c) for c in json.load(f)]
