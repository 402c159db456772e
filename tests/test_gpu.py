"""GPU-only checks (skipped on CPU machines; run them on a GPU node with `make test`).

Those that need Transformer Engine (its spec, FP8, CP) skip where it is not installed; the
bf16 run on whichever spec the machine has (local without TE) runs on every GPU.

What CPU runs cannot show: the Transformer Engine layer spec, FP8 (hybrid, tensorwise scaling) and
NCCL. The same end-to-end path as the CPU tests, on the GPU defaults the launcher picks.
"""

import math

import pytest
import torch

from megatron_ext.config import te_available
from tests.helpers import requires_gpu, run_checked
from tests.test_pretrain import LAUNCH, read_metrics, train_lines

requires_te = pytest.mark.skipif(not te_available(), reason="needs Transformer Engine")


@requires_gpu
def test_bf16_pretrain_runs_on_this_machines_spec(tmp_path, smoke_data):
    """bf16 on the spec the launcher picks: local (no TE, the no-Apex flags) or TE."""
    code, out = run_checked(LAUNCH + [f"RUN={tmp_path / 'gpu'}", f"DATA={smoke_data}", "ITERS=10",
                                      "LOG_INTERVAL=5", "SAVE_INTERVAL=5", "NPROC=1", "FP8=off"], 900)  # fmt: skip
    assert code == 0, out[-5000:]
    impl = "transformer_engine" if te_available() else "local"
    assert f"--transformer-impl {impl}" in (tmp_path / "gpu" / "command.txt").read_text()
    lines = train_lines(read_metrics(tmp_path / "gpu"))
    assert len(lines) == 2 and all(math.isfinite(x["lm_loss"]) for x in lines)


@requires_gpu
@requires_te
def test_te_fp8_pretrain_runs(tmp_path, smoke_data):
    code, out = run_checked(LAUNCH + [f"RUN={tmp_path / 'gpu'}", f"DATA={smoke_data}", "ITERS=20",
                                      "LOG_INTERVAL=5", "SAVE_INTERVAL=10", "NPROC=1"], 900)  # fmt: skip
    assert code == 0, out[-5000:]
    assert "--transformer-impl transformer_engine" in (tmp_path / "gpu" / "command.txt").read_text()
    lines = train_lines(read_metrics(tmp_path / "gpu"))
    assert len(lines) == 4 and all(math.isfinite(x["lm_loss"]) for x in lines)
    assert lines[-1]["lm_loss"] < lines[0]["lm_loss"]


@requires_gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
@pytest.mark.parametrize(
    "layout", [["TP=2"], pytest.param(["CP=2"], marks=requires_te)], ids=["tp2", "cp2"]
)
def test_two_gpu_layouts_match_one_gpu(tmp_path, smoke_data, layout):
    """NCCL TP+SP, and context parallelism (TE attention; JREG's local mean divided by CP)."""
    runs = {}
    for name, extra in {"one": ["NPROC=1"], "two": ["NPROC=2", *layout]}.items():
        code, out = run_checked(LAUNCH + [f"RUN={tmp_path / name}", f"DATA={smoke_data}", "ITERS=2",
                                          "LOG_INTERVAL=1", "FP8=off", *extra], 900)  # fmt: skip
        assert code == 0, out[-5000:]
        runs[name] = train_lines(read_metrics(tmp_path / name))
    for a, b in zip(runs["one"], runs["two"], strict=True):  # bf16: loose tolerances
        assert b["lm_loss"] == pytest.approx(a["lm_loss"], rel=2e-2)
        assert b["jreg_loss"] == pytest.approx(a["jreg_loss"], rel=5e-2)
