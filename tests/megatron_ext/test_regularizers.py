"""The regulariser registry (names read without import == names registered on import, dispatch to
a fused twin, errors) and the named metrics (one naming table, reduce ops, one collective)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from common.ports import free_port
from megatron_ext import regularizers
from megatron_ext.metrics import METRICS, Metric, console, from_scalars, to_scalars
from megatron_ext.regconfig import JregConfig
from megatron_ext.tracker import JumpTracker, MetricBuffers


def test_scanned_names_equal_the_imported_registry():
    """What the launcher and train.py accept (read from the files) is what training can use."""
    registry = regularizers.discover()
    assert regularizers.scan() == {name: r.help for name, r in registry.items()}
    assert regularizers.choices() == ["none", *registry, "selfdistill"]
    assert {"jreg", "l2rel"} <= registry.keys() and all(r.help for r in registry.values())


def test_launcher_validates_with_the_registry():
    import launcher
    from launcher.settings import VARIABLES

    with pytest.raises(launcher.LaunchError) as info:
        launcher.plan({"REG": "bogus"})
    assert str(info.value) == f"unknown REG 'bogus'; valid: {', '.join(regularizers.choices())}"
    assert " | ".join(regularizers.choices()) in VARIABLES["REG"]


def test_unknown_and_none():
    assert regularizers.get("none") is None
    assert regularizers.get("selfdistill") is None  # attached at the output, not per layer
    with pytest.raises(ValueError, match="unknown REG 'bogus'; valid: jreg, l2rel, none, selfd"):
        regularizers.get("bogus")


def test_registration_dispatches_to_its_fused_twin(monkeypatch):
    calls = []
    reg = regularizers.Regularizer(
        name="twin", fn=lambda a, b: (b - a).norm(dim=-1),
        fused=lambda a, b: calls.append(1) or (b - a).norm(dim=-1),
    )  # fmt: skip
    a, b = torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    assert torch.equal(reg(a, b), reg(a, b, impl="eager")) and not calls  # CPU: eager
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    reg(a, b, impl="triton")
    assert calls == [1]
    plain = regularizers.Regularizer(name="plain", fn=lambda a, b: a.sum(-1))
    with pytest.raises(ValueError, match="plain: has no fused implementation"):
        plain(a, b, impl="triton")
    with pytest.raises(ValueError, match="plain: shapes differ"):
        plain(a, b[:1])


def test_registering_a_name_twice_or_a_bad_name_fails():
    regularizers.discover()
    with pytest.raises(regularizers.RegistryError, match="registered twice"):
        regularizers.register("jreg")(lambda a, b: a)
    with pytest.raises(regularizers.RegistryError, match="must be an identifier"):
        regularizers.register("none")


def test_l2rel_tracks_its_own_values():
    cfg = JregConfig(reg="l2rel", num_layers=2, lam=0.5)
    tracker = JumpTracker.from_config(cfg)
    for layer in (1, 2):
        tracker.record(layer, torch.tensor(0.1 * layer), torch.tensor(layer * 1.0))
    tracker.record_lm_loss(torch.tensor(6.0), torch.tensor(3), training=True)
    report = tracker.report()
    line = from_scalars(report)
    assert line["D"] == pytest.approx([0.1, 0.2]) and line["R"] == [1.0, 2.0]
    assert line["lm_loss"] == 2.0
    assert line["jreg_loss"] == pytest.approx(1.5) and line["jreg_loss_scaled"] == 0.75
    assert to_scalars(line) == report  # one naming scheme, both ways


def test_console_line_from_the_naming_table():
    line = {"lm_loss": 2.0, "jreg_loss": 0.1, "D": [0.3, 0.2], "jump_ratio": 0.5,
            "S_model": 1.0, "zeta_L": 0.0}  # fmt: skip
    assert console(line) == (
        "lm_loss 2.0000 | jreg_loss 0.10000 | D_L 0.2000 | jump ratio 0.500 | "
        "S_model 1.000 | zeta_L 0.000"
    )
    assert len({m.key for m in METRICS}) == len({m.tag for m in METRICS}) == len(METRICS)


OPS = [
    Metric(key="s", tag="t/s", reduce="sum"),
    Metric(key="m", tag="t/m", reduce="mean", per_layer=True),
    Metric(key="hi", tag="t/hi", reduce="max"),
    Metric(key="lo", tag="t/lo", reduce="min", per_layer=True),
]


def _record(buffers: MetricBuffers, rank: int) -> None:
    for step in range(2):
        values = {"s": (1.0 + rank, None), "m": (10.0 * rank + step, 1 + rank),
                  "hi": (rank * 3.0 + step, None), "lo": (rank - step, 2)}  # fmt: skip
        for key, (value, layer) in values.items():
            if key in buffers.metrics:
                buffers.add("train", key, torch.tensor(float(value)), layer=layer)


def _worker(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    calls = []
    for name in ("all_reduce", "all_gather"):
        real = getattr(torch.distributed, name)
        setattr(torch.distributed, name, lambda *a, _real=real, _n=name, **k: calls.append(_n)
                or _real(*a, **k))  # fmt: skip
    for label, ops in (("all", OPS), ("additive", OPS[:2])):
        buffers = MetricBuffers(ops, num_layers=2)
        _record(buffers, rank)
        calls.clear()
        out[(label, rank)] = (buffers.reduce(buffers.take("train")), list(calls))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_every_reduce_op_in_one_collective_over_two_ranks():
    port = free_port()
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(port, out), nprocs=2)
    (r0, calls0), (r1, calls1) = out[("all", 0)], out[("all", 1)]
    assert r0 == r1 and calls0 == calls1 == ["all_gather"]  # max/min: one all-gather
    assert r0["s"] == 2 * 1.0 + 2 * 2.0
    # layer 1 only on rank 0 (0, 1), layer 2 only on rank 1 (10, 11)
    assert r0["m"] == [0.5, 10.5]
    assert r0["hi"] == 4.0 and r0["lo"][1] == -1.0
    assert r0["lo"][0] == float("inf")  # no rank recorded layer 1: left as is
    (a0, calls0), (a1, calls1) = out[("additive", 0)], out[("additive", 1)]
    assert calls0 == calls1 == ["all_reduce"]  # sum and mean only: one all-reduce
    assert a0 == a1 == {"s": 6.0, "m": [0.5, 10.5]}
