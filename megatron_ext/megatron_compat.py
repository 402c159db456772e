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
"""

from __future__ import annotations

_enabled = False


def load_prebuilt_helpers() -> None:
    """``compile_helpers`` for a wheel install: import the shipped extension, never build it."""
    try:
        import megatron.core.datasets.helpers_cpp  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            "megatron-core's dataset helpers (megatron/core/datasets/helpers_cpp) are missing or "
            f"do not load ({err}); reinstall the environment with `make setup`"
        ) from err


def enable() -> None:
    """Apply the all-device workarounds (idempotent)."""
    global _enabled
    if _enabled:
        return
    from megatron.core.datasets import utils as dataset_utils

    # initialize.py:176 imports the name from the module at call time: replacing the module
    # attribute is enough (and covers any other caller of compile_helpers).
    dataset_utils.compile_helpers = load_prebuilt_helpers
    _enabled = True


def is_enabled() -> bool:
    """True when the workarounds are active in this process."""
    return _enabled
