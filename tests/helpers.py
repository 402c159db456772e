"""Shared test helpers: launching real multi-process runs (torchrun over gloo) with a time limit,
waiting for a run to log an iteration, and a stand-in for an imported model's folder."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.ports import free_port
from recipes import model_recipe

REPO = Path(__file__).resolve().parents[1]

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: bytecode cache on, one thread per rank, repo importable,\n    W&B off unless ``extra`` sets ``WANDB_MODE``."""
    env = dict(os.environ)
    env["PYTHONDONTWRITEBYTECODE"] = ""
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # W&B's offline service costs each training start ~8 s: off unless a test asks for it
    # (the tests of W&B's own files and of stopping a run pass WANDB_MODE=offline)
    env.setdefault("WANDB_MODE", "disabled")
    env.update(extra)
    return env


def run_checked(cmd: list[str], timeout: float, cwd: Path = REPO, **env: str):
    """Run ``cmd`` in its own process group; kill the whole group on timeout and fail clearly."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=subprocess_env(**env), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n{out[-4000:]}")
    return proc.returncode, out


def torchrun(nproc: int, module: str, args: list[str], timeout: float = 300):
    """``torchrun --nproc-per-node nproc -m module args`` on localhost; asserts success."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", module, *args,
    ]  # fmt: skip
    code, out = run_checked(cmd, timeout)
    assert code == 0, f"{' '.join(cmd)} exited {code}\n{out[-6000:]}"
    return out


def wait_for_iteration(
    proc: subprocess.Popen, run_dir: Path, iteration: int, timeout: float
) -> bool:
    """Poll ``run_dir/metrics.jsonl`` while ``proc`` runs until it holds a training line of
    ``iteration`` or later; returns whether it did (False: ``proc`` ended or ``timeout`` passed
    first). A line still being written (no closing brace yet) is not read."""
    path = Path(run_dir) / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        texts = path.read_text().splitlines() if path.exists() else []
        lines = [json.loads(x) for x in texts if x.endswith("}")]
        if any("split" not in x and x["iteration"] >= iteration for x in lines):
            return True
        time.sleep(0.05)
    return False


def fake_import(folder: Path, data: Path, **switches) -> Path:
    """A folder as ``make import`` leaves it, without weights (a plan does not read them): the
    model's tokenizer is the dataset's."""
    manifest = json.loads((data / "manifest.json").read_text())
    vocab = manifest["tokenizer"]["vocab_size"]
    model = model_recipe("tiny").replace(seq_length=4096, **switches)
    record = {"source": str(data / manifest["tokenizer"]["path"]),
              "model": dataclasses.asdict(model), "hf_vocab_size": vocab,
              "vocab_size": -(-vocab // 128) * 128, "dtype": "float32"}  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "import.json").write_text(json.dumps(record))
    return folder
