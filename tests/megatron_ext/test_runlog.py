"""RunLogger on one process (no collectives): which iterations get a train line, which
validation line is which, and the console progress line."""

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


def record(tracker: JumpTracker, training: bool, value: float) -> None:
    for layer in (1, 2):
        tracker.record(layer, torch.tensor(value * layer), training=training)
    tracker.record_lm_loss(torch.tensor(value * 10), torch.tensor(1.0), training=training)


def test_after_training_passes_are_labelled(tmp_path):
    """Training to 10 with a validation pass every 5 iterations: Megatron evaluates pass 1 at 5,
    pass 2 at 10 (in the loop), then pass 3 (the next validation batches) and the test set after
    training. Only the last two carry after_training, and the console says which is which."""
    tracker = JumpTracker(2, torch.tensor([0.5, 0.5]), lam=0.1)
    printed = []
    eval_pass = iter([1, 2, 3, 4])
    logger = RunLogger(
        tracker, lambda: None, log_interval=5, tokens_per_iteration=100,
        iteration_fn=lambda: 0, metrics_path=tmp_path / "metrics.jsonl", is_writer=True,
        print_fn=printed.append, eval_steps_per_pass=1, eval_pass_fn=lambda: next(eval_pass),
        train_iters=10,
    )  # fmt: skip

    def evaluate(value):
        logger.on_eval_forward()
        record(tracker, False, value)

    for iteration in range(1, 11):
        record(tracker, True, 0.1)
        logger.after_step(iteration)
        if iteration % 5 == 0:
            evaluate(0.2)  # in-loop pass
    evaluate(0.3)  # after training: validation
    evaluate(0.4)  # after training: test
    logger.close(10, has_test=True)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [(x["iteration"], x.get("split"), x.get("eval_pass"), x.get("after_training"))
             for x in lines if "split" in x]  # fmt: skip
    assert evals == [
        (5, "valid", 1, None),
        (10, "valid", 2, None),
        (10, "valid", 3, True),
        (10, "test", None, True),
    ]
    assert [x["lm_loss"] for x in lines if "split" in x] == [2.0, 2.0, 3.0, 4.0]
    views = [x.split(":")[0] for x in printed if not x.startswith("iter ")]
    assert views == [
        "valid iteration 5, pass 1 in training",
        "valid iteration 10, pass 2 in training",
        "valid iteration 10, pass 3 after training",
        "test  iteration 10, after training",
    ]
    progress = [x for x in printed if x.startswith("iter ")]
    assert [x.split(" | ")[:2] for x in progress] == [
        ["iter 5/10", "tokens 500"],
        ["iter 10/10", "tokens 1,000"],
    ]
    assert "D_L 0.2000 | jump ratio 2.000" in progress[0] and "tok/s | ETA " in progress[0]


def test_a_stop_writes_the_last_in_loop_pass(tmp_path):
    """Stopped right after the validation pass at 10 (a signal, the time limit or
    --exit-interval): no step follows to write it, so close(stopped=True) does, as an in-loop
    pass, and W&B (already finished by Megatron) is not called."""
    tracker = JumpTracker(2, torch.tensor([0.5, 0.5]), lam=0.1)
    wandb_calls = []

    class WandB:
        def log(self, *a):
            wandb_calls.append(a)

    logger = RunLogger(
        tracker, lambda: None, log_interval=5, tokens_per_iteration=100,
        iteration_fn=lambda: 0, metrics_path=tmp_path / "metrics.jsonl", is_writer=True,
        print_fn=lambda _: None, eval_steps_per_pass=1, eval_pass_fn=lambda: 2,
        train_iters=30, writers_fn=lambda: (None, WandB()),
    )  # fmt: skip
    for iteration in range(1, 11):
        record(tracker, True, 0.1)
        logger.after_step(iteration)
    calls_before = len(wandb_calls)
    logger.on_eval_forward()
    record(tracker, False, 0.2)
    logger.close(10, has_test=False, stopped=True)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [(x["iteration"], x.get("split"), x.get("eval_pass"), x.get("after_training"))
             for x in lines if "split" in x]  # fmt: skip
    assert evals == [(10, "valid", 2, None)]
    assert len(wandb_calls) == calls_before
