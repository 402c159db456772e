"""``REG=selfdistill``'s loss equals a float64 reference that holds every layer's full logits at
once: values, per-layer metrics and gradients, at TP=1 (in process, uneven token chunks) and at
TP=2 with and without SP (vocabulary-parallel head under torchrun over gloo, the cross-rank
log-sum-exp; SP: the tokens gathered for the head, the norm's gradient in parts)."""

from __future__ import annotations

import pytest
import torch

from megatron_ext.sd_settings import SelfDistillConfig
from megatron_ext.selfdistill import layer_weights
from tests.helpers import torchrun
from tests.megatron_ext import selfdistill_cases as sc

KEYS = ("loss", "zeta_1", "zeta_2", "kl", "rel", "g_hiddens", "g_norm", "g_head")


def assert_close(got: dict, ref: dict, case: str):
    for key in KEYS:
        torch.testing.assert_close(got[key], ref[key], rtol=1e-10, atol=1e-12, msg=f"{case} {key}")


def test_paper_weights():
    w = layer_weights(16)
    assert float(w.sum()) == pytest.approx(1.0)
    assert float(w[16] / w[15]) == pytest.approx(torch.e**0.25)


@pytest.mark.parametrize("bad", [{"direction": "reverse"}, {"teacher": "ema"}, {"alpha": -1.0}])
def test_bad_settings_raise(bad):
    with pytest.raises(ValueError, match=next(iter(bad.values())).__str__()[:3]):
        SelfDistillConfig(**bad)


@pytest.mark.parametrize("case", sorted(sc.CASES))
def test_tp1_matches_reference(case):
    x = sc.inputs()
    ref = sc.reference(sc.CASES[case], x)
    assert float(ref["zeta_1"]) > 1e-3 and float(ref["g_head"].abs().max()) > 1e-6  # not vacuous
    assert_close(sc.run(sc.CASES[case], x), ref, case)


def test_self_teacher_last_layer_kl_is_zero():
    got = sc.run(sc.CASES["paper_self"], sc.inputs())
    assert float(got["kl"][-1]) == pytest.approx(0.0, abs=1e-12)
    assert float(got["kl"][0]) > 1e-2


@pytest.mark.slow
def test_tp2_and_sp_match_reference(tmp_path):
    torchrun(2, "tests.megatron_ext.selfdistill_cases", [str(tmp_path)], timeout=120)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    x = sc.inputs()
    half = sc.SEQ // 2
    for case, cfg in sc.CASES.items():
        ref = sc.reference(cfg, x)
        for sp in (False, True):
            name = f"{case} sp={sp}"
            runs = [got[case, sp] for got in ranks]
            for run in runs:  # the loss and the metrics are the same on every rank
                for key in ("loss", "zeta_1", "zeta_2", "kl", "rel"):
                    torch.testing.assert_close(run[key], ref[key], rtol=1e-10, atol=1e-12,
                                               msg=f"{name} {key}")  # fmt: skip
            g_h = [r["g_hiddens"] for r in runs]
            g_h = torch.cat(g_h, dim=1) if sp else g_h[0]  # SP: each rank's tokens
            g_norm = sum(r["g_norm"] for r in runs) if sp else runs[1]["g_norm"]  # SP: partial
            g_head = torch.cat([r["g_head"] for r in runs])  # the head's rows, reassembled
            if not sp:
                torch.testing.assert_close(runs[0]["g_hiddens"], runs[1]["g_hiddens"])
                torch.testing.assert_close(runs[0]["g_norm"], runs[1]["g_norm"])
            got = {"g_hiddens": g_h, "g_norm": g_norm, "g_head": g_head}
            for key, value in got.items():
                torch.testing.assert_close(value, ref[key], rtol=1e-10, atol=1e-12,
                                           msg=f"{name} {key}")  # fmt: skip
            assert g_h.shape[1] == 2 * half
