"""Jump metrics in the run's logs: console, TensorBoard, W&B and ``metrics.jsonl``.

Megatron's training loop calls ``config.finalize_model_grads_func`` once per training step on
every rank (and keeps a hook installed before training starts). ``RunLogger`` wraps Megatron's
``finalize_model_grads`` there and, every ``log_interval`` iterations, reduces the jump tracker
(one collective in which every pipeline stage takes part) and writes one JSON line.

Evaluation offers no hook on every rank, so each evaluation pass is closed by counting its forward
steps (``on_eval_forward``, called by the forward step on every rank: eval_iters x microbatches x
model chunks per pass) and reduced at the next training step's hook, or by ``close()`` for the
passes Megatron runs after training (the last validation pass, then the test set). Every pass is
its own line: ``"split": "valid"`` with ``"eval_pass"`` (1-based, in Megatron's validation-sample
order), or ``"split": "test"``. The passes Megatron runs after training (its last validation pass,
on the next validation batches, and the test set) carry ``"after_training": true``: that
validation loss is not the one of the in-loop pass at the same iteration.

The console gets one progress line per logged iteration (``megatron_ext.console.say``): iteration of
total, tokens, losses, D_L, jump ratio, S_model, tokens/s and the time left. Every name (the
tracker's tags, the ``metrics.jsonl`` keys, the console labels) comes from
``megatron_ext.metrics.METRICS``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from megatron_ext.metrics import OFF_BOARD, console, from_scalars
from megatron_ext.tracker import JumpTracker


class RunLogger:
    """Reduces and writes jump metrics.

    Args:
        tracker: the run's jump tracker.
        finalize: Megatron's ``finalize_model_grads`` (called first, unchanged).
        log_interval: iterations between train lines.
        train_iters: the run's last iteration, always logged (a run shorter than
            ``log_interval`` still gets its train line), and the progress line's ``i/N`` and
            ETA; None: only every ``log_interval``, no ETA.
        tokens_per_iteration: global batch size x sequence length.
        iteration_fn: the iteration just completed (1-based), read at hook time.
        metrics_path: ``metrics.jsonl`` (written by the writer rank only).
        is_writer: True on the rank that owns the TensorBoard/W&B writers (the last rank).
        writers_fn: returns ``(tensorboard_writer | None, wandb_writer | None)`` on that rank.
        print_fn: console output (the terminal view, ``megatron_ext.console.say``).
    """

    def __init__(
        self,
        tracker: JumpTracker,
        finalize: Callable,
        *,
        log_interval: int,
        tokens_per_iteration: int,
        iteration_fn: Callable[[], int],
        metrics_path: Path,
        is_writer: bool,
        writers_fn: Callable[[], tuple] = lambda: (None, None),
        print_fn: Callable[[str], None] = print,
        train_iters: int | None = None,
        eval_steps_per_pass: int = 0,
        eval_pass_fn: Callable[[], int] = lambda: 0,
    ):
        self.tracker = tracker
        self._finalize = finalize
        self.log_interval = log_interval
        self.train_iters = train_iters
        self.tokens_per_iteration = tokens_per_iteration
        self.iteration_fn = iteration_fn
        self.metrics_path = Path(metrics_path)
        self.is_writer = is_writer
        self.writers_fn = writers_fn
        self.print_fn = print_fn
        self._last_time = time.perf_counter()
        self._last_iteration: int | None = None
        self._closed = False
        self.eval_steps_per_pass = eval_steps_per_pass
        self.eval_pass_fn = eval_pass_fn
        self._eval_steps = 0
        self._pass_number = 0
        self._sealed_passes: list[int] = []  # eval_pass of each sealed, unreported pass
        self._prev_step: int | None = None

    def on_eval_forward(self) -> None:
        """Count one evaluation forward step, called before its model forward (no sync).

        A pass is sealed when the next pass starts or at the next hook, i.e. only after its last
        microbatch has recorded."""
        self._seal_if_complete()
        if self._eval_steps == 0:
            self._pass_number = self.eval_pass_fn()
        self._eval_steps += 1

    def _seal_if_complete(self) -> None:
        if self.eval_steps_per_pass and self._eval_steps == self.eval_steps_per_pass:
            self._sealed_passes.append(self._pass_number)
            self.tracker.seal("valid")
            self._eval_steps = 0

    def finalize_model_grads(self, *args, **kwargs):
        """Drop-in for ``config.finalize_model_grads_func``."""
        out = self._finalize(*args, **kwargs)
        self.after_step(self.iteration_fn())
        return out

    def after_step(self, iteration: int) -> None:
        """Per-step bookkeeping; collective on log steps and after an evaluation."""
        self._seal_if_complete()
        if self._sealed_passes:
            self._write_passes(self._prev_step or iteration - 1, has_test=False)
        if self._last_iteration is None:
            self._last_iteration = iteration - 1
        self._prev_step = iteration
        if iteration % self.log_interval == 0 or iteration == self.train_iters:
            now = time.perf_counter()
            step_time = (now - self._last_time) / max(1, iteration - self._last_iteration)
            self._write("train", iteration, self.tracker.report("train"), step_time=step_time)
            self._last_time = time.perf_counter()
            self._last_iteration = iteration

    def close(self, iteration: int, has_test: bool, stopped: bool = False) -> None:
        """Write the passes run after training (collective: call on every rank once).

        Args:
            iteration: the last iteration.
            has_test: Megatron ran the test set after the last validation pass (``args.do_test``).
            stopped: Megatron stopped early (signal, time limit, ``--exit-interval``): no pass ran
                after training, and the last in-loop pass, not yet written, is written now.
        """
        if self._closed:
            return
        self._closed = True
        self._seal_if_complete()
        if stopped:  # Megatron already finished the W&B run (training.py:4149-4150 in 0.19.2)
            tensorboard = self.writers_fn()[0]
            self.writers_fn = lambda: (tensorboard, None)
        if self._sealed_passes:
            after = 0 if stopped else 1 + int(has_test)
            self._write_passes(iteration, has_test and not stopped, after_training=after)

    def _write_passes(self, iteration: int, has_test: bool, after_training: int = 0) -> None:
        """Write the sealed passes; the last ``after_training`` of them ran after training."""
        passes, self._sealed_passes = self._sealed_passes, []
        first_after = len(passes) - after_training
        for i, (eval_pass, report) in enumerate(
            zip(passes, self.tracker.report_sealed(), strict=True)
        ):
            after = i >= first_after
            if has_test and i == len(passes) - 1:
                self._write("test", iteration, report, after_training=after)
            else:
                self._write("valid", iteration, report, eval_pass=eval_pass, after_training=after)

    def _write(
        self,
        split: str,
        iteration: int,
        report: dict,
        *,
        step_time=None,
        eval_pass=None,
        after_training: bool = False,
    ) -> None:
        if not self.is_writer or not report:
            return
        line = {"iteration": iteration, "tokens": iteration * self.tokens_per_iteration}
        line |= from_scalars(report)  # the metrics.jsonl names of the tracker's tags
        if split == "train":
            line["step_time_s"] = step_time
        else:
            line["split"] = split
            if eval_pass is not None:
                line["eval_pass"] = eval_pass
            if after_training:
                line["after_training"] = True
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(line) + "\n")
        prefix = "" if split == "train" else f"{split}/"
        scalars = {f"{prefix}{k}": v for k, v in report.items() if k not in OFF_BOARD}
        tb, wandb = self.writers_fn()
        if tb is not None:
            for key, value in scalars.items():
                tb.add_scalar(key, value, iteration)
            tb.flush()
        if wandb is not None:
            wandb.log(scalars, iteration)
        self.print_fn(self._console_line(split, line))

    def _console_line(self, split: str, line: dict) -> str:
        """One line for the terminal: progress (train) or a validation/test result."""
        iteration = line["iteration"]
        metrics = console(line)
        if split == "test":
            return f"test  iteration {iteration}, after training: {metrics}"
        if split != "train":
            when = "after training" if line.get("after_training") else "in training"
            return f"valid iteration {iteration}, pass {line.get('eval_pass')} {when}: {metrics}"
        total = f"/{self.train_iters}" if self.train_iters else ""
        step_time = line.get("step_time_s") or 0.0
        speed = f"{self.tokens_per_iteration / step_time:,.0f} tok/s" if step_time > 0 else ""
        eta = ""
        if self.train_iters and step_time > 0:
            eta = f" | ETA {_duration(max(0, self.train_iters - iteration) * step_time)}"
        return f"iter {iteration}{total} | tokens {line['tokens']:,} | {metrics} | {speed}{eta}"


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``12s``."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
