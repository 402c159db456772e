"""``make eval``'s console: our lines and the tables; everything the libraries say goes to a log.

Megatron's import (no Transformer Engine, no Apex, no CUDA runtime), lm-eval (aggregation notices,
rank fallbacks, batch-size search) and the progress bars write to stderr or stdout; under
``library_output_to`` file descriptors 1 and 2 are the log
``<out>/lm_eval/logs/eval-<time>-<pid>.log``, as ``make pretrain`` keeps its console to a short
view of ``runs/<RUN>/logs/``. Our own lines are printed and also written to the log, so it reads
as the whole story. Both are restored on the way out, so an ``error:`` line or a traceback still
reaches the console.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def library_output_to(log_dir: Path) -> Iterator[Callable[[str], None]]:
    """Send stderr to a new log in ``log_dir``; yields ``say(text)`` (console and log)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"eval-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    console = os.fdopen(os.dup(saved[1]), "w", encoding="utf-8", buffering=1)
    with path.open("a", encoding="utf-8") as log, console:

        def say(text: str) -> None:
            sys.stdout.flush()
            sys.stderr.flush()
            console.write(text + "\n")
            log.write(text + "\n")
            log.flush()

        for fd in (1, 2):
            os.dup2(log.fileno(), fd)
        try:
            say(f"log: {path} (library warnings and progress bars)")
            yield say
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
