"""What a preflight pass means on this hardware: thresholds, GPU health and the time budget.

Pure functions of the measured numbers (the GPU stages measure, these decide), so every verdict
is tested on CPU. The principle: a node on which the real job would fail or run slowly must
FAIL here, so "the number is positive" never passes:

- bf16 matmul: every rank (a throttled or sick GPU slows all eight, the collectives wait for
  it) against the median (>= 0.9x) and against the GPU's dense bf16 peak from its datasheet
  (>= 0.6x: an 8192^3 GEMM reaches 70-80% on a healthy Hopper);
- NCCL all-reduce bus bandwidth of 256 MiB over the node's GPUs against what NVLink gives (8 x
  H100/H200 NVLink 4: ~350-450 GB/s), so a PCIe or socket fallback (tens of GB/s) fails;
- GPU health from ``nvidia-smi``: uncorrectable ECC errors, pending or failed row remapping;
- each stage's wall time against its budget, and the total printed.
"""

from __future__ import annotations

import csv
import io
import statistics

from preflight.table import Check

# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, SXM parts (NVIDIA datasheets).
BF16_DENSE_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
MIN_PEAK_FRACTION = 0.6
MIN_RANK_FRACTION = 0.9
# 256 MiB all-reduce bus bandwidth over NVLink, GB/s, by GPU; other GPUs: any working link.
MIN_BUSBW_GBS = {"H200": 250.0, "H100": 250.0, "A100": 150.0}
DEFAULT_MIN_BUSBW_GBS = 50.0
MIN_IB_BUSBW_GBS = 40.0  # across nodes (internode_check)
# Seconds per stage on one 8 x H200 node: targets (not measured yet) adding up to the 10-minute
# goal. A stage over twice its target FAILS (a node that slow makes the real job slow too); any
# overrun is listed.
BUDGET_S = {"node checks": 60, "kernel compiled vs eager": 60, "checkpoint resume": 90,
            "throughput": 150, "sizes": 150, "layouts": 90}  # fmt: skip
TOTAL_BUDGET_S = 600
FAIL_FACTOR = 2.0

# nvidia-smi queries (CSV, no header, no units)
HEALTH_QUERY = ["nvidia-smi", "--query-gpu=index,name,ecc.errors.uncorrected.volatile.total",
                "--format=csv,noheader,nounits"]  # fmt: skip
REMAP_QUERY = ["nvidia-smi", "--query-remapped-rows=gpu_bus_id,remapped_rows.uncorrectable,"
               "remapped_rows.pending,remapped_rows.failure", "--format=csv,noheader,nounits"]  # fmt: skip


def gpu_model(device_name: str) -> str | None:
    """The datasheet key of a torch device name ('NVIDIA H200' -> 'H200'); None if unknown."""
    for key in BF16_DENSE_PEAK_TFLOPS:
        if key in device_name.upper():
            return key
    return None


def matmul_check(per_rank: list[float], device_name: str) -> Check:
    """bf16 GEMM TFLOP/s of every rank: slowest >= 0.9 x median and median >= 0.6 x peak."""
    median = statistics.median(per_rank)
    slowest = min(range(len(per_rank)), key=per_rank.__getitem__)
    even = per_rank[slowest] >= MIN_RANK_FRACTION * median
    model = gpu_model(device_name)
    value = (f"median {median:.0f} TFLOP/s over {len(per_rank)} GPU(s), slowest GPU "
             f"{slowest} {per_rank[slowest]:.0f} (>= {MIN_RANK_FRACTION} x median)")  # fmt: skip
    if model is None:
        return Check(name="bf16 matmul, every GPU", ok=even and median > 0,
                     value=value + f"; no datasheet peak for {device_name!r}")  # fmt: skip
    peak = BF16_DENSE_PEAK_TFLOPS[model]
    fast = median >= MIN_PEAK_FRACTION * peak
    return Check(name="bf16 matmul, every GPU", ok=even and fast,
                 value=value + f"; {median / peak:.0%} of the {model}'s dense bf16 peak "
                 f"{peak:.0f} (>= {MIN_PEAK_FRACTION:.0%})")  # fmt: skip


def busbw_check(busbw_gbs: float, exact: bool, *, device_name: str, world: int) -> Check:
    """The all-reduce result is exact and its bus bandwidth is what the GPUs' link gives."""
    if world < 2:
        return Check(name="nccl all-reduce", ok=exact,
                     value=f"1 GPU, no peers to measure, result {'exact' if exact else 'WRONG'}")  # fmt: skip
    model = gpu_model(device_name)
    floor = MIN_BUSBW_GBS.get(model or "", DEFAULT_MIN_BUSBW_GBS)
    link = f"NVLink on {model}" if model in MIN_BUSBW_GBS else "any link"
    return Check(name="nccl all-reduce", ok=exact and busbw_gbs >= floor,
                 value=f"{world} GPUs, 256 MiB bf16: bus bandwidth {busbw_gbs:.0f} GB/s (>= "
                 f"{floor:.0f}, {link}), result {'exact' if exact else 'WRONG'}")  # fmt: skip


def internode_check(busbw_gbs: float, exact: bool, *, nodes: int, world: int) -> Check:
    """The all-reduce over several nodes: exact, and a bus bandwidth only InfiniBand gives (an
    ABCI 3.0 node has 8 InfiniBand NDR 200 Gb/s ports; NCCL falling back to TCP sockets gives a
    few GB/s, one port alone 25 GB/s)."""
    return Check(name=f"nccl all-reduce over {nodes} nodes", ok=exact and busbw_gbs >= MIN_IB_BUSBW_GBS,
                 value=f"{world} GPUs, 256 MiB bf16: bus bandwidth {busbw_gbs:.0f} GB/s (>= "
                 f"{MIN_IB_BUSBW_GBS:.0f}, InfiniBand), result {'exact' if exact else 'WRONG'}")  # fmt: skip


def _rows(text: str) -> list[list[str]]:
    return [[x.strip() for x in row] for row in csv.reader(io.StringIO(text)) if row]


def health_check(gpu_text: str, remap_text: str) -> Check:
    """No uncorrectable ECC error, no pending or failed row remapping, on any GPU."""
    gpus = _rows(gpu_text)
    if not gpus:
        return Check(name="gpu health (ecc, row remap)", ok=False,
                     value="nvidia-smi gave no GPU list")  # fmt: skip
    bad = [f"GPU {g[0]}: {g[2]} uncorrectable ECC errors" for g in gpus
           if g[2] not in ("0", "[N/A]", "N/A")]  # fmt: skip
    for bus, _, pending, failure in (r[:4] for r in _rows(remap_text) if len(r) >= 4):
        if pending.lower() in ("1", "yes") or failure.lower() in ("1", "yes"):
            bad.append(f"{bus}: row remapping pending={pending} failure={failure}")
    return Check(name="gpu health (ecc, row remap)", ok=not bad,
                 value="; ".join(bad) if bad else f"{len(gpus)} GPU(s): no uncorrectable ECC "
                 "error, no pending or failed row remap")  # fmt: skip


def budget_checks(stage_seconds: dict[str, float]) -> list[Check]:
    """The total against TOTAL_BUDGET_S and each stage against its target: FAIL when a stage
    took more than FAIL_FACTOR times it."""
    over = [f"{name} {s:.0f} s > {BUDGET_S[name]} s" for name, s in stage_seconds.items()
            if s > BUDGET_S.get(name, TOTAL_BUDGET_S)]  # fmt: skip
    slow = [name for name, s in stage_seconds.items()
            if s > FAIL_FACTOR * BUDGET_S.get(name, TOTAL_BUDGET_S)]  # fmt: skip
    total = sum(stage_seconds.values())
    parts = ", ".join(f"{name} {s:.0f} s" for name, s in stage_seconds.items())
    return [Check(name="time budget", ok=not slow,
                  value=f"total {total:.0f} s (target {TOTAL_BUDGET_S}): {parts}"
                  + (f"; over target: {'; '.join(over)}" if over else "")
                  + (f"; over {FAIL_FACTOR:g}x: {', '.join(slow)}" if slow else ""))]  # fmt: skip
