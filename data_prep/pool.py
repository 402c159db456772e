"""Run shard tasks on a process pool with a tokens/s progress bar.

Workers are *spawned* (not forked) so they never inherit tokenizer thread pools or a
half-imported megatron, and each is pinned to one tokenizer thread: parallelism comes from
the pool (workers = cores). With one worker, or one shard, tasks run in-process.
"""

import logging
import os
import queue
import signal
import sys
import time
from multiprocessing import TimeoutError, get_context

from tqdm import tqdm

from data_prep.errors import BuildInterrupted
from data_prep.shards import ShardTask, run_shard

log = logging.getLogger("data_prep")

_progress_queue = None


def _init_worker(progress_queue) -> None:
    global _progress_queue
    _progress_queue = progress_queue
    # Ctrl-C reaches the whole process group; only the parent handles it (and terminates us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One tokenizer thread per worker: the pool already uses every core.
    os.environ["RAYON_RS_NUM_CPUS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["OMP_NUM_THREADS"] = "1"


def _run_in_worker(task: ShardTask) -> dict:
    return run_shard(task, progress=lambda b, t: _progress_queue.put((b, t)))


class _Bar:
    """tqdm over text bytes with a tokens/s postfix; also keeps totals for the final log line."""

    def __init__(self, total_bytes: int | None, enabled: bool | None) -> None:
        disable = not sys.stderr.isatty() if enabled is None else not enabled
        self.bar = tqdm(
            total=total_bytes,
            unit="B",
            unit_scale=True,
            desc="tokenize",
            disable=disable,
            dynamic_ncols=True,
        )
        self.start, self.bytes, self.tokens = time.perf_counter(), 0, 0

    def update(self, nbytes: int, ntokens: int) -> None:
        self.bytes += nbytes
        self.tokens += ntokens
        self.bar.update(nbytes)
        rate = self.tokens / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{rate / 1e6:.2f}M tok/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


def run_tasks(
    tasks: list[ShardTask],
    *,
    workers: int,
    total_bytes: int | None,
    stop_after: int | None = None,
    progress: bool | None = None,
) -> tuple[int, int]:
    """Process every task; returns (bytes, tokens) processed in this call.

    `stop_after` raises BuildInterrupted after that many shards finish (used to test resume).
    """
    bar = _Bar(total_bytes, progress)
    finished = 0
    try:
        if workers == 1 or len(tasks) <= 1:
            for task in tasks:
                run_shard(task, progress=bar.update)
                finished += 1
                if stop_after is not None and finished >= stop_after and finished < len(tasks):
                    raise BuildInterrupted(f"stopped after {finished} shards")
            return bar.bytes, bar.tokens
        ctx = get_context("spawn")
        progress_queue = ctx.Queue()
        # Pool.__exit__ terminates the workers: on Ctrl-C, an error or stop_after, work in
        # flight is abandoned at once (its uncommitted piece is redone on resume).
        with ctx.Pool(
            min(workers, len(tasks)), initializer=_init_worker, initargs=(progress_queue,)
        ) as pool:
            results = pool.imap_unordered(_run_in_worker, tasks)
            while finished < len(tasks):
                try:
                    results.next(timeout=0.2)  # re-raises a worker's DataError here
                    finished += 1
                except TimeoutError:
                    pass
                _drain(progress_queue, bar)
                if stop_after is not None and finished >= stop_after and finished < len(tasks):
                    raise BuildInterrupted(f"stopped after {finished} shards")
        return bar.bytes, bar.tokens
    finally:
        bar.close()


def _drain(progress_queue, bar: _Bar) -> None:
    while True:
        try:
            bar.update(*progress_queue.get_nowait())
        except queue.Empty:
            return
