"""Preflight runs through the real launcher (the path a job takes): throughput and 1 -> N GPUs.

Each run is ``python -m launcher ... LOG_INTERVAL=1`` into its own run directory; the
numbers come from its ``metrics.jsonl`` (LM loss, D_l, step time) and Megatron's memory report.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import sysconfig
from pathlib import Path

from preflight.table import Check

REPO = Path(__file__).resolve().parents[2]
LAUNCH = [sys.executable, "-m", "launcher"]
RUN_TIMEOUT_S = 300
# the 1b shape with fewer layers: the per-layer cost of the real model, a short start-up
THROUGHPUT_LAYERS = 4
THROUGHPUT_ITERS = 8
# bf16 over different layouts: reductions in another order, ~1e-3 relative on the loss
LAYOUT_TOLERANCE = {"loss": 2e-2, "D": 5e-2}
_MAX_ALLOCATED = re.compile(r"max allocated: ([0-9.]+)")


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


def launch(run_dir: Path, data: Path, settings: list[str]) -> tuple[list[dict] | None, str]:
    """Run the launcher; (train lines of metrics.jsonl, its output) or (None, the error)."""
    cmd = [*LAUNCH, f"RUN={run_dir}", f"DATA={data}", "LOG_INTERVAL=1", *settings]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S)  # fmt: skip
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
        mem = [float(m) for m in _MAX_ALLOCATED.findall(out)]
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
