"""Workarounds for megatron-core 0.19.2 as installed from its wheel, on every device.

``cpu_compat`` holds the shims that only a machine without a GPU needs; this module holds what a
GPU run needs too. ``enable()`` is idempotent and must run before ``pretrain()``.

- Dataset helpers: ``pretrain()`` -> ``initialize_megatron`` -> ``_compile_dependencies``
  (megatron/training/initialize.py:165-185) calls ``compile_helpers()``
  (megatron/core/datasets/utils.py:20-31) on rank 0, which runs ``make -C
  .../megatron/core/datasets``. The wheel ships the compiled ``helpers_cpp`` extension but no
  Makefile, so ``make`` fails and Megatron calls ``sys.exit(1)``: every run would stop there.
  Nothing in the arguments skips that call, and the non-patch alternatives are worse (a Makefile
  written into the installed package is lost on every sync; a ``MAKEFILES`` environment
  variable needs ``make`` on every node and leaks into every child process). So the helper is
  replaced by what it is for: making ``helpers_cpp`` importable, with a one-line error naming
  the fix when the extension is missing.
- Checkpoint write results: a synchronous ``torch_dist`` save (every save here: no
  ``--async-save``) goes ``TorchDistSaveShardedStrategy.save`` (dist_checkpointing/strategies/
  torch.py:725-729) -> ``FileSystemWriterAsync.prepare_write_data``, which takes its results
  queue from ``get_write_results_queue()`` (strategies/filesystem_async.py:53-66,200): a
  ``multiprocessing`` Manager started with ``spawn``, i.e. a second Python process that imports
  the trainer's whole import chain again (~6 s of CPU per process that saves, before its first
  checkpoint is written). A synchronous save writes and reads that queue in its own process and
  thread, so it gets a plain ``queue.Queue``; an asynchronous save still gets the Manager.
"""

from __future__ import annotations

import queue
import threading

_enabled = False
_sync_save = threading.local()


def load_prebuilt_helpers() -> None:
    """``compile_helpers`` for a wheel install: import the shipped extension, never build it."""
    try:
        import megatron.core.datasets.helpers_cpp  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            "megatron-core's dataset helpers (megatron/core/datasets/helpers_cpp) are missing or "
            f"do not load ({err}); reinstall the environment with `make setup`"
        ) from err


def _in_process_write_results() -> None:
    """A synchronous save's write results through an in-process queue (module docstring)."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async
    from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

    manager_queue = filesystem_async.get_write_results_queue
    orig_save = TorchDistSaveShardedStrategy.save

    def write_results_queue(mp_mode: str = "spawn"):
        in_process = getattr(_sync_save, "queue", None)
        return in_process if in_process is not None else manager_queue(mp_mode)

    def save(self, sharded_state_dict, checkpoint_dir):
        _sync_save.queue = queue.Queue()
        try:
            return orig_save(self, sharded_state_dict, checkpoint_dir)
        finally:
            _sync_save.queue = None

    filesystem_async.get_write_results_queue = write_results_queue
    TorchDistSaveShardedStrategy.save = save


def enable() -> None:
    """Apply the all-device workarounds (idempotent)."""
    global _enabled
    if _enabled:
        return
    from megatron.core.datasets import utils as dataset_utils

    # initialize.py:176 imports the name from the module at call time: replacing the module
    # attribute is enough (and covers any other caller of compile_helpers).
    dataset_utils.compile_helpers = load_prebuilt_helpers
    _in_process_write_results()
    _enabled = True


def is_enabled() -> bool:
    """True when the workarounds are active in this process."""
    return _enabled
