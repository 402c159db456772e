"""``DEVICE=`` of ``make analyze`` and ``make eval``: ``cpu``, ``cuda``, or empty for cuda when a
GPU is visible; one rule for every command, checked when the settings are read and resolved when
the model is placed."""

from __future__ import annotations

from eval.rundir import EvalError

DEVICES = ("", "cpu", "cuda")


def check_device(name: str) -> None:
    """EvalError unless ``name`` is a ``DEVICE=`` value."""
    if name not in DEVICES:
        raise EvalError(f"DEVICE must be cpu or cuda, got {name!r}")


def resolve_device(name: str | None):
    """The torch device for ``DEVICE=name``; EvalError for cuda without a visible GPU."""
    import torch

    check_device(name or "")
    if name == "cuda" and not torch.cuda.is_available():
        raise EvalError("DEVICE=cuda but no GPU is visible; use DEVICE=cpu")
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
