"""`make help` lists every .PHONY target, each on one line with every variable its recipe passes."""

from __future__ import annotations

import re
import subprocess

from tests.helpers import REPO


def makefile() -> str:
    # join continuation lines, so `X_VARS := A B \` + `C` reads as one assignment
    return (REPO / "Makefile").read_text().replace("\\\n", " ")


def phony_targets() -> set[str]:
    return {t for line in re.findall(r"^\.PHONY:(.*)$", makefile(), re.M) for t in line.split()}


def help_lines() -> dict[str, str]:
    proc = subprocess.run(["make", "-s", "-C", str(REPO), "help"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = {}
    for line in proc.stdout.splitlines():
        match = re.match(r"make (\S+)", line)
        assert match, f"help line without a target: {line!r}"
        assert match[1] not in lines, f"{match[1]} listed twice"
        lines[match[1]] = line
    return lines


def test_help_lists_every_phony_target():
    targets, lines = phony_targets(), help_lines()
    assert len(targets) >= 10
    assert sorted(targets - lines.keys()) == []
    assert sorted(lines.keys() - targets) == []


def test_help_line_names_every_variable_of_its_target():
    lines = help_lines()
    checked = 0
    for name, values in re.findall(r"^([A-Z]+)_VARS\s*:=(.*)$", makefile(), re.M):
        target = name.lower().replace("_", "-")
        if target not in lines:
            continue
        for var in values.split():
            assert re.search(rf"\b{var}=", lines[target]), f"make help: {target} lacks {var}="
        checked += 1
    assert checked >= 5  # pretrain, submit, analyze, plots, export, eval
