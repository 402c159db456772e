"""Training-step scenarios run under torchrun over gloo (``python -m tests.megatron_ext.scenarios``).

Each layout runs one real step of Megatron's schedules with DDP and ``finalize_model_grads`` on a
small Llama model whose weights depend only on the seed, then writes, per rank, the LM loss, every
parameter gradient as pieces of the full tensor, and the tracker's reduced report. The tests
assemble the pieces and compare layouts with the single-process reference.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch

from megatron_ext import cpu_compat

cpu_compat.enable()

from megatron.core import parallel_state as ps  # noqa: E402
from megatron.core.distributed import (  # noqa: E402
    DistributedDataParallel,
    DistributedDataParallelConfig,
    finalize_model_grads,
)
from megatron.core.pipeline_parallel import get_forward_backward_func  # noqa: E402
from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed  # noqa: E402

from megatron_ext.config import LlamaConfig  # noqa: E402
from megatron_ext.init import global_names, global_shape, layout_invariant_init, shard_pieces  # noqa: E402
from megatron_ext.model import build_gpt_model, transformer_config  # noqa: E402
from megatron_ext.reg import JregRuntime  # noqa: E402
from megatron_ext.regconfig import JregConfig  # noqa: E402
from megatron_ext.selfdistill_train import SelfDistillRuntime  # noqa: E402
from megatron_ext.tracker import JumpTracker  # noqa: E402

MODEL = LlamaConfig(
    num_layers=4, hidden_size=64, ffn_hidden_size=96, num_attention_heads=4, num_query_groups=2,
    seq_length=32, rotary_base=10_000,
)  # fmt: skip
VOCAB = 128
MICRO_BATCH = 2
NUM_MICROBATCHES = 4  # global; divided among DP ranks
SEED = 1234


def make_batches(num: int, seed: int = SEED) -> list[dict[str, torch.Tensor]]:
    """``num`` microbatches of random tokens, the same on every rank."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        tokens = torch.randint(0, VOCAB, (MICRO_BATCH, MODEL.seq_length + 1), generator=gen)
        out.append(
            {
                "tokens": tokens[:, :-1].contiguous(),
                "labels": tokens[:, 1:].contiguous(),
                "loss_mask": torch.ones(MICRO_BATCH, MODEL.seq_length),
                "position_ids": torch.arange(MODEL.seq_length).expand(MICRO_BATCH, -1).contiguous(),
            }
        )
    return out


def loss_func(loss_mask, output_tensor):
    """Megatron's 3-tuple convention: (sum, num_tokens, {key: [sum, count]})."""
    losses = output_tensor.float().view(-1)
    mask = loss_mask.view(-1).float()
    loss_sum = (losses * mask).sum()
    num_tokens = mask.sum().to(torch.int)
    return loss_sum, num_tokens, {"lm loss": torch.stack([loss_sum.detach(), mask.sum()])}


def forward_step(data_iterator, model, selfdistill=None):
    """``selfdistill``: REG=selfdistill's runtime, attached as ``megatron_ext.step`` does."""
    batch = next(data_iterator)
    out = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
    if selfdistill is not None:
        out = selfdistill.attach(out, model, model.training)
    return out, partial(loss_func, batch["loss_mask"])


def build(layout: dict, jcfg: JregConfig):
    """Model chunks (DDP-wrapped), config, tracker and REG=selfdistill's runtime (else None)
    for a layout on the current groups."""
    tp, pp, vpp = layout.get("tp", 1), layout.get("pp", 1), layout.get("vpp")
    sp = layout.get("sp", False)
    per_token = layout.get("per_token", False)
    tracker = JumpTracker.from_config(jcfg)
    runtime = JregRuntime(jcfg, tracker, sequence_parallel=sp, tp_size=tp, per_token_loss=per_token)
    sd = None
    if jcfg.selfdistill is not None:
        sd = SelfDistillRuntime(runtime, tracker, sequence_parallel=sp, per_token_loss=per_token)
    config = transformer_config(
        MODEL, tp=tp, pp=pp, vpp=vpp, sequence_parallel=sp,
        calculate_per_token_loss=per_token, **layout.get("overrides", {}),
    )  # fmt: skip
    chunks = []
    for vp in range(vpp or 1):
        vp_stage = vp if vpp else None
        chunks.append(
            build_gpt_model(
                MODEL,
                config,
                runtime,
                VOCAB,
                pre_process=ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
                post_process=ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
                vp_stage=vp_stage,
            )  # fmt: skip
        )
    layout_invariant_init(
        chunks, seed=SEED, std=MODEL.init_method_std, num_layers=MODEL.num_layers,
        tp_rank=ps.get_tensor_model_parallel_rank(), tp_size=tp,
    )  # fmt: skip
    ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True)
    wrapped = [
        DistributedDataParallel(config, ddp_config, chunk, disable_bucketing=(i > 0))
        for i, chunk in enumerate(chunks)
    ]
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = [m.no_sync for m in wrapped] if len(wrapped) > 1 else wrapped[0].no_sync
    return wrapped, config, tracker, sd


def run_layout(layout: dict, jcfg: JregConfig) -> dict:
    """One step on ``layout``; returns this rank's loss, gradient pieces and tracker report."""
    tp, pp, vpp = layout.get("tp", 1), layout.get("pp", 1), layout.get("vpp")
    ps.destroy_model_parallel()
    ps.initialize_model_parallel(tp, pp, virtual_pipeline_model_parallel_size=vpp)
    model_parallel_cuda_manual_seed(SEED)
    dp, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    wrapped, config, tracker, sd = build(layout, jcfg)
    batches = make_batches(NUM_MICROBATCHES)
    per_rank = NUM_MICROBATCHES // dp
    mine = batches[dp_rank * per_rank : (dp_rank + 1) * per_rank]
    iters = [iter(mine) for _ in wrapped]
    for m in wrapped:
        m.zero_grad_buffer()
    losses = get_forward_backward_func()(
        forward_step_func=partial(forward_step, selfdistill=sd),
        data_iterator=iters if len(iters) > 1 else iters[0],
        model=wrapped if len(wrapped) > 1 else wrapped[0],
        num_microbatches=per_rank,
        seq_length=MODEL.seq_length,
        micro_batch_size=MICRO_BATCH,
        forward_only=False,
    )
    counts = tracker.num_records("train")
    report = tracker.report("train")
    result = {"report": report, "counts": counts, "grads": {}, "loss": None}
    if losses:
        total = torch.stack([x["lm loss"] for x in losses]).sum(0)
        torch.distributed.all_reduce(total, group=ps.get_data_parallel_group())
        result["loss"] = float(total[0] / total[1])
    tp_rank = ps.get_tensor_model_parallel_rank()
    for chunk in wrapped:
        names = global_names(chunk)
        for name, param in chunk.named_parameters():
            gname = names[name]
            shape = global_shape(param, tp)
            grad = param.main_grad.detach().clone()
            pieces = [
                (gsl, grad[lsl])
                for gsl, lsl in shard_pieces(gname, param, shape, tp_rank, tp, True)
            ]
            result["grads"][gname] = (shape, pieces)
    return result


@contextmanager
def one_process(seed: int) -> Iterator[str]:
    """A one-process probe under torchrun (``reference``, ``tests.gpu_path``'s probes): parses
    ``--out``, starts the gloo world with TP=PP=1 groups and Megatron's RNG seeded with ``seed``,
    yields the ``--out`` path and tears the world down when the probe returns."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.distributed.init_process_group("gloo")
    ps.initialize_model_parallel(1, 1)
    model_parallel_cuda_manual_seed(seed)
    yield args.out
    torch.distributed.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layouts", required=True, help="JSON list of {name, tp, pp, ...}")
    parser.add_argument("--jreg", default='{"reg": "jreg", "lam": 1.0, "schedule": "linear"}')
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.distributed.init_process_group("gloo")
    torch.manual_seed(SEED)
    rank = torch.distributed.get_rank()
    jcfg = JregConfig(num_layers=MODEL.num_layers, **json.loads(args.jreg))
    results = {}
    for layout in json.loads(args.layouts):
        results[layout["name"]] = run_layout(layout, jcfg)
    torch.save(results, os.path.join(args.out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
