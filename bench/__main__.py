"""``make bench``: what the regulariser costs, measured in one process.

``python -m bench [--device auto|cpu|cuda] [--out FILE] [--repeats N] [--smoke]``.

Three parts, each interleaved (A B C A B C ...) so every variant sees the same background load,
and reported as the median of the repeats (min and max kept for the spread):

- ``train``: one optimizer step (forward + backward of every microbatch, AdamW) of a Megatron GPT
  model with the JREG layer, switching the same model between REG=none, jreg, l2rel and
  selfdistill (the paper's settings, ``megatron_ext.selfdistill_train``) from step to step (same
  weights, same batch). In-process rather than ``make pretrain`` runs: no start-up,
  dataset, evaluation or checkpoint time in the figure, and A/B interleaving per step. REG=none
  still records D_l (the tracker is on, as in training). Also: activations saved for backward
  (bytes of unique non-parameter storages, all devices) and, on GPU, peak allocated memory; on
  GPU the model TFLOP/s and MFU against the bf16 matmul peak measured in the same run.
- ``kernel``: displacement and relative L2 alone, forward + backward, eager vs fused Triton (GPU
  only: Triton's CPU interpreter times Python, not a kernel), with the bytes that must move and
  the time they take at the measured device-to-device copy bandwidth (the floor).
- ``matmul`` (GPU): the bf16 matmul peak, for MFU.

Shapes: CPU ``tiny`` (4 layers, h=128) and ``tiny-12L`` (the study depth,
``ARGS="--num-layers 12"``);
GPU ``1b`` in bf16 (local spec when Transformer Engine is absent) and in FP8 with TE when present.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--out", default="runs/bench/bench.json", help="JSON with every repeat")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (CPU 7, GPU 10)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--parts", default="train,kernel,matmul", help="comma list of parts")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 2 repeats (the test)")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts or parts - {"train", "kernel", "matmul"}:
        p.error(f"--parts takes train, kernel, matmul; got {args.parts!r}")
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    args.parts = parts
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is visible; use --device cpu", file=sys.stderr)
        return 2
    from bench import parts as bench_parts

    repeats = args.repeats or (2 if args.smoke else 7 if device == "cpu" else 10)
    warmup = min(args.warmup, 1) if args.smoke else args.warmup
    load_before = os.getloadavg()
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *(argv or sys.argv[1:])]),
        "machine": bench_parts.machine(device, platform.node()),
        "device": device,
        "repeats": repeats,
        "warmup": warmup,
        "statistic": "median of repeats (min, max kept), interleaved rounds",
    }
    peak = None
    if "matmul" in args.parts and device == "cuda":
        report["matmul"] = peak = bench_parts.matmul_peak(repeats, warmup)
    if "kernel" in args.parts:
        report["kernel"] = bench_parts.kernels(device, repeats, warmup, args.smoke)
    if "train" in args.parts:
        report["train"] = bench_parts.training(device, repeats, warmup, args.smoke, peak)
    report["load_avg_before_after"] = [load_before[0], os.getloadavg()[0]]
    print(bench_parts.table(report))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
