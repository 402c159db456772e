"""JREG inside Megatron-Core, exact under TP/SP/PP/VPP/DP, as real gloo processes on CPU.

Every layout runs one step of Megatron's own schedules (DDP + finalize_model_grads) from the same
seed-determined weights; loss, every parameter gradient and every logged D_l must match the
single-process run, which itself must match an explicit reference computed from hidden states.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import torchrun

TOL = 1e-5
NUM_LAYERS = 4
NUM_MICROBATCHES = 4


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def worst_grad_err(grads: dict, ref: dict) -> tuple[float, str]:
    assert grads.keys() == ref.keys()
    return max((rel_err(grads[k], ref[k]), k) for k in ref)


def run_layouts(tmp_path_factory, nproc: int, layouts: list[dict], jreg: dict | None = None):
    out = tmp_path_factory.mktemp(f"world{nproc}")
    args = ["--layouts", json.dumps(layouts), "--out", str(out)]
    if jreg is not None:
        args += ["--jreg", json.dumps(jreg)]
    torchrun(nproc, "tests.megatron_ext.scenarios", args, timeout=400)
    return {layout["name"]: assemble(out, layout["name"], nproc) for layout in layouts}


def assemble(out, name: str, nproc: int) -> dict:
    """Full gradients from every rank's pieces; the loss from the last stage; rank 0's report."""
    grads, loss, reports, counts = {}, None, [], []
    for rank in range(nproc):
        res = torch.load(out / f"rank{rank}.pt", weights_only=False)[name]
        loss = res["loss"] if res["loss"] is not None else loss
        reports.append(res["report"])
        counts.append(res["counts"])
        for gname, (shape, pieces) in res["grads"].items():
            full = grads.setdefault(gname, torch.full(shape, float("nan"), dtype=torch.float64))
            for gsl, value in pieces:
                full[gsl] = value.double()
    for gname, full in grads.items():
        assert not torch.isnan(full).any(), f"{name}: {gname} not fully covered by the shards"
    assert all(r == reports[0] for r in reports), f"{name}: ranks disagree on the reduced report"
    return {"loss": loss, "grads": grads, "report": reports[0], "counts": counts}


SINGLE = [
    {"name": "ref"},
    {"name": "full_uniform", "overrides": {"recompute_granularity": "full",
                                           "recompute_method": "uniform", "recompute_num_layers": 1}},
    {"name": "full_block", "overrides": {"recompute_granularity": "full",
                                         "recompute_method": "block", "recompute_num_layers": 2}},
    {"name": "selective", "overrides": {"recompute_granularity": "selective"}},
    {"name": "per_token", "per_token": True},
]  # fmt: skip
WORLD2 = [
    {"name": "dp2"},
    {"name": "tp2", "tp": 2},
    {"name": "tp2_sp", "tp": 2, "sp": True},
    {"name": "tp2_sp_per_token", "tp": 2, "sp": True, "per_token": True},
    {"name": "pp2", "pp": 2},
    {"name": "pp2_vpp2", "pp": 2, "vpp": 2},
]
WORLD4 = [
    {"name": "tp2_pp2_sp", "tp": 2, "pp": 2, "sp": True},
    {"name": "tp2_pp2", "tp": 2, "pp": 2},
]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return run_layouts(tmp_path_factory, 1, SINGLE)


@pytest.fixture(scope="module")
def single_no_reg(tmp_path_factory):
    return run_layouts(tmp_path_factory, 1, [{"name": "ref"}], jreg={"reg": "none"})


@pytest.fixture(scope="module")
def world2(tmp_path_factory):
    return run_layouts(tmp_path_factory, 2, WORLD2)


@pytest.fixture(scope="module")
def world4(tmp_path_factory):
    return run_layouts(tmp_path_factory, 4, WORLD4)


def assert_matches(run: dict, ref: dict, name: str):
    assert run["loss"] == pytest.approx(ref["loss"], rel=TOL), name
    err, where = worst_grad_err(run["grads"], ref["grads"])
    assert err < TOL, f"{name}: gradient of {where} off by {err:.2e} (relative to its max)"
    for key, value in ref["report"].items():
        assert run["report"][key] == pytest.approx(value, rel=TOL, abs=1e-9), f"{name}: {key}"


def test_reference_logs_every_layer(single):
    report = single["ref"]["report"]
    expected = {"jreg/loss", "jreg/loss_scaled", "jump/ratio", "jump/S_model", "jump/zeta_L"}
    expected |= {f"jump/D_{i:02d}" for i in range(1, NUM_LAYERS + 1)}
    assert set(report) == expected
    assert all(0 < report[f"jump/D_{i:02d}"] < 1 for i in range(1, NUM_LAYERS + 1))
    # one record per layer per microbatch
    assert single["ref"]["counts"] == [[NUM_MICROBATCHES] * NUM_LAYERS]


def test_regulariser_changes_gradients(single, single_no_reg):
    """The comparisons below would be vacuous if JREG hardly moved the gradients."""
    err, _ = worst_grad_err(single["ref"]["grads"], single_no_reg["ref"]["grads"])
    assert err > 100 * TOL
    assert single["ref"]["loss"] == single_no_reg["ref"]["loss"]  # same init, same LM loss


@pytest.mark.parametrize("name", ["full_uniform", "full_block", "selective"])
def test_recompute_matches_and_records_once(single, name):
    assert_matches(single[name], single["ref"], name)
    assert single[name]["counts"] == [[NUM_MICROBATCHES] * NUM_LAYERS], "D_l recorded twice"


def test_per_token_loss_mode(single):
    # equal token counts per microbatch: per-token normalisation equals the per-microbatch one
    assert_matches(single["per_token"], single["ref"], "per_token")


@pytest.mark.parametrize("name", [layout["name"] for layout in WORLD2])
def test_two_process_layouts_match_single(world2, single, name):
    assert_matches(world2[name], single["ref"], name)


@pytest.mark.parametrize("name", [layout["name"] for layout in WORLD4])
def test_tp2_x_pp2_matches_single(world4, single, name):
    assert_matches(world4[name], single["ref"], name)
