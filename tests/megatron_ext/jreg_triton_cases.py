"""The fused Triton displacements against the eager path and a float64 reference.

Not collected by the default run (no ``test_`` prefix): Triton decides at import whether its
kernels are interpreted, so ``test_jreg_triton.py`` runs this file in a child pytest with
``TRITON_INTERPRET=1`` on CPU, and on a GPU machine also as compiled kernels on CUDA
(``tools/gpu_check.sh`` runs it directly there).
"""

import os

import pytest
import torch
import torch.nn.functional as F

from megatron_ext.jreg import displacement, relative_l2

INTERPRETED = os.environ.get("TRITON_INTERPRET", "") not in ("", "0")
DEVICE = "cpu" if INTERPRETED else "cuda"
if not INTERPRETED and not torch.cuda.is_available():
    pytest.skip("needs TRITON_INTERPRET=1 or a CUDA GPU", allow_module_level=True)

FNS = [displacement, relative_l2]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# odd hidden sizes (1, 7, 130: a padded block; 1000, 2500: several loop iterations of 1024 when
# 2500), as Megatron [s, b, h] and as flat [tokens, h]
SHAPES = [(3, 2, 1), (9, 7), (2, 3, 130), (4, 1000), (2, 1, 2500)]


def rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def inputs(shape, dtype, seed=0, requires_grad=True):
    # b correlated with a, as a layer's output with its input (cos away from 0)
    a32 = rand(*shape, seed=seed)
    b32 = 0.8 * a32 + 0.6 * rand(*shape, seed=seed + 1)
    a, b = (t.to(dtype).to(DEVICE).requires_grad_(requires_grad) for t in (a32, b32))
    return a, b


def reference(fn, a, b):
    """Float64, independent of jreg.py (torch's cosine similarity / norms)."""
    if fn is displacement:
        return 1 - (1 + F.cosine_similarity(a, b, dim=-1)) / 2
    return (b - a).norm(dim=-1) / a.norm(dim=-1)


def run(fn, a, b, g, impl):
    out = fn(a, b, impl=impl)
    grads = torch.autograd.grad(out, [t for t in (a, b) if t.requires_grad], g)
    return out, grads


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fn", FNS, ids=lambda f: f.__name__)
def test_matches_eager_and_float64(fn, dtype, shape):
    a, b = inputs(shape, dtype, seed=len(shape) + shape[-1])
    g = rand(*shape[:-1], seed=99).to(DEVICE)
    out, grads = run(fn, a, b, g, "triton")
    eager_out, eager_grads = run(fn, a, b, g, "eager")
    assert out.dtype == torch.float32 and out.shape == shape[:-1]
    torch.testing.assert_close(out, eager_out, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, eager_grads, strict=True):
        assert got.dtype == dtype and got.shape == shape
        # same fp32 math, so at most one rounding step of the input dtype apart
        torch.testing.assert_close(got, want)
    # float64 reference on the same (already rounded) inputs
    a64, b64 = (x.detach().double().requires_grad_() for x in (a, b))
    ref = reference(fn, a64, b64)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    ref_grads = torch.autograd.grad(ref, (a64, b64), g.double())
    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-3}[dtype]
    # the gradient is a difference of terms of size ~|g| / |x| (exactly 0 for h = 1)
    norms = torch.minimum(a64.norm(dim=-1), b64.norm(dim=-1)).detach()
    term = float(g.abs().max() / norms.min())
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * term)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fn", FNS, ids=lambda f: f.__name__)
def test_zero_rows_as_eager(fn, dtype):
    """Zero input, zero output, both zero, both below EPS but not zero (bf16/fp32: where the
    clamp's zero derivative matters): the eager path's finite values and gradients."""
    a, b = inputs((5, 130), dtype, seed=5, requires_grad=False)
    a[0] = 0
    b[1] = 0
    a[2] = 0
    b[2] = 0
    a[3] *= 1e-10
    b[3] *= 1e-10
    a.requires_grad_()
    b.requires_grad_()
    g = torch.ones(5, device=DEVICE)
    out, grads = run(fn, a, b, g, "triton")
    eager_out, eager_grads = run(fn, a, b, g, "eager")
    torch.testing.assert_close(out, eager_out, rtol=1e-5, atol=1e-6)
    if fn is displacement:
        assert out[:3].tolist() == [0.5, 0.5, 0.5]
    else:
        assert out[1].item() == 1.0 and out[2].item() == 0.0
    for got, want in zip(grads, eager_grads, strict=True):
        # fp16 overflows (|grad| ~ 1/EPS) to inf in both paths alike; bf16/fp32 stay finite
        torch.testing.assert_close(got, want)
        if dtype != torch.float16:
            assert torch.isfinite(got.float()).all()


@pytest.mark.parametrize("fn", FNS, ids=lambda f: f.__name__)
def test_sbh_equals_tokens_h(fn):
    a, b = inputs((5, 3, 96), torch.bfloat16, seed=7)
    g = rand(5, 3, seed=8).to(DEVICE)
    out, (ga, gb) = run(fn, a, b, g, "triton")
    flat_a, flat_b = (x.detach().reshape(15, 96).requires_grad_() for x in (a, b))
    flat_out, (fga, fgb) = run(fn, flat_a, flat_b, g.reshape(15), "triton")
    assert torch.equal(out.reshape(15), flat_out)
    assert torch.equal(ga.reshape(15, 96), fga) and torch.equal(gb.reshape(15, 96), fgb)


@pytest.mark.parametrize("fn", FNS, ids=lambda f: f.__name__)
def test_one_input_needs_grad(fn):
    a, b = inputs((6, 33), torch.float32, seed=9)
    a = a.detach()
    g = rand(6, seed=10).to(DEVICE)
    (gb,) = torch.autograd.grad(fn(a, b, impl="triton"), b, g)
    (eager_gb,) = torch.autograd.grad(fn(a, b, impl="eager"), b, g)
    torch.testing.assert_close(gb, eager_gb)


def test_saves_only_inputs_and_token_scalars():
    """No activation memory beyond the inputs (alive anyway) and per-token fp32 scalars."""
    a, b = inputs((16, 2, 32), torch.bfloat16, seed=11)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        displacement(a, b, impl="triton")
        relative_l2(a, b, impl="triton")
    big = [t for t in saved if t.dim() == 3]
    assert len(big) == 4 and {t.data_ptr() for t in big} == {a.data_ptr(), b.data_ptr()}
    small = [t for t in saved if t.dim() < 3]
    assert len(small) == 5 and all(t.numel() == 16 * 2 and t.dtype == torch.float32 for t in small)


def test_empty_input():
    a, b = inputs((0, 2, 8), torch.float32, seed=12)
    out = displacement(a, b, impl="triton")
    assert out.shape == (0, 2)
    out.sum().backward()
    assert a.grad.shape == a.shape


@pytest.mark.parametrize("fn", FNS, ids=lambda f: f.__name__)
def test_non_contiguous_inputs(fn):
    """A transposed [b, s, h] -> [s, b, h] view (copied to rows inside, gradients in its shape)."""
    a_bsh, b_bsh = inputs((3, 5, 40), torch.bfloat16, seed=13, requires_grad=False)
    a, b = (x.transpose(0, 1).requires_grad_() for x in (a_bsh, b_bsh))
    assert not a.is_contiguous()
    g = rand(5, 3, seed=14).to(DEVICE)
    out, grads = run(fn, a, b, g, "triton")
    eager_out, eager_grads = run(fn, a, b, g, "eager")
    torch.testing.assert_close(out, eager_out, rtol=1e-5, atol=1e-6)
    for got, want in zip(grads, eager_grads, strict=True):
        assert got.shape == (5, 3, 40)
        torch.testing.assert_close(got, want)
