"""The JREG math against closed forms (float64), bf16 inputs, zero vectors, 1- and 2-layer cases."""

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from megatron_ext.jreg import displacement, layer_weights, parse_schedule, relative_l2
from megatron_ext.metrics import convergence_score, jump_rate, jump_ratio
from tests.helpers import REPO


def rand(*shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_displacement_closed_form_float64():
    a, b = rand(5, 3, 16, seed=1), rand(5, 3, 16, seed=2)
    expected = 1 - (1 + (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))) / 2
    psi = displacement(a, b)
    assert psi.shape == (5, 3)
    torch.testing.assert_close(psi, expected, rtol=1e-12, atol=1e-12)
    assert displacement(a.float(), b.float()).dtype == torch.float32
    # identical vectors: 0; opposite: 1; orthogonal: 0.5
    e0, e1 = torch.eye(2, dtype=torch.float64)
    cases = torch.stack([e0, -e0, e1])
    assert displacement(cases, torch.stack([e0, e0, e0])).tolist() == [0.0, 1.0, 0.5]


def test_relative_l2_closed_form_float64():
    a, b = rand(4, 2, 8, seed=3), rand(4, 2, 8, seed=4)
    expected = (b - a).norm(dim=-1) / a.norm(dim=-1)
    torch.testing.assert_close(relative_l2(a, b), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", [displacement, relative_l2])
def test_gradcheck_float64(fn):
    a = rand(3, 2, 6, seed=5).requires_grad_()
    b = rand(3, 2, 6, seed=6).requires_grad_()
    assert fn(a, b).dtype == torch.float64
    assert torch.autograd.gradcheck(fn, (a, b), eps=1e-6, atol=1e-7)
    # and the same gradient as autograd through an independent formula
    g = rand(3, 2, seed=7)
    ga, gb = torch.autograd.grad(fn(a, b), (a, b), g)
    ra, rb = torch.autograd.grad(_reference(fn, a, b), (a, b), g)
    torch.testing.assert_close(ga, ra, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gb, rb, rtol=1e-9, atol=1e-12)


def _reference(fn, a, b):
    if fn is displacement:
        return 1 - (1 + F.cosine_similarity(a, b, dim=-1)) / 2
    return (b - a).norm(dim=-1) / a.norm(dim=-1)


@pytest.mark.parametrize("fn", [displacement, relative_l2])
def test_bf16_inputs_computed_in_fp32(fn):
    a32, b32 = (
        rand(8, 2, 64, dtype=torch.float32, seed=8),
        rand(8, 2, 64, dtype=torch.float32, seed=9),
    )
    a, b = a32.bfloat16().requires_grad_(), b32.bfloat16().requires_grad_()
    out = fn(a, b)
    assert out.dtype == torch.float32
    expected = _reference(fn, a.detach().double(), b.detach().double())
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert a.grad.dtype == torch.bfloat16 and b.grad.dtype == torch.bfloat16
    assert torch.isfinite(a.grad.float()).all() and torch.isfinite(b.grad.float()).all()


def test_backward_saves_no_fp32_copies():
    a = rand(16, 2, 32, dtype=torch.float32, seed=10).bfloat16().requires_grad_()
    b = rand(16, 2, 32, dtype=torch.float32, seed=11).bfloat16().requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        displacement(a, b)
        relative_l2(a, b)
    big = [t for t in saved if t.dim() == 3]
    assert big and all(t.dtype == torch.bfloat16 for t in big), [t.dtype for t in big]
    assert all(t.numel() <= 16 * 2 for t in saved if t.dim() < 3)


def test_zero_vectors_finite():
    z = torch.zeros(2, 1, 4, requires_grad=True)
    x = torch.ones(2, 1, 4, requires_grad=True)
    for a, b in [(z, x), (x, z), (z, z)]:
        psi = displacement(a, b)
        assert torch.equal(psi, torch.full((2, 1), 0.5))
        psi.sum().backward()
        assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
        a.grad = b.grad = None
    assert torch.isfinite(relative_l2(z, x)).all() and torch.isfinite(relative_l2(x, z)).all()
    assert relative_l2(z, z).tolist() == [[0.0], [0.0]]


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        displacement(torch.ones(2, 1, 4), torch.ones(2, 1, 3))


def test_layer_weights_closed_forms():
    L = 6
    idx = torch.arange(1, L + 1, dtype=torch.float64)
    torch.testing.assert_close(
        layer_weights(L, "uniform"), torch.full((L,), 1 / L, dtype=torch.float64)
    )
    assert layer_weights(L, "final").tolist() == [0, 0, 0, 0, 0, 1]
    assert layer_weights(L, "last_k", k=2).tolist() == [0, 0, 0, 0, 0.5, 0.5]
    torch.testing.assert_close(layer_weights(L, "linear"), idx / idx.sum())
    e = torch.exp(0.25 * idx)
    torch.testing.assert_close(layer_weights(L, "exp"), e / e.sum())
    e = torch.exp(-1.0 * idx)
    torch.testing.assert_close(layer_weights(L, "exp", k=-1.0), e / e.sum())
    for schedule, kw in [
        ("uniform", {}),
        ("final", {}),
        ("last_k", {"k": 3}),
        ("linear", {}),
        ("exp", {}),
    ]:
        for n in (1, 2, 7):
            if schedule == "last_k" and kw["k"] > n:
                continue
            assert math.isclose(float(layer_weights(n, schedule, **kw).sum()), 1.0, rel_tol=1e-12)
    assert layer_weights(1, "exp").tolist() == [1.0]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: layer_weights(4, "cubic"), "valid: uniform, final, last_k, linear, exp"),
        (lambda: layer_weights(4, "last_k"), "last_k needs an integer k in 1..4"),
        (lambda: layer_weights(4, "last_k", k=5), "last_k needs an integer k in 1..4"),
        (lambda: layer_weights(4, "uniform", k=2), "takes no parameter k"),
        (lambda: layer_weights(4, "exp", alpha=1), "valid: k"),
        (lambda: layer_weights(0, "uniform"), "positive integer"),
        (lambda: parse_schedule("exp:abc"), "must be a number"),
        (lambda: parse_schedule("linear:2"), "takes no parameter"),
    ],
)
def test_layer_weights_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_parse_schedule():
    assert parse_schedule("uniform") == ("uniform", {})
    assert parse_schedule("last_k:2") == ("last_k", {"k": 2.0})
    assert parse_schedule("exp:0.5") == ("exp", {"k": 0.5})


def test_convergence_score_closed_form():
    d = [0.1, 0.3, 0.2, 0.6]  # increases 0.2 and 0.4, decreases 0.1
    assert math.isclose(convergence_score(d), 1 - 0.6 / 0.7)
    assert convergence_score([0.5, 0.4, 0.4, 0.1]) == 1.0
    assert convergence_score(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)) == 0.0
    assert convergence_score([0.3]) == 1.0  # one layer
    assert math.isclose(convergence_score([0.1, 0.4]), 0.0)  # two layers, increasing
    assert convergence_score([0.4, 0.1]) == 1.0


def test_jump_ratio_closed_form():
    assert math.isclose(jump_ratio([0.1, 0.2, 0.5]), 2.5)
    assert math.isclose(jump_ratio(torch.tensor([0.4, 0.2])), 0.5)
    assert jump_ratio([0.1, 0.0, 0.3]) == float("inf")
    with pytest.raises(ValueError, match="at least two layers"):
        jump_ratio([0.3])


def test_jump_rate_closed_form():
    d = [0.4, 0.1, 0.3, 0.2, 0.5]  # rises at layers 3 (+0.2) and 5 (+0.3), falls elsewhere
    assert math.isclose(jump_rate(d), 30.0)  # zeta_L = 100 * (0.5 - 0.2)
    assert math.isclose(jump_rate(d, layer=5), 30.0)
    assert math.isclose(jump_rate(d, layer=4), 30.0)
    assert math.isclose(jump_rate(d, layer=3), 50.0)
    assert math.isclose(jump_rate(d, layer=2), 50.0)
    assert jump_rate([0.3, 0.2, 0.1]) == 0.0  # D_L below D_{L-1}: no final jump
    assert math.isclose(jump_rate(torch.tensor([0.1, 0.25], dtype=torch.float64)), 15.0)
    with pytest.raises(ValueError, match="at least two layers"):
        jump_rate([0.3])
    for layer in (1, 6):
        with pytest.raises(ValueError, match=r"layer must be in 2\.\.5"):
            jump_rate(d, layer=layer)


def test_metrics_import_without_torch():
    """The report and plots rely on it: megatron_ext.metrics must not import torch."""
    code = "import sys, megatron_ext.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
