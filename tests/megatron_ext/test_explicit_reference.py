"""Single process: JREG's attached per-layer terms give the gradient of the explicit loss, and
REG=none is bit-identical to a plain Megatron GPTModel (see reference.py)."""

import pytest
import torch

from tests.helpers import torchrun
from tests.megatron_ext.test_megatron_parallel import TOL, worst_grad_err


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    torchrun(1, "tests.megatron_ext.reference", ["--out", str(out)], timeout=300)
    return torch.load(out / "reference.pt", weights_only=False)


@pytest.mark.parametrize("reg", ["jreg", "l2rel"])
def test_gradient_equals_explicit_reference(results, reg):
    r = results[reg]
    err, where = worst_grad_err(r["grads"], r["ref_grads"])
    assert err < TOL, f"{where}: {err:.2e}"
    # the regulariser matters: CE alone is far from the reference
    ce_err, _ = worst_grad_err(r["ce_grads"], r["ref_grads"])
    assert ce_err > 100 * TOL


@pytest.mark.parametrize("reg", ["jreg", "l2rel"])
def test_logged_d_and_loss_equal_reference(results, reg):
    r = results[reg]
    d = [r["report"][f"jump/D_{i:02d}"] for i in range(1, len(r["ref_d"]) + 1)]
    assert d == pytest.approx(r["ref_d"], rel=TOL)
    if reg == "jreg":
        expected = sum(w * x for w, x in zip(r["weights"], r["ref_d"], strict=True))
        assert r["report"]["jreg/loss"] == pytest.approx(expected, rel=TOL)
        assert r["report"]["jreg/loss_scaled"] == pytest.approx(1.0 * expected, rel=TOL)


def test_reg_none_is_bit_identical_to_plain_gptmodel(results):
    r = results["plain"]
    assert r["loss"] == r["plain_loss"]
    assert r["grads"].keys() == r["plain_grads"].keys()
    for name, grad in r["grads"].items():
        assert torch.equal(grad, r["plain_grads"][name]), name
    assert r["report"]["jreg/loss_scaled"] == 0.0 and r["report"]["jump/D_01"] > 0
