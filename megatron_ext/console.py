"""The trainer's console lines: :func:`say` marks a line for the terminal view.

The launcher (``launcher.console``) runs the trainer with its whole output going to the run's
log file and shows the terminal only the lines marked here, ``error:``/``warning:`` lines and
Megatron's checkpoint-saved line.
"""

from __future__ import annotations

MARK = "[jreg] "


def say(text: str) -> None:
    """Print a line for the terminal view (the trainer's own console lines)."""
    print(MARK + text, flush=True)
