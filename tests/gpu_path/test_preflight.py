"""`make preflight` on CPU: what can run without a GPU (the table, exit codes, the no-GPU exit,
the TE-vs-local comparison logic on two local-spec models, the FLOP count)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from preflight.runs import flops_per_token
from preflight.table import Check, exit_code, render
from tests.helpers import requires_gpu, run_checked, torchrun


def test_table_and_exit_codes():
    checks = [Check(name="nccl all-reduce", ok=True, value="8 GPUs: 350 GB/s"),
              Check(name="fp8 available", ok=False, value="Device compute capability 9.0 needed")]  # fmt: skip
    table = render(checks).splitlines()
    assert table[0] == "PASS  nccl all-reduce  8 GPUs: 350 GB/s"
    assert table[1] == "FAIL  fp8 available    Device compute capability 9.0 needed"
    assert table[2] == "preflight: 2 checks, 1 of 2 failed"
    assert exit_code(checks) == 1
    assert exit_code(checks[:1]) == 0 and render(checks[:1]).endswith("all passed\n")
    assert exit_code([]) == 1  # nothing checked is not a pass
    with pytest.raises(ValueError, match="one-line"):
        Check(name="x", ok=True, value="two\nlines")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_no_gpu_exits_2_with_one_line():
    code, out = run_checked([sys.executable, "-m", "preflight"], 120)
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: make preflight needs a GPU"), out


def test_spec_comparison_passes_same_model_and_fails_drift(tmp_path):
    out = tmp_path / "probe.json"
    torchrun(1, "tests.gpu_path.preflight_probe", ["--out", str(out)], timeout=300)
    result = json.loads(out.read_text())
    same = {c["name"]: c for c in result["same"]}
    assert all(c["ok"] for c in same.values()), same
    assert "loss" in same["local == local (iteration 1)"]["value"]
    gains = same["init norm gains = 1 (local)"]["value"]
    assert gains == "9/9 are 1"  # 4 layers x 2 + the final norm
    other = {c["name"]: c for c in result["other_seed"]}
    assert not other["local == local (iteration 1)"]["ok"]
    assert not result["tampered"]["ok"] and result["tampered_gains"] == [9, 9]


def test_flops_per_token_llama_1b():
    # 16 layers: per layer QKV 2048 x 3072, proj 2048^2, SwiGLU 3 x 2048 x 8192; logits 2048 x V
    per_layer = 2048 * 3072 + 2048 * 2048 + 3 * 2048 * 8192
    want = 3 * (2 * 16 * per_layer + 2 * 16 * 2 * 4096 * 2048 + 2 * 2048 * 128256)
    assert flops_per_token(16, 2048, 8192, 32, 8, 4096, 128256) == want


@requires_gpu
def test_preflight_on_this_gpu():
    code, out = run_checked([sys.executable, "-m", "preflight"], 900)
    assert code == 0, out[-5000:]


@pytest.mark.slow
def test_layout_runs_through_the_launcher_on_cpu(tmp_path, smoke_data):
    """The 1 -> 2 process comparison, run through the real launcher (gloo, fp32 on CPU)."""
    from preflight.runs import layouts

    checks = layouts(tmp_path, smoke_data, ngpu=2, te=False)
    assert [c.name for c in checks] == ["1 -> 2 GPUs TP=2 SP", "1 -> 2 GPUs PP=2"]
    assert all(c.ok for c in checks), render(checks)


def test_throughput_numbers_from_run_outputs(monkeypatch, tmp_path):
    """tokens/s/GPU, TFLOP/s, MFU, peak memory and the JREG/none ratio from (stand-in) runs."""
    from preflight import runs

    step = {"none": 1.0, "jreg": 1.2}
    seen = []

    def fake_launch(run_dir, data, settings):
        reg = next(s for s in settings if s.startswith("REG="))[4:]
        seen.append(settings)
        lines = [{"iteration": i, "lm_loss": 7.0, "D": [0.1] * 4, "step_time_s": step[reg]}
                 for i in range(1, 9)]  # fmt: skip
        # Megatron's memory report is in the run's log, not on the console
        (run_dir / "logs").mkdir(parents=True)
        (run_dir / "logs" / "1.log").write_text("... | max allocated: 20480.0 | reserved: ...\n")
        return lines, "iter 8/8 | ..."

    monkeypatch.setattr(runs, "launch", fake_launch)
    checks = runs.throughput(tmp_path, tmp_path, ngpu=1, peak_tflops=800.0, fp8=False)
    assert [c.name for c in checks] == ["1b/4L bf16 REG=none", "1b/4L bf16 REG=jreg",
                                        "JREG/none step time (bf16)"]  # fmt: skip
    tokens = 8 * 2 * 4096  # micro batch 8 x 2 microbatches x 4096 tokens per 1 s step
    tflops = flops_per_token(4, 2048, 8192, 32, 8, 4096, 1024) * tokens / 1e12
    assert (
        f"{tokens:,.0f} tok/s/GPU, {tflops:.0f} TFLOP/s, MFU {tflops / 800:.0%}" in checks[0].value
    )
    assert "peak mem 20.0 GiB" in checks[0].value and checks[0].ok
    assert checks[2].value == "1.200 (< 1.5)" and checks[2].ok
    assert "ARGS=--num-layers 4 --global-batch-size 16 --eval-iters 1" in seen[0]
