"""``make setup GPU=1``: the locked environment plus Transformer Engine on a GPU node, built once.

Why not ``uv sync --extra gpu``: the lock pins CUDA 13 wheels (torch, NCCL, Triton, cuDNN), which
need a driver that supports CUDA 13 (>= 580), and Transformer Engine's PyTorch part
(``transformer-engine-torch``) is an sdist that builds, in an isolated environment, against
whatever torch the resolver picks there and for every GPU architecture: a long build per node that
can end with a TE for another torch (it then fails to import; the launcher refuses such a node).
Here, in order, each step printed before it runs:

1. the driver's CUDA (``nvidia-smi``) against the wheels' (uv.lock's ``nvidia-cuda-runtime``) and,
   for a build, ``nvcc``'s CUDA: an old driver stops with one line naming the fixes;
2. ``uv sync --locked --extra gpu`` without ``transformer-engine-torch`` (everything else of TE,
   its CUDA 13 core library included, comes as locked wheels);
3. unless ``WHEELS`` (default ``wheels/``, on the shared file system: every node reuses it)
   already holds the locked version's wheel: the locked sdist (its hash checked), built with
   ``uv build --no-build-isolation`` against the environment's locked torch, for sm90 only
   (``NVTE_CUDA_ARCHS=90``), into ``WHEELS``; the time and the wheel's size are printed;
4. that wheel installed with ``--no-index --no-deps``, and ``import transformer_engine.pytorch``.

``--dry-run`` prints the checks' verdict and the steps without running them. Stdlib only: it runs
before the environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TE_TORCH = "transformer-engine-torch"
ARCHS = "90"  # H200 (Hopper); NVTE_CUDA_ARCHS takes a ;-list
MIN_DRIVER = {12: "525", 13: "580"}  # the first driver branch of each CUDA major
BUILD_DEPS = ["pybind11", "ninja"]  # TE's build needs beyond setuptools (in the lock) and torch


def locked(lock_text: str, name: str) -> dict:
    """The ``[[package]]`` entry of ``name`` in uv.lock."""
    for pkg in tomllib.loads(lock_text)["package"]:
        if pkg["name"] == name:
            return pkg
    raise KeyError(f"{name} is not in uv.lock")


def wheels_cuda(lock_text: str) -> tuple[int, int]:
    """The CUDA (major, minor) of the locked wheels: their CUDA runtime's version."""
    major, minor, *_ = locked(lock_text, "nvidia-cuda-runtime")["version"].split(".")
    return int(major), int(minor)


def reported_cuda(text: str, pattern: str) -> tuple[int, int] | None:
    match = re.search(pattern, text)
    return (int(match[1]), int(match[2])) if match else None


def driver_cuda(smi_text: str) -> tuple[int, int] | None:
    """The highest CUDA the driver supports, from ``nvidia-smi``'s header."""
    return reported_cuda(smi_text, r"CUDA Version:\s*(\d+)\.(\d+)")


def nvcc_cuda(nvcc_text: str) -> tuple[int, int] | None:
    """The CUDA toolkit of ``nvcc --version``."""
    return reported_cuda(nvcc_text, r"release (\d+)\.(\d+)")


def driver_problem(driver: tuple[int, int] | None, wheels: tuple[int, int]) -> str | None:
    """Why the locked wheels cannot run on this driver (None: they can). CUDA's minor-version
    compatibility lets a driver of the same major run a newer minor."""
    want = f"{wheels[0]}.{wheels[1]}"
    if driver is None:
        return ("nvidia-smi shows no NVIDIA driver: run this on a GPU node (ABCI: qsub -I -P GROUP "
                "-q rt_HF -l select=1)")  # fmt: skip
    if driver[0] >= wheels[0]:
        return None
    return (
        f"the NVIDIA driver supports CUDA {driver[0]}.{driver[1]} but the locked torch, NCCL and "
        f"Triton wheels are CUDA {want}: use nodes with a driver >= {MIN_DRIVER.get(wheels[0], '?')} "
        f"(ask the site), run in a container with CUDA {wheels[0]} compatibility libraries "
        "(NGC PyTorch), or re-lock for CUDA 12 (torch from the PyTorch cu126 index; not provided)"
    )


def nvcc_problem(nvcc: tuple[int, int] | None, wheels: tuple[int, int]) -> str | None:
    """Why TE cannot be built here (None: it can): nvcc must be the wheels' CUDA major."""
    if nvcc is None:
        return (f"building Transformer Engine needs nvcc of CUDA {wheels[0]}.x and none is on PATH: "
                f"load the site's CUDA {wheels[0]} module (module load cuda/{wheels[0]}...) or set "
                "CUDA_HOME, or reuse a built wheel with WHEELS=dir")  # fmt: skip
    if nvcc[0] != wheels[0]:
        return (f"nvcc is CUDA {nvcc[0]}.{nvcc[1]} but the locked torch is CUDA {wheels[0]}.x: a TE "
                f"built with it would not load; load a CUDA {wheels[0]} module")  # fmt: skip
    return None


def built_wheel(wheels: Path, version: str) -> Path | None:
    """The locked version's TE wheel in ``wheels`` (None if it was not built yet)."""
    found = sorted(wheels.glob(f"transformer_engine_torch-{version}-*.whl"))
    return found[-1] if found else None


def steps(uv: str, wheels: Path, version: str, have_wheel: bool, jobs: int) -> list[tuple]:
    """(what, command, extra environment) of each step after the checks."""
    py = str(REPO / ".venv" / "bin" / "python")
    out = [("the locked environment with TE's locked wheels, TE's PyTorch part aside",
            [uv, "sync", "--locked", "--inexact", "--extra", "gpu", "--no-install-package",
             TE_TORCH], {})]  # fmt: skip
    if not have_wheel:
        sdist = wheels / ".sdist" / f"transformer_engine_torch-{version}.tar.gz"
        out += [
            ("its build tools (not needed at run time)",
             [uv, "pip", "install", "--python", py, *BUILD_DEPS], {}),
            (f"build TE {version} for sm{ARCHS} against the environment's torch",
             [uv, "build", "--wheel", "--no-build-isolation", "--python", py, "--out-dir",
              str(wheels), str(sdist)],
             {"NVTE_CUDA_ARCHS": ARCHS, "NVTE_FRAMEWORK": "pytorch", "MAX_JOBS": str(jobs)}),
        ]  # fmt: skip
    out.append((f"install the built TE {version} (from {wheels} only)",
                [uv, "pip", "install", "--python", py, "--no-index", "--no-deps", "--find-links",
                 str(wheels), f"{TE_TORCH}=={version}"], {}))  # fmt: skip
    out.append(("check that it imports", [py, "-c", "import transformer_engine.pytorch"], {}))
    return out


def _output(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout
    except OSError:
        return ""


def fetch_sdist(entry: dict, dest: Path) -> None:
    """The locked sdist, its sha256 checked (once; kept next to the wheels)."""
    url, digest = entry["sdist"]["url"], entry["sdist"]["hash"].removeprefix("sha256:")
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        urllib.request.urlretrieve(url, dest.with_suffix(".part"))
        dest.with_suffix(".part").rename(dest)
    if hashlib.sha256(dest.read_bytes()).hexdigest() != digest:
        dest.unlink()
        raise SystemExit(f"error: {dest.name} does not match uv.lock's hash; run again")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", default=os.environ.get("WHEELS") or str(REPO / "wheels"))
    parser.add_argument("--uv", default=os.environ.get("UV") or "uv")
    parser.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 32))
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    lock = (REPO / "uv.lock").read_text()
    wheels_dir, cuda = Path(args.wheels).resolve(), wheels_cuda(lock)
    te = locked(lock, TE_TORCH)
    wheel = built_wheel(wheels_dir, te["version"])
    problem = driver_problem(driver_cuda(_output(["nvidia-smi"])), cuda)
    if problem is None and wheel is None:
        home_nvcc = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
        nvcc = shutil.which("nvcc") or str(home_nvcc)
        problem = nvcc_problem(nvcc_cuda(_output([nvcc, "--version"])), cuda)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    print(f"gpu setup: wheels are CUDA {cuda[0]}.{cuda[1]}; TE {te['version']} "
          f"{'from ' + str(wheel) if wheel else 'to build into ' + str(wheels_dir)}")  # fmt: skip
    for what, cmd, env in steps(args.uv, wheels_dir, te["version"], wheel is not None, args.jobs):
        words = " ".join(f"{k}={v}" for k, v in env.items())
        print(f"== {what}\n+ {words + ' ' if words else ''}{' '.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        if cmd[1] == "build":
            fetch_sdist(te, Path(cmd[-1]))
        started = time.time()
        if subprocess.run(cmd, cwd=REPO, env={**os.environ, **env}).returncode:
            print(f"error: step failed: {what}", file=sys.stderr)
            return 1
        if cmd[1] == "build":
            built = built_wheel(wheels_dir, te["version"])
            size = built.stat().st_size / 2**20 if built else 0
            print(f"built {built} in {(time.time() - started) / 60:.1f} min ({size:.0f} MiB); "
                  f"other nodes reuse it: make setup GPU=1 WHEELS={wheels_dir}")  # fmt: skip
    if not args.dry_run:
        shutil.rmtree(wheels_dir / ".sdist", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
