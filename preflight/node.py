"""Per-GPU checks, one process per local GPU (``torchrun -m preflight.node``).

Rank 0 writes every check to ``--out`` as JSON. Checks: each rank sees its own GPU; the driver
runs the wheels' CUDA; NCCL all-reduce across all local GPUs (bus bandwidth against NVLink's);
Transformer Engine importable (version); FP8 available on this GPU; every rank's bf16 matmul
against the median and the datasheet peak (``preflight.limits``; the median is the MFU reference
of the throughput runs); norm gains 1 after init and the TE-spec model == the local-spec model.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist

from preflight.limits import busbw_check, internode_check, matmul_check
from preflight.table import Check, dump

MATMUL_N = 8192
ALLREDUCE_BYTES = 256 * 2**20


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` (after one warm-up), CUDA-synchronised."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def device_checks(rank: int, world: int, local_rank: int) -> list[Check]:
    mine = torch.tensor([torch.cuda.current_device()], device="cuda")
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    devices = [int(t) for t in every]
    own = devices == list(range(world)) and local_rank == torch.cuda.current_device()
    name = torch.cuda.get_device_name()
    cap = torch.cuda.get_device_capability()
    driver = torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else None
    runtime = torch.version.cuda
    return [
        Check(name="each rank its own GPU", ok=own, value=f"{world} x {name}, ranks -> {devices}"),
        Check(name="driver runs the wheels' CUDA", ok=True,
              value=f"CUDA {runtime} kernels ran (sm{cap[0]}{cap[1]}"
              + (f", driver {driver})" if driver else ")")),
    ]  # fmt: skip


def allreduce(world: int) -> tuple[float, bool]:
    """(bus bandwidth GB/s of a 256 MiB bf16 all-reduce over all ranks, result exact)."""
    numel = ALLREDUCE_BYTES // 2
    buf = torch.ones(numel, dtype=torch.bfloat16, device="cuda")
    seconds = timed(lambda: dist.all_reduce(buf), repeats=10)
    busbw = ALLREDUCE_BYTES / seconds * 2 * (world - 1) / world / 1e9 if world > 1 else 0.0
    buf.fill_(1.0)
    dist.all_reduce(buf)
    return busbw, bool((buf == world).all())


def nccl_check(world: int) -> Check:
    return busbw_check(*allreduce(world), device_name=torch.cuda.get_device_name(), world=world)


def te_checks() -> tuple[bool, list[Check]]:
    """(TE usable, checks). From Hopper on a TE that does not import FAILS: the launcher refuses
    such a node (launcher.gpu.te_choice) unless TE=0; before Hopper it is reported only."""
    from megatron_ext.config import te_import_error

    problem = te_import_error()
    if problem is not None:
        hopper = torch.cuda.get_device_capability()[0] >= 9
        return False, [Check(name="transformer engine", ok=not hopper,
                             value=f"{problem}: " + ("make pretrain refuses this node unless TE=0 "
                             "(make setup GPU=1 installs it)" if hopper else "local spec, bf16, no "
                             "FP8/CP"))]  # fmt: skip
    import transformer_engine
    import transformer_engine.pytorch as te

    checks = [
        Check(name="transformer engine", ok=True, value=f"version {transformer_engine.__version__}")
    ]
    available, reason = fp8_support(te)
    checks.append(Check(name="fp8 available", ok=bool(available), value=reason or "yes"))
    return True, checks


def fp8_support(te) -> tuple[bool, str]:
    """TE's own FP8 check (its name moved between TE 2.x releases)."""
    if hasattr(te, "is_fp8_available"):
        return te.is_fp8_available(return_reason=True)
    from transformer_engine.pytorch import fp8

    return fp8.check_fp8_support()


def matmul_peak(world: int) -> tuple[float, Check]:
    """(median bf16 TFLOP/s over the ranks: the MFU reference, the every-rank check)."""
    a = torch.randn(MATMUL_N, MATMUL_N, dtype=torch.bfloat16, device="cuda")
    b = torch.randn_like(a)
    seconds = timed(lambda: a @ b, repeats=20)
    mine = torch.tensor([2 * MATMUL_N**3 / seconds / 1e12], device="cuda")
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    per_rank = [float(t) for t in every]
    check = matmul_check(per_rank, torch.cuda.get_device_name())
    return sorted(per_rank)[len(per_rank) // 2], check


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--allreduce-nodes", type=int, default=0,
                        help="only the all-reduce, across this many nodes (NODES=2 mode)")  # fmt: skip
    args = parser.parse_args()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.allreduce_nodes:
        check = internode_check(*allreduce(world), nodes=args.allreduce_nodes, world=world)
        if rank == 0:
            dump([check], args.out)
        dist.destroy_process_group()
        return
    checks = device_checks(rank, world, local_rank)
    checks.append(nccl_check(world))
    has_te, te_list = te_checks()
    checks += te_list
    peak, peak_check = matmul_peak(world)
    checks.append(peak_check)

    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    from megatron_ext import megatron_compat
    from preflight.spec_check import SEED, spec_checks

    megatron_compat.enable()
    ps.initialize_model_parallel(1, 1)
    model_parallel_cuda_manual_seed(SEED)
    checks += spec_checks(torch.bfloat16, "cuda", te=has_te)
    if rank == 0:
        dump(checks, args.out)
        with open(args.out + ".peak", "w") as f:
            f.write(f"{peak}\n")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
