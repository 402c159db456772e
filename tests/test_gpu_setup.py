"""`make setup GPU=1` (tools/gpu_setup.py): its decisions on CPU, from the real uv.lock and the
text nvidia-smi and nvcc print; the whole flow with --dry-run and fake nvidia-smi/nvcc."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.helpers import REPO

spec = importlib.util.spec_from_file_location("gpu_setup", REPO / "tools" / "gpu_setup.py")
setup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup)

LOCK = (REPO / "uv.lock").read_text()
SMI = """Thu Dec  3 10:00:00 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {driver}             Driver Version: {driver}     CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
"""
NVCC = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release {v}, V{v}.41\n"


def test_the_lock_pins_cuda13_wheels_and_a_te_sdist():
    assert setup.wheels_cuda(LOCK)[0] == 13
    te = setup.locked(LOCK, "transformer-engine-torch")
    assert te["sdist"]["url"].endswith(f"transformer_engine_torch-{te['version']}.tar.gz")
    assert te["sdist"]["hash"].startswith("sha256:") and "wheels" not in te


@pytest.mark.parametrize(
    "driver, says",
    [("550.54.15", "supports CUDA 12.4 but the locked torch, NCCL and Triton wheels are CUDA 13"),
     ("580.65.06", None), ("590.10", None)],
)  # fmt: skip
def test_driver_against_the_wheels(driver, says):
    cuda = {"550.54.15": "12.4", "580.65.06": "13.0", "590.10": "13.3"}[driver]
    problem = setup.driver_problem(setup.driver_cuda(SMI.format(driver=driver, cuda=cuda)),
                                   (13, 2))  # fmt: skip
    if says is None:
        assert problem is None  # 13.0 runs 13.2 wheels: minor-version compatibility
    else:
        assert says in problem and "driver >= 580" in problem and "container" in problem
    assert "GPU node" in setup.driver_problem(setup.driver_cuda(""), (13, 2))


def test_nvcc_must_be_the_wheels_cuda_major():
    assert setup.nvcc_problem(setup.nvcc_cuda(NVCC.format(v="13.0")), (13, 2)) is None
    assert "CUDA 12.6 but the locked torch is CUDA 13" in setup.nvcc_problem(
        setup.nvcc_cuda(NVCC.format(v="12.6")), (13, 2))  # fmt: skip
    assert "WHEELS=dir" in setup.nvcc_problem(None, (13, 2))


def test_build_once_for_sm90_against_the_locked_torch_then_reuse(tmp_path):
    build = setup.steps("uv", tmp_path, "2.20.2", have_wheel=False, jobs=16)
    cmds = [" ".join(c) for _, c, _ in build]
    assert cmds[0].startswith("uv sync --locked --inexact --extra gpu --no-install-package "
                              "transformer-engine-torch")  # fmt: skip
    what, cmd, env = next(s for s in build if s[1][1] == "build")
    assert "--no-build-isolation" in cmd and cmd[cmd.index("--out-dir") + 1] == str(tmp_path)
    assert env["NVTE_CUDA_ARCHS"] == "90" and env["NVTE_FRAMEWORK"] == "pytorch"
    assert "--no-index --no-deps --find-links " + str(tmp_path) in cmds[-2]
    assert cmds[-1].endswith("-c import transformer_engine.pytorch")
    reuse = [" ".join(c) for _, c, _ in setup.steps("uv", tmp_path, "2.20.2", True, 16)]
    assert not any(" build " in c or "pybind11" in c for c in reuse) and len(reuse) == 3
    assert setup.built_wheel(tmp_path, "2.20.2") is None
    (tmp_path / "transformer_engine_torch-2.20.2-cp312-cp312-linux_x86_64.whl").write_bytes(b"")
    assert setup.built_wheel(tmp_path, "2.20.2").name.startswith("transformer_engine_torch-2.20.2")


def _fake(bin_dir, name, text):
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{text}EOF\n")
    path.chmod(0o755)


@pytest.mark.parametrize("cuda, code", [("12.4", 2), ("13.0", 0)])
def test_dry_run_flow(tmp_path, cuda, code):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake(bin_dir, "nvidia-smi", SMI.format(driver="x", cuda=cuda))
    _fake(bin_dir, "nvcc", NVCC.format(v="13.0"))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "WHEELS": str(tmp_path / "w")}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_setup.py"), "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert proc.returncode == code, proc.stdout + proc.stderr
    if code:
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: the NVIDIA driver")
    else:
        assert "NVTE_CUDA_ARCHS=90" in proc.stdout and "--no-build-isolation" in proc.stdout
        assert not (tmp_path / "w").exists()  # a dry run changes nothing
