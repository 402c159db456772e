"""Preflight runs through the real launcher (the path a job takes): throughput and 1 -> N GPUs.

Each run is ``python -m launcher ... LOG_INTERVAL=1`` into its own run directory; the
numbers come from its ``metrics.jsonl`` (LM loss, D_l, step time) and Megatron's memory report.
"""

from __future__ import annotations

import functools
import json
import os
import re
import statistics
import subprocess
import sys
import sysconfig
from pathlib import Path

from preflight.table import Check

REPO = Path(__file__).resolve().parents[1]  # the checkout (preflight/ is top-level)
LAUNCH = [sys.executable, "-m", "launcher"]
RUN_TIMEOUT_S = 300
# the 1b shape with fewer layers: the per-layer cost of the real model, a short start-up
THROUGHPUT_LAYERS = 4
THROUGHPUT_ITERS = 8
# bf16 over different layouts: reductions in another order, ~1e-3 relative on the loss
LAYOUT_TOLERANCE = {"loss": 2e-2, "D": 5e-2}
_MAX_ALLOCATED = re.compile(r"max allocated: ([0-9.]+)")
# TE logs the attention it runs with NVTE_DEBUG=1 NVTE_DEBUG_LEVEL=2 ("Running with
# FusedAttention backend (sub-backend 1)"); the launcher pins cuDNN fused attention.
DEBUG_ENV = {"NVTE_DEBUG": "1", "NVTE_DEBUG_LEVEL": "2"}


def build_data(root: Path) -> tuple[Path | None, str]:
    """A small offline dataset from the Python standard library's sources (always present)."""
    corpus = root / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py"))[:120]:
        (corpus / f"{path.stem}.txt").write_text(path.read_text(encoding="utf-8", errors="replace"))
    cmd = [sys.executable, "-m", "data_prep", "build", "--corpus", str(corpus / "*.txt"),
           "--name", "data", "--out-root", str(root), "--vocab-size", "1024",
           "--split", "0.9,0.05,0.05", "--workers", "2", "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    if proc.returncode:
        return None, _last_line(proc.stderr or proc.stdout)
    return root / "data", "ok"


def _last_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:200] if lines else "no output"


def run_log(run_dir: Path) -> str:
    """The run's full output (every rank; the console shows only the launcher's view of it):
    Megatron's memory report and TE's attention-backend lines are there."""
    return "".join(p.read_text(errors="replace") for p in sorted(run_dir.glob("logs/*.log")))


@functools.cache
def _without_te() -> list[str]:
    """TE=0 where TE does not import: the launcher would refuse every run on a Hopper node (the
    node checks report TE's failure once); the runs then measure the local spec."""
    from megatron_ext.config import te_import_error

    return [] if te_import_error() is None else ["TE=0"]


def launch(run_dir: Path, data: Path, settings: list[str]) -> tuple[list[dict] | None, str]:
    """Run the launcher; (train lines of metrics.jsonl, its output) or (None, the error)."""
    cmd = [*LAUNCH, f"RUN={run_dir}", f"DATA={data}", "LOG_INTERVAL=1", *_without_te(), *settings]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, **DEBUG_ENV}, timeout=RUN_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, f"timed out after {RUN_TIMEOUT_S} s"
    out = proc.stdout + proc.stderr
    (run_dir / "preflight.log").parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "preflight.log").write_text(out)
    if proc.returncode:
        return None, f"exit {proc.returncode}: {_last_line(out)}"
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    return [x for x in lines if "split" not in x], out


def flops_per_token(layers: int, hidden: int, ffn: int, heads: int, groups: int, seq: int,
                    vocab: int) -> float:  # fmt: skip
    """Training FLOPs per token (forward + backward = 3 x forward, no recompute): the GEMMs of
    attention (QKV with GQA, output), SwiGLU MLP and logits, plus QK^T and AV."""
    kv = hidden // heads * groups
    gemm_params = hidden * (hidden + 2 * kv) + hidden * hidden + 3 * hidden * ffn
    forward = 2 * layers * gemm_params + 2 * layers * 2 * seq * hidden + 2 * hidden * vocab
    return 3.0 * forward


def throughput(root: Path, data: Path, ngpu: int, peak_tflops: float, fp8: bool) -> list[Check]:
    """REG=none then REG=jreg on the 1b shape (fewer layers), bf16 or FP8, all local GPUs."""
    from recipes import model_recipe, train_recipe

    model, train = model_recipe("1b"), train_recipe("1b")
    mbs = train.micro_batch_size
    gbs = mbs * ngpu * 2
    precision = "fp8" if fp8 else "bf16"
    args = f"--num-layers {THROUGHPUT_LAYERS} --global-batch-size {gbs} --eval-iters 1"
    results, checks = {}, []
    for reg in ("none", "jreg"):
        lines, out = launch(root / f"tput-{precision}-{reg}", data, [
            "SIZE=1b", f"REG={reg}", f"ITERS={THROUGHPUT_ITERS}", "SAVE_INTERVAL=100000",
            f"NPROC={ngpu}", f"FP8={'hybrid' if fp8 else 'off'}", f"ARGS={args}",
        ])  # fmt: skip
        name = f"1b/{THROUGHPUT_LAYERS}L {precision} REG={reg}"
        if lines is None:
            checks.append(Check(name=name, ok=False, value=out))
            continue
        steps = [x["step_time_s"] for x in lines[2:] if x.get("step_time_s")]
        finite = all(_finite(x["lm_loss"]) and all(map(_finite, x["D"])) for x in lines)
        step = statistics.median(steps) if steps else float("nan")
        tokens_gpu = gbs * model.seq_length / step / ngpu
        # the dataset's vocab is 1024: logits are a small share of the FLOPs here
        tflops = flops_per_token(THROUGHPUT_LAYERS, model.hidden_size, model.ffn_hidden_size,
                                 model.num_attention_heads, model.num_query_groups,
                                 model.seq_length, 1024) * tokens_gpu / 1e12  # fmt: skip
        mem = [float(m) for m in _MAX_ALLOCATED.findall(run_log(root / f"tput-{precision}-{reg}"))]
        results[reg] = step
        checks.append(Check(
            name=name, ok=finite and bool(steps),
            value=f"loss/D finite={finite}, {tokens_gpu:,.0f} tok/s/GPU, {tflops:.0f} TFLOP/s, "
            f"MFU {tflops / peak_tflops:.0%} of measured bf16 peak, step {step:.3f} s, "
            f"peak mem {max(mem) / 1024 if mem else float('nan'):.1f} GiB",
        ))  # fmt: skip
    if len(results) == 2:
        ratio = results["jreg"] / results["none"]
        checks.append(Check(name=f"JREG/none step time ({precision})", ok=ratio < 1.5,
                            value=f"{ratio:.3f} (< 1.5)"))  # fmt: skip
    return checks


def _finite(x) -> bool:
    return isinstance(x, int | float) and x == x and abs(x) != float("inf")


def layouts(root: Path, data: Path, ngpu: int, te: bool) -> list[Check]:
    """Iteration-1 loss and D_l of TP=2 (+SP), PP=2 and (TE) CP=2 equal the 1-GPU run."""
    from preflight.spec_check import compare

    # ITERS=2: Megatron asserts warmup < decay steps; the comparison uses iteration 1
    base = ["SIZE=tiny", "REG=jreg", "ITERS=2", "SAVE_INTERVAL=100000", "FP8=off"]
    ref, out = launch(root / "layout-1gpu", data, [*base, "NPROC=1"])
    if ref is None:
        return [Check(name="1-GPU reference run", ok=False, value=out)]
    checks = []
    variants = {"TP=2 SP": ["TP=2"], "PP=2": ["PP=2"]}
    if te:
        variants["CP=2"] = ["CP=2"]
    for label, extra in variants.items():
        got, out = launch(root / f"layout-{label.split()[0]}", data, [*base, "NPROC=2", *extra])
        if got is None:
            checks.append(Check(name=f"1 -> 2 GPUs {label}", ok=False, value=out))
            continue
        checks.append(compare(f"1 -> 2 GPUs {label}", ref[0], got[0], LAYOUT_TOLERANCE))
    return checks


_BACKEND = re.compile(r"Running with (\w+) backend(?: \(([^)]*)\))?")


def attention_backend(log: str, te: bool) -> Check:
    """Which attention ran in a training run: the launcher's choice (FusedAttention) or not."""
    if not te:
        return Check(name="attention backend", ok=True, value="local spec (no TE): torch attention")
    seen = sorted({m[1] + (f" ({m[2]})" if m[2] else "") for m in _BACKEND.finditer(log)})
    ok = bool(seen) and all(x.startswith("FusedAttention") for x in seen)
    return Check(name="attention backend", ok=ok,
                 value=", ".join(seen) + " (want FusedAttention: --attention-backend fused)"
                 if seen else "TE logged no attention backend (NVTE_DEBUG=1 NVTE_DEBUG_LEVEL=2)")  # fmt: skip


def sizes(root: Path, data: Path, ngpu: int, fp8: bool, names=("1b", "3b", "8b")) -> list[Check]:
    """Each SIZE's real shape, layout, micro batch and a 128k vocabulary (the logits are most of
    1b's activation memory) for 3 iterations of one micro batch per GPU: its peak memory against
    the GPU's, next to the estimate of launcher.memory.gpu_activations."""
    import torch

    from launcher.memory import gpu_activations
    from recipes import SIZES

    total_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    checks = []
    for name in names:
        entry = SIZES[name]
        layout, model, train = entry.gpu_layout, entry.model(), entry.train()
        if ngpu % layout.model_parallel_size:
            continue
        dp = ngpu // layout.model_parallel_size
        args = (f"--vocab-size 128256 --global-batch-size {train.micro_batch_size * dp} "
                "--eval-iters 1")  # fmt: skip
        run_dir = root / f"size-{name}"
        lines, out = launch(run_dir, data, [
            f"SIZE={name}", "REG=jreg", "ITERS=3", "SAVE_INTERVAL=100000", f"NPROC={ngpu}",
            f"FP8={'hybrid' if fp8 else 'off'}", f"ARGS={args}",
        ])  # fmt: skip
        label = f"{name} real shape ({model.num_layers}L, seq {model.seq_length}, 128k vocab)"
        if lines is None:
            checks.append(Check(name=label, ok=False, value=out))
            continue
        mem = [float(m) / 1024 for m in _MAX_ALLOCATED.findall(run_log(run_dir))]
        peak = max(mem) if mem else float("nan")
        # the launcher lowers the micro batch without TE (launcher.gpu.local_attention_micro_batch)
        config = run_dir / "run_config.json"
        micro = (json.loads(config.read_text())["train"]["micro_batch_size"] if config.is_file()
                 else train.micro_batch_size)  # fmt: skip
        est = gpu_activations(model, micro_batch_size=micro, tp=layout.tp)
        finite = all(_finite(x["lm_loss"]) for x in lines)
        checks.append(Check(
            name=label, ok=finite and bool(mem) and peak < 0.95 * total_gib,
            value=f"peak {peak:.1f} of {total_gib:.0f} GiB (micro batch {micro}, "
            f"TP={layout.tp}; activation estimate {est.total / 2**30:.0f} GiB), loss finite={finite}",
        ))  # fmt: skip
    return checks


def continuation_check(full: list[dict], resumed: list[dict], first_after: int) -> Check:
    """The resumed run's first iteration after the checkpoint equals the uninterrupted run's
    bit for bit (weights, optimizer and data position restored); the next within 1e-3 (its
    backward may use nondeterministic kernels)."""
    a = {x["iteration"]: x for x in full}
    b = {x["iteration"]: x for x in resumed}
    it = first_after
    if it not in a or it not in b or it + 1 not in a or it + 1 not in b:
        return Check(name="checkpoint save -> resume", ok=False,
                     value=f"iterations {it} and {it + 1} missing from a run")  # fmt: skip
    exact = a[it]["lm_loss"] == b[it]["lm_loss"] and a[it]["D"] == b[it]["D"]
    x, y = a[it + 1]["lm_loss"], b[it + 1]["lm_loss"]
    drift = abs(x - y) / max(abs(x), abs(y), 1e-12)
    return Check(name="checkpoint save -> resume", ok=exact and drift <= 1e-3,
                 value=f"iteration {it}: loss {a[it]['lm_loss']:.6f} vs {b[it]['lm_loss']:.6f} "
                 f"({'bit-identical' if exact else 'DIFFERENT'}), iteration {it + 1} rel "
                 f"{drift:.1e} (<= 1e-3)")  # fmt: skip


def resume(root: Path, data: Path) -> list[Check]:
    """tiny for 4 iterations straight, and stopped at 2 (checkpoint) then resumed: the same."""
    base = ["SIZE=tiny", "REG=jreg", "ITERS=4", "SAVE_INTERVAL=2", "NPROC=1", "FP8=off"]
    full, out = launch(root / "resume-full", data, base)
    if full is None:
        return [Check(name="checkpoint save -> resume", ok=False, value=f"straight run: {out}")]
    split = root / "resume-split"
    first, out = launch(split, data, [*base, "ARGS=--exit-interval 2"])
    resumed, out2 = launch(split, data, base) if first is not None else (None, out)
    if resumed is None:
        return [Check(name="checkpoint save -> resume", ok=False, value=f"stop/resume: {out2}")]
    return [continuation_check(full, resumed, first_after=3)]


def pytest_check(name: str, code: int, output: str) -> Check:
    """A pytest run as a check: its summary line."""
    summary = next((x for x in reversed(output.splitlines()) if " passed" in x or " failed" in x
                    or " error" in x), _last_line(output))  # fmt: skip
    ran = " passed" in summary and "skipped" not in summary and "deselected" not in summary
    return Check(name=name, ok=code == 0 and ran, value=summary.strip("= ")[:200])


def compiled_kernel(root: Path) -> Check:
    """The fused JREG Triton kernels compiled for this GPU (not interpreted) against eager:
    values and gradients (tests/megatron_ext/jreg_triton_cases.py)."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "tests/megatron_ext/jreg_triton_cases.py"]  # fmt: skip
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        return Check(name="triton kernels compiled vs eager", ok=False,
                     value=f"timed out after {RUN_TIMEOUT_S} s")  # fmt: skip
    (root / "kernel_cases.log").write_text(proc.stdout + proc.stderr)
    return pytest_check("triton kernels compiled vs eager", proc.returncode, proc.stdout)
