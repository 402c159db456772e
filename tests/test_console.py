"""What `make pretrain` prints: the plan with the resolved layer weights, progress, summary, logs."""

from __future__ import annotations

import re

import pytest

from megatron_ext.jreg import layer_weights
from tests.test_pretrain import launch


@pytest.mark.parametrize(
    "weights, schedule, kw",
    [("uniform", "uniform", {}), ("exp:0.5", "exp", {"k": 0.5}), ("last_k:3", "last_k", {"k": 3})],
)
def test_plan_prints_resolved_layer_weights(tmp_path, smoke_data, weights, schedule, kw):
    code, out = launch(RUN=tmp_path / "w", DATA=smoke_data, WEIGHTS=weights, DRY_RUN=1)
    assert code == 0, out
    plan = out.splitlines()[0]
    match = re.search(r"WEIGHTS=\S+ \[w_1\.\.w_4: ([^\]]+)\]", plan)
    assert match, plan
    printed = [float(x) for x in match[1].split()]
    assert printed == pytest.approx(layer_weights(4, schedule, **kw).tolist(), abs=5e-5)


def test_plan_has_no_weights_without_regulariser(tmp_path, smoke_data):
    code, out = launch(RUN=tmp_path / "w", DATA=smoke_data, REG="none", DRY_RUN=1)
    assert code == 0, out
    assert "w_1" not in out.splitlines()[0]
