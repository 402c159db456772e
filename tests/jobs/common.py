"""Running the job scripts without a cluster: a clean environment and fake cluster commands."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from tests.helpers import REPO, subprocess_env

JOBS = REPO / "jobs"
# Variables a job reads: none may leak in from the shell running the tests.
JOB_VARS = {
    "RUN", "SIZE", "INIT", "TRAIN", "REG", "LAMBDA", "WEIGHTS", "ITERS", "SAVE_INTERVAL", "LOG_INTERVAL", "SEED",
    "DATA", "TP", "PP", "VPP", "CP", "FP8", "TE", "ARGS", "DRY_RUN", "NPROC", "NNODES", "NODE_RANK",
    "MASTER_ADDR", "MASTER_PORT", "GPUS_PER_NODE", "JOB_REPO", "LAUNCH_PYTHON", "PLAN_GPUS",
    "MODULES", "CUDA_MODULE", "CUDNN_MODULE", "NCCL_MODULE", "HPCX_MODULE", "CLUSTER", "NODES",
    "GROUP", "WALLTIME", "QUEUE", "PARTITION", "SUBMIT", "ALLOW_CPU",
    "TIME_LIMIT", "STOP_MARGIN", "GPUS", "ITER", "TASKS", "NUM_FEWSHOT", "LIMIT", "BATCH",
    "DTYPE", "DOCS", "KEEP_EXPORTS", "OUT", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR",
    "PBS_LOCALDIR", "TMPDIR",
}  # fmt: skip

# Each fake records its arguments, one call a line, in $FAKE_LOG. mpirun/srun then start the
# program (from `bash` on) once per node with the rank variable the real ones set.
RECORD = """{ printf '%s' "$(basename "$0")"; printf ' %q' "$@"; printf '\\n'; } >>"$FAKE_LOG"
"""
# the node count from `-np N` or `--nodes=N`, then the program (from `bash` on) once per rank
PER_NODE = """n=1
while (($#)) && [[ $1 != bash ]]; do
  case $1 in {count}) n=$2; shift ;; {count}=*) n=${{1#*=}} ;; esac
  shift
done
for ((i = 0; i < n; i++)); do {rank}=$i "$@"; done
"""
FAKES = {
    "qsub": RECORD + "echo 4242.pbs1\n",
    "sbatch": RECORD + "echo Submitted batch job 4242\n",
    "module": RECORD,
    "mpirun": RECORD + PER_NODE.format(rank="OMPI_COMM_WORLD_RANK", count="-np"),
    "srun": RECORD + PER_NODE.format(rank="SLURM_NODEID", count="--nodes"),
    # stands in for the launcher's python: prints what it was asked to run
    "fake-python": """printf 'LAUNCH'; printf ' %q' "$@"; printf '\\n'
echo "CACHES ${TRITON_CACHE_DIR:-unset} ${TORCHINDUCTOR_CACHE_DIR:-unset}"\n""",
}


def make_fakes(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in FAKES.items():
        path = bin_dir / name
        path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
        path.chmod(0o755)


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test environment minus job/cluster variables, with the fakes first on PATH."""
    env = subprocess_env()
    for key in list(env):
        if key in JOB_VARS or key.startswith(("PBS_", "SLURM_", "OMPI_")):
            del env[key]
    make_fakes(tmp_path / "bin")
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    env["FAKE_LOG"] = str(tmp_path / "calls.log")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def calls(tmp_path: Path) -> list[list[str]]:
    """The fake cluster commands called so far, each as its argument list."""
    log = tmp_path / "calls.log"
    return [shlex.split(x) for x in log.read_text().splitlines()] if log.exists() else []


def node_lines(stdout: str) -> list[tuple[int, int, str, list[str]]]:
    """(rank, nnodes, host, command words) of each `node i/N host h: <command>` line."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("node "):
            head, _, cmd = line.partition(": ")
            _, rank_n, _, host = head.split()
            rank, nnodes = map(int, rank_n.split("/"))
            out.append((rank, nnodes, host, shlex.split(cmd)))
    return out


def settings(words: list[str]) -> dict[str, str]:
    """VAR=value words of a launcher command as a dict (later ones win, as in the launcher)."""
    return dict(w.split("=", 1) for w in words if "=" in w)


def pbs_nodefile(tmp_path: Path, hosts: list[str], slots: int = 8) -> Path:
    """A $PBS_NODEFILE as PBS writes it: each host once per slot."""
    path = tmp_path / "nodefile"
    path.write_text("".join(f"{h}\n" * slots for h in hosts))
    return path
