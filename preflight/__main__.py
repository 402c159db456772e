"""``python -m preflight`` (``make preflight``): checks, table, exit code.

Exit 0: every check passed; 1: at least one failed; 2: no GPU (one line, nothing run). Writes
its run directories and logs under ``runs/preflight/`` (``OUT=`` elsewhere); needs no network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

NODE_TIMEOUT_S = 240


def no_gpu_error() -> str | None:
    """The one-line reason this machine cannot be checked (None when it has a GPU)."""
    import torch

    if torch.cuda.is_available():
        return None
    built = (
        f"built for CUDA {torch.version.cuda}: an older driver cannot run it, nvidia-smi shows "
        "the highest CUDA the driver supports"
        if torch.version.cuda
        else "a CPU-only build"
    )
    return (
        f"error: make preflight needs a GPU and torch sees none (torch {torch.__version__}, "
        f'{built}); run it on a GPU node (README "Run on ABCI")'
    )


def node_stage(out: Path, ngpu: int):
    from preflight.runs import REPO, _last_line
    from preflight.table import Check, load

    result = out / "node.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={ngpu}", "-m", "preflight.node", "--out", str(result)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_DEVICE_MAX_CONNECTIONS": "1"}
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=NODE_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        return [
            Check(name="node checks", ok=False, value=f"timed out after {NODE_TIMEOUT_S} s")
        ], 0.0
    (out / "node.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode or not result.exists():
        text = _last_line(proc.stderr or proc.stdout)
        return [Check(name="node checks", ok=False, value=f"exit {proc.returncode}: {text}")], 0.0
    return load(result), float((out / "node.json.peak").read_text())


def health(out: Path):
    """GPU health from nvidia-smi (uncorrectable ECC errors, row remapping)."""
    from preflight.limits import HEALTH_QUERY, REMAP_QUERY, health_check

    texts = []
    for query in (HEALTH_QUERY, REMAP_QUERY):
        try:
            proc = subprocess.run(query, capture_output=True, text=True, timeout=60)
            texts.append(proc.stdout if proc.returncode == 0 else "")
        except (OSError, subprocess.TimeoutExpired):
            texts.append("")
    (out / "health.txt").write_text("\n".join(texts))
    return [health_check(*texts)]


def two_node_main(out: Path, ngpu: int, started: float) -> int:
    """``make preflight NODES=2`` (preflight.two_nodes), inside a 2-node job."""
    from preflight import runs, two_nodes
    from preflight.table import Check, exit_code, render

    if os.environ["NODES"] != "2":
        print(f"error: NODES must be 1 or 2, got {os.environ['NODES']!r}", file=sys.stderr)
        return 2
    hosts = two_nodes.job_hosts(dict(os.environ))
    if isinstance(hosts, str):
        print(hosts, file=sys.stderr)
        return 2
    data, why = runs.build_data(out / "data")
    checks = [Check(name="preflight dataset", ok=False, value=why)] if data is None else (
        two_nodes.run(out, data, runs.REPO, sys.executable, ngpu))  # fmt: skip
    print(f"\npreflight on 2 nodes ({', '.join(hosts)}), {time.time() - started:.0f} s:")
    print(render(checks), end="")
    return exit_code(checks)


def main() -> int:
    error = no_gpu_error()
    if error:
        print(error, file=sys.stderr)
        return 2
    import torch

    from megatron_ext.config import te_import_error
    from preflight import runs
    from preflight.limits import budget_checks
    from preflight.table import Check, exit_code, render

    ngpu = torch.cuda.device_count()
    out = Path(os.environ.get("OUT") or runs.REPO / "runs" / "preflight")
    out = out / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    print(f"preflight: {ngpu} GPU(s), logs in {out}", flush=True)
    started = time.time()
    seconds: dict[str, float] = {}
    checks: list[Check] = []

    def stage(name: str, fn):
        print(f"preflight: {name} ...", flush=True)
        t0 = time.time()
        result = fn()
        seconds[name] = time.time() - t0
        return result

    if os.environ.get("NODES", "1") not in ("", "1"):
        return two_node_main(out, ngpu, started)
    node_checks, peak = stage("node checks", lambda: node_stage(out, ngpu))
    checks += health(out) + node_checks
    te = te_import_error() is None
    checks.append(stage("kernel compiled vs eager", lambda: runs.compiled_kernel(out)))
    data, why = runs.build_data(out / "data")
    if data is None:
        checks.append(Check(name="preflight dataset", ok=False, value=why))
    else:
        checks += stage("checkpoint resume", lambda: runs.resume(out, data))
        fp8_ok = te and any(c.name == "fp8 available" and c.ok for c in checks)

        def throughput():
            got = runs.throughput(out, data, ngpu, peak or float("nan"), fp8=False)
            got.append(runs.attention_backend(runs.run_log(out / "tput-bf16-jreg"), te))
            if fp8_ok:
                got += runs.throughput(out, data, ngpu, peak or float("nan"), fp8=True)
            return got

        checks += stage("throughput", throughput)
        checks += stage("sizes", lambda: runs.sizes(out, data, ngpu, fp8=fp8_ok))
        if ngpu >= 2:
            checks += stage("layouts", lambda: runs.layouts(out, data, ngpu, te))
        else:
            print("preflight: one GPU, so no 1 -> N-GPU layout checks", flush=True)
    checks += budget_checks(seconds)
    print(f"\npreflight on {torch.cuda.get_device_name()} x {ngpu}, "
          f"{time.time() - started:.0f} s:", flush=True)  # fmt: skip
    print(render(checks), end="")
    return exit_code(checks)


if __name__ == "__main__":
    sys.exit(main())
