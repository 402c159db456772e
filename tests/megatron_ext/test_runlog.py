"""RunLogger on one process (no collectives): which iterations get a train line."""

from __future__ import annotations

import json

import pytest
import torch

from megatron_ext.runlog import RunLogger
from megatron_ext.tracker import JumpTracker


def run_steps(tmp_path, iterations: int, log_interval: int) -> list[int]:
    tracker = JumpTracker(2, torch.tensor([0.5, 0.5]), lam=0.1)
    path = tmp_path / "metrics.jsonl"
    logger = RunLogger(
        tracker, lambda: None, log_interval=log_interval, tokens_per_iteration=16,
        iteration_fn=lambda: 0, metrics_path=path, is_writer=True, print_fn=lambda _: None,
        train_iters=iterations,
    )  # fmt: skip
    for iteration in range(1, iterations + 1):
        for layer in (1, 2):
            tracker.record(layer, torch.tensor(0.1 * layer))
        logger.after_step(iteration)
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    "iterations, log_interval, logged",
    [(3, 10, [3]), (25, 10, [10, 20, 25]), (20, 10, [10, 20]), (4, 1, [1, 2, 3, 4])],
)
def test_last_iteration_is_always_logged(tmp_path, iterations, log_interval, logged):
    assert run_steps(tmp_path, iterations, log_interval) == logged
