"""W&B checkpoint artifacts that cannot kill a run (megatron-core 0.19.2).

After every checkpoint save the last rank logs a W&B artifact
(``megatron/training/checkpointing.py:1089-1101`` -> ``wandb_utils.on_save_checkpoint_success``),
which adds ``latest_checkpointed_iteration.txt`` to it (``wandb_utils.py:38``). Rank 0 writes that
file (``checkpointing.py:1011``) after the barrier at line 956 and nothing orders the two, so when
the last rank gets there first (another node, a loaded machine, the first save of a run) W&B
raises ``ValueError: Path is not a file`` and the run dies at a checkpoint, its peers then failing
with "Connection closed by peer". Artifacts are a convenience: ``install()`` wraps the hook so it
waits (bounded) until rank 0 has recorded this iteration, then logs the artifact, and any failure
is one warning line. It is a patch of Megatron, kept out of ``cpu_compat`` because GPU runs need it
too; drop it once megatron-core guards the hook itself.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

TRACKER_WAIT_S = 120.0  # rank 0 writes the tracker right after the same barrier: normally ms


def wait_for_tracker(tracker: str | Path, iteration: int, timeout: float) -> bool:
    """True once ``tracker`` names ``iteration`` (or a release), False after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = Path(tracker).read_text().strip()
        except OSError:
            text = ""
        if text in (str(iteration), "release"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def safe_hook(hook, timeout: float = TRACKER_WAIT_S):
    """``hook(checkpoint_path, tracker_filename, save_dir, iteration)`` that never raises."""

    @functools.wraps(hook)
    def wrapper(checkpoint_path, tracker_filename, save_dir, iteration):
        try:
            if not wait_for_tracker(tracker_filename, iteration, timeout):
                raise TimeoutError(f"{tracker_filename} did not name iteration {iteration}")
            hook(checkpoint_path, tracker_filename, save_dir, iteration)
        except Exception as err:  # an artifact is never worth a run
            print(
                f"warning: W&B checkpoint artifact for iteration {iteration} not logged "
                f"({type(err).__name__}: {err}); the checkpoint itself is saved",
                flush=True,
            )

    wrapper.jreg_safe = True
    return wrapper


def install() -> None:
    """Guard Megatron's W&B save hook (idempotent; checkpointing.py looks it up per call)."""
    from megatron.training import wandb_utils

    if not getattr(wandb_utils.on_save_checkpoint_success, "jreg_safe", False):
        wandb_utils.on_save_checkpoint_success = safe_hook(wandb_utils.on_save_checkpoint_success)
