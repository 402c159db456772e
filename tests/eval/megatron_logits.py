"""Logits of a run's checkpoint from the one-process Megatron model (a test helper; its own
process, since cpu_compat patches torch): ``python -m tests.eval.megatron_logits RUN ITER OUT``.

Feeds the first sequences of the run's held-out test sample and saves ``{"tokens", "logits"}``
(fp32, ``[b, s]`` and ``[b, s, vocab]``) to OUT for comparison with the exported HF model.
"""

from __future__ import annotations

import sys

import torch

from eval import megatron_io
from eval.rundir import load_run


def main(run_name: str, iteration: str, out: str) -> None:
    run = load_run(run_name)
    megatron_io.init(run.schedule.seed)
    model = megatron_io.load_checkpoint(run, int(iteration), torch.float32)
    ds = megatron_io.dataset(run, "test", 2)
    batch = next(megatron_io.batches(ds, range(2), 2, torch.device("cpu")))
    with torch.no_grad():
        logits = model(batch["tokens"], batch["position_ids"], None)
    torch.save({"tokens": batch["tokens"], "logits": logits.float()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
