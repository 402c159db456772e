"""Supervising torchrun: a failed multi-process run ends with our one line, naming the rank.

The launcher's console (``launcher.console.run_logged``) feeds every output line to
:class:`TorchrunWatch`; the exit codes are ``megatron_ext.faults``'.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

from megatron_ext.faults import EXIT_RANK_DIED, last_saved

_RANK = re.compile(r"^\s*rank\s*:\s*(\d+) \(local_rank: (\d+)\)")
_HOST = re.compile(r"^\s*host\s*:\s*(\S+)")
_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return str(-code)


class TorchrunWatch:
    """Reads a multi-process run's output (``launcher.console.run_logged`` feeds it every
    line) and, when torchrun fails, gives the run's last line: ours, naming the rank.

    torchrun stops every local worker when one fails and prints a multi-line ChildFailedError
    summary whose "Root Cause" is the first rank that failed. If a signal killed it, it is named
    (``error: rank R ... died``, exit code 5); otherwise the first ``error:`` line a rank printed
    (NaN, disk full, a collective timeout) is repeated last with that rank's exit code;
    otherwise the failed rank and its exit code are named (exit code 5).
    """

    def __init__(self, save_dir: Path):
        self.save_dir = save_dir
        self.error: str | None = None
        self.root: dict | None = None
        self.failures: list[dict] = []
        self.host = "this node"
        self.in_root = False

    def feed(self, line: str) -> None:
        """Note the first ``error:`` line and the failures of torchrun's summary."""
        if self.error is None and line.startswith("error: "):
            self.error = line
        if line.startswith("Root Cause"):
            self.in_root = True
        if match := _HOST.match(line):
            self.host = match.group(1)
        elif match := _RANK.match(line):
            failure = {"rank": match.group(1), "local": match.group(2), "host": self.host}
            self.failures.append(failure)
            if self.in_root and self.root is None:
                self.root = failure
        elif (match := _EXIT.match(line)) and self.failures:
            self.failures[-1].setdefault("exit", int(match.group(1)))

    def finish(self, rc: int) -> tuple[int, str]:
        """(exit code, last line) for a torchrun that exited with ``rc != 0``."""
        root = self.root or next((f for f in self.failures if "exit" in f), None)
        if self.error is not None and not (root and root.get("exit", 0) < 0):
            return (root["exit"] if root and root.get("exit", 0) > 0 else rc), self.error
        if root and "exit" in root:
            how = f"died (signal {_signal_name(root['exit'])})" if root["exit"] < 0 else (
                f"failed (exit code {root['exit']}, traceback in the log)")  # fmt: skip
            who = f"rank {root['rank']} (local rank {root['local']} on {root['host']}) {how}"
        else:
            who = f"torchrun failed (exit code {rc})"
        return EXIT_RANK_DIED, (
            f"error: {who}; torchrun stopped the other ranks. Last checkpoint: "
            f"{last_saved(str(self.save_dir))}; rerun the same command to resume from it."
        )
