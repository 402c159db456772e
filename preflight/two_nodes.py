"""``make preflight NODES=2``: the first multi-node job is not the first time InfiniBand, the NCCL
network plugin and the rendezvous meet.

Run inside a 2-node PBS job (``qsub -I -P gXXXXX -q rt_HF -l select=2 -l walltime=0:30:00``):

1. the ``tiny`` recipe for 20 iterations through the real job script, ``jobs/abci/pretrain.sh``
   (its modules, hosts, rendezvous, ``mpirun`` and ``jobs/local.sh`` on each node): it must
   finish with 20 finite training iterations;
2. a 256 MiB all-reduce over every GPU of both nodes (``preflight.node --allreduce-nodes``,
   started by the same kind of ``mpirun`` line): its bus bandwidth must be InfiniBand's.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

from preflight.table import Check, load

JOB = "jobs/abci/pretrain.sh"
ITERS = 20
TIMEOUT_S = 600


def job_hosts(env: dict) -> list[str] | str:
    """The job's unique hosts in $PBS_NODEFILE order, or the one-line error outside a job."""
    nodefile = env.get("PBS_NODEFILE", "")
    hosts: list[str] = []
    if nodefile and Path(nodefile).is_file():
        for line in Path(nodefile).read_text().split():
            if line not in hosts:
                hosts.append(line)
    if len(hosts) < 2:
        return ("error: make preflight NODES=2 runs inside a job of 2 nodes (found "
                f"{len(hosts)} host(s) in $PBS_NODEFILE): qsub -I -P gXXXXX -q rt_HF -l select=2 "
                "-l walltime=0:30:00, then make preflight NODES=2")  # fmt: skip
    return hosts


def job_env(run_dir: Path, data: Path) -> dict[str, str]:
    """The settings of the 20-iteration tiny job (the job script reads them from its env)."""
    return {"SIZE": "tiny", "REG": "jreg", "ITERS": str(ITERS), "LOG_INTERVAL": "1",
            "SAVE_INTERVAL": "10", "RUN": str(run_dir), "DATA": str(data), "TIME_LIMIT": "15"}  # fmt: skip


def job_check(code: int, metrics: list[dict], nodes: int) -> Check:
    """The job finished with ITERS finite training iterations."""
    train = [x for x in metrics if "split" not in x]
    finite = all(math.isfinite(x["lm_loss"]) for x in train)
    done = [x["iteration"] for x in train] == list(range(1, ITERS + 1))
    return Check(name=f"{nodes}-node job ({JOB}, tiny)", ok=code == 0 and done and finite,
                 value=f"exit {code}, {len(train)} of {ITERS} iterations logged, loss finite="
                 f"{finite}" + (f", last loss {train[-1]['lm_loss']:.4f}" if train else ""))  # fmt: skip


def allreduce_command(hosts: list[str], hostfile: Path, port: int, nproc: int, out: Path,
                      python: str) -> list[str]:  # fmt: skip
    """mpirun: one torchrun per host (node rank = MPI rank) running the all-reduce."""
    torchrun = (f"exec {python} -m torch.distributed.run --nnodes {len(hosts)} --node-rank "
                f"$OMPI_COMM_WORLD_RANK --nproc-per-node {nproc} --master-addr {hosts[0]} "
                f"--master-port {port} -m preflight.node --out {out} --allreduce-nodes "
                f"{len(hosts)}")  # fmt: skip
    exports = [w for name in ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV")
               for w in ("-x", name)]  # fmt: skip
    return ["mpirun", "-np", str(len(hosts)), "-npernode", "1", "-hostfile", str(hostfile),
            "-bind-to", "none", *exports, "bash", "-c", torchrun]  # fmt: skip


def run(out: Path, data: Path, repo: Path, python: str, nproc: int) -> list[Check]:
    hosts = job_hosts(dict(os.environ))
    if isinstance(hosts, str):
        return [Check(name="2-node job", ok=False, value=hosts.removeprefix("error: "))]
    run_dir = out / "two-node"
    # JOB_REPO: an interactive job's $PBS_O_WORKDIR is where qsub ran, maybe not the checkout
    env = {**os.environ, **job_env(run_dir, data), "JOB_REPO": str(repo)}
    try:
        proc = subprocess.run([str(repo / JOB)], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT_S)  # fmt: skip
        code, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        code, text = 124, f"timed out after {TIMEOUT_S} s"
    (out / "two-node.log").write_text(text)
    metrics_path = run_dir / "metrics.jsonl"
    metrics = [json.loads(x) for x in metrics_path.read_text().splitlines() if x] if (
        metrics_path.is_file()) else []  # fmt: skip
    checks = [job_check(code, metrics, len(hosts))]
    hostfile = out / "two-node.hosts"
    hostfile.write_text("".join(f"{h} slots=1\n" for h in hosts))
    result = out / "internode.json"
    cmd = allreduce_command(hosts, hostfile, 29400 + os.getpid() % 1000, nproc, result, python)
    env = {**os.environ, "PYTHONPATH": str(repo), "CUDA_DEVICE_MAX_CONNECTIONS": "1"}
    try:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)  # fmt: skip
        (out / "internode.log").write_text(proc.stdout + proc.stderr)
        ok = proc.returncode == 0 and result.is_file()
    except subprocess.TimeoutExpired:
        ok = False
    checks += load(result) if ok else [Check(name="nccl all-reduce over 2 nodes", ok=False,
                                             value=f"failed; see {out / 'internode.log'}")]  # fmt: skip
    return checks
