"""The console of a training run: everything to a log file, a short view to the terminal.

Megatron prints ~1,000 lines per start (its argument dump, dataset and bucket listings, repeated
Transformer Engine/Apex warnings, timers) on rank 0 and the last rank, through ``print`` and
``logging``. The launcher (``python -m launcher``) starts the trainer (or torchrun) with stdout and stderr on one pipe and
``tee``s it here: every line goes to ``runs/<RUN>/logs/<tag>.log``; the terminal gets only

- lines the trainer marks for it with ``megatron_ext.console.say`` (``MARK`` is removed there): the progress line per
  log interval, validation/test results, resume and checkpoint notes;
- ``error: ...`` and ``warning: ...`` lines (ours; Megatron's own logging says ``WARNING:``);
- Megatron's "successfully saved checkpoint" line, shortened;
- when the run fails without an ``error:`` line, the last lines of the log.

The trainer runs in its own process group; SIGINT and SIGTERM reaching the launcher (Ctrl-C on the
terminal, PBS/Slurm at walltime, ``kill``) are forwarded once to that whole group, as a terminal
would, and the launcher keeps reading until the trainer has exited, so its last words are kept.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from megatron_ext.console import MARK

TAIL_LINES = 30
READ_GRACE_S = 5  # output still read after the command exits
REPEAT_S = 2.0  # copies of one signal within this many seconds are forwarded once
_SAVED = re.compile(r"successfully saved checkpoint from iteration\s+(\d+) to (\S+)")


def console_view(line: str) -> str | None:
    """The terminal's version of one output line, or None when it goes to the log file only."""
    if line.startswith(MARK):
        return line[len(MARK) :]
    if line.startswith(("error: ", "warning: ")):
        return line
    saved = _SAVED.search(line)
    if saved:
        return f"saved checkpoint of iteration {saved[1]} in {saved[2]}"
    return None


def _die_with_parent() -> None:
    """In the child before exec: its own process group; SIGTERM when the launcher dies (even by
    SIGKILL), so the trainer saves and exits, and torchrun stops its workers (which run in
    sessions of their own) instead of leaving them behind."""
    os.setpgid(0, 0)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


class _Watch(Protocol):
    def feed(self, line: str) -> None: ...
    def finish(self, rc: int) -> tuple[int, str]: ...


def stop_message(signum: int) -> str:
    """What the launcher prints the moment a stop signal arrives (named as it arrived)."""
    name = signal.Signals(signum).name + (" (Ctrl-C)" if signum == signal.SIGINT else "")
    return (
        f"{name} received: the run stops after its current iteration and saves a checkpoint "
        "first (a large model takes a minute); the same command resumes from it"
    )


def run_logged(
    cmd: list[str],
    env: dict[str, str],
    log_path: Path,
    *,
    header: list[str] = (),
    out=None,
    on_success: Callable[[], list[str]] = list,
    watch: _Watch | None = None,
) -> int:
    """Run ``cmd``, writing all its output to ``log_path`` and the console view to ``out``.

    Args:
        cmd, env: the command and its environment.
        log_path: the full log (appended to; the header lines first).
        header: lines the launcher already printed (the plan), repeated at the top of the log.
        out: the terminal (default ``sys.stdout``).
        on_success: lines to print after a successful run (the summary).
        watch: sees every line; on a failure it gives the exit code and the last line
            (``launcher.watch.TorchrunWatch`` for torchrun).

    Returns:
        the command's exit code (128 + N when a signal N ended it, or when the launcher passed
        on signal N and the command stopped for it).
    """
    out = out or sys.stdout
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        cmd, env={**env, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
    )  # fmt: skip
    forwarded: set[int] = set()
    last_forward: dict[int, float] = {}

    def forward(signum, _frame):
        # One Ctrl-C reaches the launcher twice: from the terminal (its process group) and
        # passed on by `uv run`. A second copy arriving late would hit the helper process the
        # trainer spawns for its checkpoint save (same group) and break the save, so copies
        # within REPEAT_S are dropped; a deliberate second Ctrl-C later still goes through.
        now = time.monotonic()
        if now - last_forward.get(signum, -REPEAT_S) < REPEAT_S:
            return
        last_forward[signum] = now
        if signum not in forwarded:  # at once: the checkpoint save takes a while, silently
            print(stop_message(signum), file=out, flush=True)
        forwarded.add(signum)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    said = {"error": False}

    def read(log) -> None:
        for raw in proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            log.write(line + "\n")
            log.flush()
            tail.append(line)
            if watch is not None:
                watch.feed(line)
            view = console_view(line)
            if view is not None:
                said["error"] = said["error"] or view.startswith("error: ")
                print(view, file=out, flush=True)

    try:
        with log_path.open("a", encoding="utf-8") as log:
            for line in header:
                log.write(line + "\n")
            log.flush()
            # A thread, not a loop to EOF: helpers the trainer started (W&B's service) can
            # outlive it and hold the pipe open.
            reader = threading.Thread(target=read, args=(log,), daemon=True)
            reader.start()
            code = proc.wait()
            reader.join(timeout=READ_GRACE_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    code = 128 - code if code < 0 else code
    if code == 0:
        for line in on_success():
            print(line, file=out, flush=True)
    elif code - 128 in forwarded:
        pass  # stopped for the signal we passed on; the trainer said where it saved
    elif watch is not None:
        code, last = watch.finish(code)
        print(f"full log: {log_path}", file=out)
        print(last, file=out, flush=True)
    elif said["error"]:
        pass  # the error line stays the last line (the log's path was printed at the start)
    else:
        print(f"the run failed (exit code {code}); the last lines of its log {log_path}:", file=out)
        for line in tail:
            print("  " + line, file=out)
        out.flush()
    return code
