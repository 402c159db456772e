"""`make bench` in its shortened form (--smoke): it runs, writes its table and JSON, and shows that
the regulariser saves no activations beyond per-token scalars in a real Megatron model."""

import json
import sys

import pytest

from tests.helpers import run_checked


@pytest.mark.slow
def test_bench_smoke(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "bench", "--smoke", "--device", "cpu",
           "--out", str(out)]  # fmt: skip
    code, log = run_checked(cmd, timeout=600)
    assert code == 0, log[-5000:]
    assert "## train tiny-2L" in log and "## displacement alone" in log
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["repeats"] == 2
    (train,) = report["train"]
    regs = train["regs"]
    assert set(regs) == {"none", "jreg", "l2rel", "selfdistill"}
    for r in regs.values():
        assert len(r["seconds"]["repeats"]) == 2 and r["tokens_per_s"] > 0
    # JREG keeps the layer inputs/outputs (alive anyway) plus per-token fp32 scalars per layer
    # (displacement: |a|, |b|, cos; l2rel also: |d|, |a| and the no-grad psi)
    tokens, layers = train["tokens_per_step"] // train["microbatches"], train["num_layers"]
    scalars_mib = layers * tokens * 4 * 6 / 2**20
    for reg in ("jreg", "l2rel"):
        key = "saved_activations_mib_per_microbatch"
        extra = regs[reg][key] - regs["none"][key]
        assert 0 <= extra <= scalars_mib, (reg, extra, scalars_mib)
    (row_psi, row_l2) = report["kernel"]["rows"]
    assert row_psi["impl"] == "eager" and row_psi["achieved_gbs"] > 0


BAD = [(["--repeats", "0"], "--repeats must be >= 1"), (["--parts", "train,gpu"], "--parts takes")]


@pytest.mark.parametrize("argv, message", BAD)
def test_bench_bad_arguments(argv, message):
    code, log = run_checked([sys.executable, "-m", "bench", *argv], timeout=60)
    assert code == 2 and f"error: {message}" in log, log


LEAK_CHECK = """
import gc, json, torch
import bench.parts as P

def live():
    return sum(o.untyped_storage().nbytes() for o in gc.get_objects() if torch.is_tensor(o))

counted, growth = P._saved_bytes, []
def spy(forward, params):
    gc.collect(); before = live()
    out = counted(forward, params)
    gc.collect(); growth.append(live() - before)
    return out
P._saved_bytes = spy
P._init_distributed("cpu")
P._train_one(P._shapes("cpu", True)[0], "cpu", 1, 0, None)
print("GROWTH", json.dumps(growth))
"""


@pytest.mark.slow
def test_saved_activation_count_frees_its_graph():
    """Counting one variant's saved activations leaves no graph alive: on an H200 the 1b shape's
    graphs piled up (one per variant, ~67 GiB each) until memory ran out."""
    code, log = run_checked([sys.executable, "-c", LEAK_CHECK], timeout=300)
    assert code == 0, log[-5000:]
    growth = json.loads(log.split("GROWTH", 1)[1].strip().splitlines()[0])
    assert len(growth) == 4 and max(growth) == 0, growth
