"""Dispatch between the eager and fused displacements, and the fused kernels themselves.

The kernel cases (``jreg_triton_cases.py``) run in a child pytest: under Triton's interpreter
(``TRITON_INTERPRET=1``, CPU tensors) everywhere, and compiled on CUDA where there is a GPU.
Triton reads ``TRITON_INTERPRET`` when a kernel is defined, so it cannot be switched in this
process (Megatron imports Triton too) without affecting every other test.
"""

import sys

import pytest
import torch

from megatron_ext.jreg import displacement, relative_l2
from tests.helpers import requires_gpu, run_checked

CASES = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/megatron_ext/jreg_triton_cases.py"]


def _run_cases(**env: str) -> str:
    code, out = run_checked([sys.executable, *CASES], timeout=600, **env)
    assert code == 0, out[-6000:]
    assert " passed" in out and "skipped" not in out, out[-3000:]
    return out


def test_kernels_under_interpreter():
    _run_cases(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")


@requires_gpu
def test_kernels_compiled_on_gpu():
    _run_cases(TRITON_INTERPRET="0")


@pytest.mark.parametrize("fn", [displacement, relative_l2])
def test_cpu_auto_is_eager(fn):
    a = torch.randn(4, 2, 16, dtype=torch.bfloat16)
    b = torch.randn(4, 2, 16, dtype=torch.bfloat16)
    assert torch.equal(fn(a, b), fn(a, b, impl="eager"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"impl": "fused"}, "unknown impl 'fused'; valid: auto, eager, triton"),
        ({"impl": "triton", "dtype": torch.float64}, "takes bf16/fp16/fp32"),
    ],
)
def test_impl_errors(kwargs, message):
    dtype = kwargs.pop("dtype", torch.float32)
    a = torch.ones(2, 3, dtype=dtype)
    with pytest.raises(ValueError, match=message):
        displacement(a, a, **kwargs)


def test_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="needs CUDA tensors .* use impl='eager' on CPU"):
        relative_l2(torch.ones(2, 3), torch.ones(2, 3), impl="triton")
