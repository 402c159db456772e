"""The measurements behind ``make bench`` (``bench/__main__.py`` parses arguments and writes the report).

Kept apart so that ``python -m bench`` can reject bad arguments before torch and Megatron are imported.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from bench.timing import REGS, interleaved
from common.ports import free_port
from megatron_ext.jreg import displacement, relative_l2

MIB = 2**20


def _sync_for(device: str):
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def machine(device: str, node: str) -> dict:
    info = {"node": node, "cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}  # fmt: skip
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        import triton

        info["triton"] = triton.__version__
    return info


# ---------------------------------------------------------------------------------------------
# matmul peak and copy bandwidth


def matmul_peak(repeats: int, warmup: int, n: int = 8192) -> dict:
    """bf16 [n, n] @ [n, n] on the GPU: the peak that MFU is measured against."""
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    t = interleaved({"mm": lambda: a @ b}, repeats, warmup, torch.cuda.synchronize)["mm"]
    return {"n": n, "seconds": t, "tflops": 2 * n**3 / t["median"] / 1e12}


def copy_bandwidth(device: str, repeats: int, warmup: int, nbytes: int) -> float:
    """Device-to-device copy: bytes read + written per second (the memory-bandwidth yardstick)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    t = interleaved({"copy": lambda: dst.copy_(src)}, repeats, warmup, _sync_for(device))["copy"]
    return 2 * nbytes / t["median"]


# ---------------------------------------------------------------------------------------------
# the displacement alone


def kernels(device: str, repeats: int, warmup: int, smoke: bool) -> dict:
    """Forward + backward of displacement and relative_l2, eager vs fused (GPU): bf16 at the 1b
    and 8b activation shapes (GPU) or smaller ones (CPU), and on CPU also the tiny recipe's
    training microbatch in fp32 (the cost that `train` adds per layer and microbatch)."""
    bf16, fp32 = torch.bfloat16, torch.float32
    if device == "cuda":
        shapes, impls = [((4096, 2, 2048), bf16), ((8192, 1, 4096), bf16)], ("eager", "triton")
    else:
        shapes = [((256, 2, 128), bf16)] if smoke else [
            ((128, 4, 128), fp32), ((1024, 2, 512), bf16), ((2048, 1, 1024), bf16)]  # fmt: skip
        impls = ("eager",)  # the interpreter times Python, not a kernel
    bw = copy_bandwidth(device, repeats, warmup, (64 if smoke else 512) * MIB)
    rows = []
    for shape, dtype in shapes:
        for fn in (displacement, relative_l2):
            rows += _kernel_rows(fn, shape, dtype, device, impls, repeats, warmup, bw)
    return {"copy_bandwidth_gbs": bw / 1e9, "rows": rows}


def _scaled(t: dict, k: float) -> dict:
    return {key: [x * k for x in v] if key == "repeats" else v * k for key, v in t.items()}


def _kernel_rows(fn, shape, dtype, device, impls, repeats, warmup, bw) -> list[dict]:
    a, b = (torch.randn(shape, device=device, dtype=dtype) for _ in range(2))
    a.requires_grad_()
    b.requires_grad_()
    g = torch.randn(shape[:-1], device=device)
    tokens, elems = g.numel(), a.numel()
    # inputs read in forward and again in backward, both gradients written;
    # per-token fp32: psi written, grad read, 3 saved scalars written and read
    must_move = 6 * elems * a.element_size() + tokens * 4 * 8

    inner = 20 if device == "cuda" else 1  # calls per timed repeat: launch and sync amortised

    def step(impl):
        for _ in range(inner):
            torch.autograd.grad(fn(a, b, impl=impl), (a, b), g)

    fns = {i: (lambda i=i: step(i)) for i in impls}
    times = interleaved(fns, repeats, warmup, _sync_for(device))
    times = {i: _scaled(t, 1 / inner) for i, t in times.items()}
    return [
        {"fn": fn.__name__, "shape": list(shape),
         "dtype": str(dtype).removeprefix("torch."), "impl": impl, "seconds": t,
         "bytes_must_move": must_move, "achieved_gbs": must_move / t["median"] / 1e9,
         "floor_seconds": must_move / bw, "fraction_of_floor": must_move / bw / t["median"]}
        for impl, t in times.items()
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# training steps


@dataclass(kw_only=True)
class Shape:
    name: str
    size: str
    """Model recipe (recipes/models.py)."""
    num_layers: int | None = None
    """Override of the recipe's depth (the study's ``--num-layers``)."""
    micro_batch: int
    microbatches: int
    vocab: int
    dtype: torch.dtype = torch.float32
    te: bool = False
    fp8: bool = False


def _shapes(device: str, smoke: bool) -> list[Shape]:
    if device == "cpu":
        tiny = Shape(name="tiny", size="tiny", micro_batch=4, microbatches=2, vocab=8192)
        if smoke:
            return [Shape(name="tiny-2L", size="tiny", num_layers=2, micro_batch=2,
                          microbatches=1, vocab=1024)]  # fmt: skip
        return [tiny, Shape(name="tiny-12L", size="tiny", num_layers=12, micro_batch=4,
                            microbatches=2, vocab=8192)]  # fmt: skip
    from megatron_ext.config import te_available

    # Without TE attention is unfused: micro batch 2 x seq 4096 x 16 layers ran out of an H200's
    # 140 GiB (2026-12-04, docs/benchmarks.md), as SIZE=1b does in training (launcher.gpu fits 1).
    bf16 = Shape(name="1b-bf16", size="1b", micro_batch=2 if te_available() else 1,
                 microbatches=1, vocab=128256, dtype=torch.bfloat16, te=te_available())  # fmt: skip
    if not te_available():
        return [bf16]
    return [bf16, Shape(name="1b-fp8", size="1b", micro_batch=2, microbatches=1, vocab=128256,
                        dtype=torch.bfloat16, te=True, fp8=True)]  # fmt: skip


def _init_distributed(device: str) -> None:
    if torch.distributed.is_initialized():
        return
    from megatron_ext import cpu_compat

    cpu_compat.enable()
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    if device == "cuda":
        torch.cuda.set_device(0)
    torch.distributed.init_process_group("nccl" if device == "cuda" else "gloo", rank=0,
                                         world_size=1)  # fmt: skip
    ps.initialize_model_parallel(1, 1)
    model_parallel_cuda_manual_seed(1234)


def model_flops_per_token(cfg, vocab: int) -> float:
    """Matmul FLOPs per token, forward + backward (6 per weight); causal attention s*h/2 per
    token and layer for each of QK^T and AV (fwd 2 FLOPs per multiply-add)."""
    h, kv = cfg.hidden_size, cfg.kv_channels * cfg.num_query_groups
    per_layer = h * (h + 2 * kv) + h * h + 3 * h * cfg.ffn_hidden_size
    attn = 2 * 2 * cfg.seq_length * h / 2
    return 6 * (cfg.num_layers * per_layer + h * vocab) + 3 * cfg.num_layers * attn


def _saved_bytes(forward, params) -> int:
    """Bytes of the unique non-parameter storages that ``forward`` saves for backward. The graph
    stays alive until all are counted, so no freed address is reused and counted twice; then a
    backward frees it. Without one the graph outlives ``del``: a pack hook that returns the
    tensor itself stores a node's saved output inside that node, a cycle through autograd's C++
    side that Python's gc cannot see (measured: a tiny model keeps 11 MiB per forward under the
    hook, 0 without it). On an H200 the 1b shape's graphs piled up, one per variant, until
    memory ran out (2026-12-04)."""
    skip = {p.untyped_storage().data_ptr() for p in params}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in skip:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = forward()
    loss.backward()
    del loss
    return sum(seen.values())


def _train_one(shape: Shape, device: str, repeats: int, warmup: int, peak) -> dict:
    from megatron_ext.model import build_gpt_model, transformer_config
    from megatron_ext.reg import JregRuntime
    from megatron_ext.regconfig import JregConfig
    from megatron_ext.selfdistill_train import SelfDistillRuntime
    from megatron_ext.tracker import JumpTracker
    from recipes import model_recipe

    cfg = model_recipe(shape.size)
    if shape.num_layers:
        cfg = cfg.replace(num_layers=shape.num_layers)
    jcfgs = {r: JregConfig(reg=r, lam=0.1, num_layers=cfg.num_layers) for r in REGS}
    runtime = JregRuntime(jcfgs["none"], JumpTracker.from_config(jcfgs["jreg"], device=device))
    extra = {"fp8": "hybrid", "fp8_recipe": "tensorwise"} if shape.fp8 else {}
    config = transformer_config(cfg, params_dtype=shape.dtype,
                                use_cpu_initialization=device == "cpu", **extra)  # fmt: skip
    model = build_gpt_model(cfg, config, runtime, shape.vocab, use_te=shape.te).to(device)
    runtime.cfg = jcfgs["selfdistill"]  # REG=selfdistill: the paper's settings, attached below
    selfdistill = SelfDistillRuntime(runtime)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    s, mb = cfg.seq_length, shape.micro_batch
    batches = []
    for _ in range(shape.microbatches):
        tok = torch.randint(0, shape.vocab, (mb, s + 1), generator=gen).to(device)
        batches.append((tok[:, :-1].contiguous(), tok[:, 1:].contiguous()))
    pos = torch.arange(s, device=device).expand(mb, -1).contiguous()

    def forward(tokens, labels):
        out = model(tokens, pos, None, labels=labels)
        if runtime.collector is not None:
            out = selfdistill.attach(out, model, training=True)
        return out.float().mean() / len(batches)

    def use(reg: str):
        runtime.cfg = jcfgs[reg]
        runtime.collector = selfdistill if reg == "selfdistill" else None

    def fwd_bwd():
        for tokens, labels in batches:
            forward(tokens, labels).backward()

    def step(reg: str):
        use(reg)
        opt.zero_grad(set_to_none=True)
        fwd_bwd()
        opt.step()

    fns = {r: (lambda r=r: step(r)) for r in REGS}
    times = interleaved(fns, repeats, warmup, _sync_for(device))
    tokens = shape.microbatches * mb * s
    flops = model_flops_per_token(cfg, shape.vocab) * tokens
    rows = {}
    for reg in REGS:
        if device == "cuda":  # one more (untimed) step for the peak
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            step(reg)
            torch.cuda.synchronize()
            peak_mib = torch.cuda.max_memory_allocated() / MIB
        opt.zero_grad(set_to_none=True)
        use(reg)
        saved = _saved_bytes(lambda: forward(*batches[0]), list(model.parameters()))
        t = times[reg]["median"]
        row = {"seconds": times[reg], "tokens_per_s": tokens / t,
               "saved_activations_mib_per_microbatch": saved / MIB,
               "ratio_to_none": t / times["none"]["median"],
               "ratio_to_none_of_min": times[reg]["min"] / times["none"]["min"]}  # fmt: skip
        if device == "cuda":
            row["peak_allocated_mib"] = peak_mib
            row["model_tflops"] = flops / t / 1e12
            if peak:
                row["mfu"] = row["model_tflops"] / peak["tflops"]
        rows[reg] = row
    return {"shape": shape.name, "num_layers": cfg.num_layers, "hidden": cfg.hidden_size,
            "seq": s, "micro_batch": mb, "microbatches": shape.microbatches,
            "tokens_per_step": tokens, "dtype": str(shape.dtype).removeprefix("torch."),
            "te": shape.te, "fp8": shape.fp8, "model_flops_per_step": flops,
            "regs": rows}  # fmt: skip


def training(device: str, repeats: int, warmup: int, smoke: bool, peak) -> list[dict]:
    _init_distributed(device)
    out = []
    for shape in _shapes(device, smoke):
        try:
            out.append(_train_one(shape, device, repeats, warmup, peak))
        except Exception as exc:  # one shape failing (e.g. FP8 untested) keeps the others
            if smoke:
                raise
            out.append({"shape": shape.name, "error": f"{type(exc).__name__}: {exc}"})
        if device == "cuda":
            torch.cuda.empty_cache()
    return out


# ---------------------------------------------------------------------------------------------
# the table


def _ms(t: dict) -> str:
    return f"{t['median'] * 1e3:.2f} ({t['min'] * 1e3:.2f}-{t['max'] * 1e3:.2f})"


def table(report: dict) -> str:
    lines = [f"# make bench: {report['device']}, {report['date']}, {report['statistic']}, "
             f"{report['repeats']} repeats"]  # fmt: skip
    if "matmul" in report:
        m = report["matmul"]
        lines.append(f"bf16 matmul peak ({m['n']}^3): {m['tflops']:.1f} TFLOP/s")
    for entry in report.get("train", []):
        if "error" in entry:
            lines.append(f"\n## train {entry['shape']}: failed: {entry['error']}")
            continue
        e = entry
        lines.append(f"\n## train {e['shape']}: {e['num_layers']} layers, h={e['hidden']}, "
                     f"{e['tokens_per_step']} tokens/step, {e['dtype']}"
                     f"{', FP8' if e['fp8'] else ''}{', TE' if e['te'] else ''}")  # fmt: skip
        gpu = "model_tflops" in entry["regs"]["none"]
        head = (
            "| REG | step ms median (min-max) | tokens/s | /none median (min) "
            "| saved act. MiB/microbatch |"
        )
        lines += [head + (" peak MiB | TFLOP/s | MFU |" if gpu else ""),
                  "|---" * (head.count("|") - 1 + (3 if gpu else 0)) + "|"]  # fmt: skip
        for reg, r in entry["regs"].items():
            line = (f"| {reg} | {_ms(r['seconds'])} | {r['tokens_per_s']:,.0f} | "
                    f"{r['ratio_to_none']:.3f} ({r['ratio_to_none_of_min']:.3f}) | "
                    f"{r['saved_activations_mib_per_microbatch']:.1f} |")  # fmt: skip
            if gpu:
                line += (f" {r['peak_allocated_mib']:.0f} | {r['model_tflops']:.1f} | "
                         f"{r.get('mfu', float('nan')):.3f} |")  # fmt: skip
            lines.append(line)
    if "kernel" in report:
        k = report["kernel"]
        lines += [f"\n## displacement alone, fwd+bwd (copy bandwidth "
                  f"{k['copy_bandwidth_gbs']:.1f} GB/s)",
                  "| fn | shape | dtype | impl | ms median (min-max) | GB/s | floor ms | of floor"
                  " |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in k["rows"]:
            shape = "x".join(map(str, r["shape"]))
            lines.append(f"| {r['fn']} | {shape} | {r['dtype']} | {r['impl']} | "
                         f"{_ms(r['seconds'])} | {r['achieved_gbs']:.1f} | "
                         f"{r['floor_seconds'] * 1e3:.3f} | "
                         f"{r['fraction_of_floor']:.2f} |")  # fmt: skip
    lines.append(f"\nload average before/after: {report['load_avg_before_after']}")
    return "\n".join(lines)
