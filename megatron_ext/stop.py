"""Stopping a run cleanly: Ctrl-C, a scheduler's SIGTERM, or the time limit all save a checkpoint.

The launcher passes ``--exit-signal-handler`` (Megatron installs a SIGTERM handler; after the
current iteration every rank saves a checkpoint and ``train()`` calls ``sys.exit(0)``,
``training.py:3247-3262`` and ``:4134-4155``) and, with TIME_LIMIT, ``--exit-duration-in-mins``
(the same save and exit once that many minutes have passed since the process started). Megatron
handles one signal; ``install_sigint`` routes SIGINT (Ctrl-C; torchrun forwards it to every rank)
to that same handler, and before Megatron has installed it (start-up, nothing to save) raises
KeyboardInterrupt as usual. ``report`` turns Megatron's exit into one line saying why the run
stopped, where its checkpoint is and how to resume, and the exit code:

- 0: stopped at the time limit or at ``--exit-interval`` (Megatron's own check right after the
  signal and time checks; a checkpoint was saved; the same command or job resumes);
- 128 + signal: stopped by a signal after saving a checkpoint (130 for SIGINT, 143 for SIGTERM),
  the code a shell reports for a process a signal ended.
"""

from __future__ import annotations

import os
import signal

from megatron_ext.console import say
from megatron_ext.resume import last_checkpoint

_sigint_received = False


def install_sigint() -> None:
    """Route SIGINT to Megatron's exit-signal handler once it exists (set by ``pretrain()``)."""

    def on_sigint(signum, frame):
        global _sigint_received
        megatron_handler = signal.getsignal(signal.SIGTERM)
        if not callable(megatron_handler):  # start-up: nothing to save yet
            raise KeyboardInterrupt
        _sigint_received = True
        if os.environ.get("RANK", "0") == "0":
            # the run log's record of what arrived: Megatron's own line at the exit says SIGTERM
            # whatever the signal (training.py:3260), as SIGINT goes through its SIGTERM handler
            print("received SIGINT (Ctrl-C): saving a checkpoint after the current iteration, "
                  "then exiting", flush=True)  # fmt: skip
        megatron_handler(signal.SIGTERM, frame)

    signal.signal(signal.SIGINT, on_sigint)


def _sigterm_received() -> bool:
    from megatron.training import global_vars

    handler = global_vars._GLOBAL_SIGNAL_HANDLER
    return bool(handler is not None and getattr(handler, "_signal_received", False))


def stop_reason(args, iteration: int | None) -> tuple[str, int]:
    """Why Megatron's training loop exited early on this rank at ``iteration``, and the exit code
    for it."""
    if _sigint_received:
        return "SIGINT (Ctrl-C)", 128 + signal.SIGINT
    if _sigterm_received():
        return "SIGTERM", 128 + signal.SIGTERM
    if args.exit_interval and iteration and iteration % args.exit_interval == 0:
        return f"--exit-interval {args.exit_interval}", 0
    if args.exit_duration_in_mins:
        return f"its time limit ({args.exit_duration_in_mins} min)", 0
    return "a stop signal on another rank", 128 + signal.SIGTERM


def report(args) -> int:
    """One line (rank 0) for a run Megatron stopped before ``train_iters``; returns the code."""
    saved = last_checkpoint(args.save)
    reason, code = stop_reason(args, saved)
    if args.rank == 0:
        where = f"checkpoint {args.save}/iter_{saved:07d}" if saved else "no checkpoint saved"
        say(
            f"stopped by {reason} at iteration {saved or 0} of {args.train_iters}: {where}; "
            "run the same command again to resume"
        )
    return code
