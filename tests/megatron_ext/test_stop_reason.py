"""Why a run stopped early, as ``megatron_ext.stop`` reports it (no training: the reasons are
checked in Megatron's own order, signals first)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from megatron_ext import stop


def args(exit_interval=None, exit_duration_in_mins=None):
    return SimpleNamespace(exit_interval=exit_interval, exit_duration_in_mins=exit_duration_in_mins)


@pytest.mark.parametrize(
    "a, iteration, reason, code",
    [
        (args(exit_interval=900), 900, "--exit-interval 900", 0),
        (args(exit_interval=900, exit_duration_in_mins=30), 900, "--exit-interval 900", 0),
        (args(exit_interval=900, exit_duration_in_mins=30), 950, "its time limit (30 min)", 0),
        (args(exit_interval=900), 950, "a stop signal on another rank", 143),
        (args(), None, "a stop signal on another rank", 143),
    ],
)
def test_stop_reason(a, iteration, reason, code):
    assert stop.stop_reason(a, iteration) == (reason, code)


def test_sigint_comes_first(monkeypatch):
    monkeypatch.setattr(stop, "_sigint_received", True)
    assert stop.stop_reason(args(exit_interval=900), 900) == ("SIGINT (Ctrl-C)", 130)
