"""REG=selfdistill in training: exact through Megatron's schedule under DP, TP, TP + SP (also
with selective recompute and per-token loss) against an explicit one-process reference (one
torchrun start); its metrics in the tracker; the one-line refusals of what it cannot run."""

from __future__ import annotations

import pytest
import torch

from megatron_ext import sd_settings
from tests.helpers import torchrun
from tests.megatron_ext.test_megatron_parallel import assemble, worst_grad_err

TOL = 1e-5


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(direction -> layout -> assembled run, plus ``reference``), from one torchrun start."""
    out = tmp_path_factory.mktemp("selfdistill_train")
    torchrun(2, "tests.megatron_ext.selfdistill_train_cases", ["--out", str(out)], timeout=300)
    got = {}
    for direction in ("paper", "forward"):
        rank0 = torch.load(out / direction / "rank0.pt", weights_only=False)
        got[direction] = {
            name: assemble(out / direction, name, 2) for name in rank0 if name != "reference"
        }
        got[direction]["reference"] = rank0["reference"]
    assert len(got["paper"]) == 5 and len(got["forward"]) == 2
    return got


@pytest.mark.slow
def test_training_path_matches_explicit_reference(runs):
    for direction, layouts in runs.items():
        ref = runs[direction]["reference"]
        assert ref["metrics"]["zeta_1"] > 1e-4 and ref["metrics"]["KL"][0] > 1e-4
        err, grad = worst_grad_err(ref["ce_grads"], ref["grads"])
        assert err > 0.1, f"the term hardly moves the gradients ({grad}: {err:.2e}): vacuous"
        for name, run in layouts.items():
            if name == "reference":
                continue
            where = f"{direction} {name}"
            assert run["loss"] == pytest.approx(ref["loss"], rel=TOL), where
            err, grad = worst_grad_err(run["grads"], ref["grads"])
            assert err < TOL, f"{where}: gradient of {grad} off by {err:.2e}"
            report = run["report"]
            for key in ("zeta_1", "zeta_2"):
                got = report[f"selfdistill/{key}"]
                assert got == pytest.approx(ref["metrics"][key], rel=TOL, abs=1e-7), (
                    f"{where} {key}"
                )
            kl = [
                report[f"selfdistill/KL_{layer:02d}"] for layer in range(len(ref["metrics"]["KL"]))
            ]
            assert kl == pytest.approx(ref["metrics"]["KL"], rel=TOL, abs=1e-7), where


@pytest.mark.slow
def test_self_teacher_last_kl_is_zero(runs):
    ref = runs["paper"]["reference"]
    assert ref["metrics"]["KL"][-1] == pytest.approx(0.0, abs=1e-6)  # q_L against itself


@pytest.mark.parametrize(
    "layout, words",
    [
        ({"pp": 2, "vpp": None, "cp": 1, "recompute": None}, "PP=1"),
        ({"pp": 1, "vpp": None, "cp": 2, "recompute": None}, "CP=1"),
        ({"pp": 1, "vpp": None, "cp": 1, "recompute": "full"}, "selective recompute"),
        (
            {"pp": 1, "vpp": None, "cp": 1, "recompute": None, "teacher": "frozen"},
            "SD_TEACHER=frozen needs INIT=",
        ),
        (
            {"pp": 1, "vpp": None, "cp": 1, "recompute": None, "grad_accum_fusion": True},
            "--no-gradient-accumulation-fusion",
        ),
    ],
)
def test_refusals_are_one_line(layout, words):
    why = sd_settings.refusal(**layout)
    assert why and "\n" not in why and words in why
    assert sd_settings.refusal(pp=1, vpp=None, cp=1, recompute="selective") is None
    assert (
        sd_settings.refusal(pp=1, vpp=None, cp=1, recompute=None, teacher="frozen", init=True)
        is None
    )


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"REG": "selfdistill", "PP": "2"}, "needs PP=1"),
        ({"REG": "selfdistill", "SD_TEACHER": "frozen"}, "SD_TEACHER=frozen needs INIT="),
        ({"REG": "selfdistill", "SD_DIRECTION": "reverse"}, "SD_DIRECTION must be one of"),
        ({"REG": "selfdistill", "SD_ALPHA": "-1"}, "SD_ALPHA must be"),
        ({"REG": "jreg", "SD_K": "0.5"}, "SD_K applies to REG=selfdistill only"),
        ({"REG": "selfdistill", "ARGS": "--recompute-granularity full"}, "selective recompute"),
    ],
)
def test_launcher_refuses_with_one_line(settings, words, capsys):
    from launcher.cli import main

    argv = [f"{k}={v}" for k, v in settings.items()] + ["DRY_RUN=1", "NPROC=2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err, err


@pytest.mark.slow
def test_make_pretrain_logs_selfdistill_metrics(smoke_data, tmp_path):
    """``python -m launcher REG=selfdistill``: 2 iterations; zeta_1, zeta_2 and KL_0..KL_L in
    metrics.jsonl (training and validation lines), the SD_* settings in run_config.json."""
    import json
    import sys

    from tests.helpers import run_checked

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "launcher", f"RUN={run_dir}", f"DATA={smoke_data}",
           "REG=selfdistill", "LAMBDA=0.5", "SD_ALPHA=0.5", "ITERS=2", "LOG_INTERVAL=1",
           "SAVE_INTERVAL=100"]  # fmt: skip
    code, out = run_checked(cmd, 300)
    assert code == 0, out[-5000:]
    config = json.loads((run_dir / "run_config.json").read_text())
    assert config["reg"]["reg"] == "selfdistill" and config["reg"]["lam"] == 0.5
    assert config["reg"]["selfdistill"] == {"k": 0.25, "alpha": 0.5, "direction": "paper",
                                            "teacher": "self", "chunk_tokens": 512}  # fmt: skip
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    layers = config["model"]["num_layers"]
    train = [x for x in lines if "split" not in x]
    assert [x["iteration"] for x in train] == [1, 2]
    assert any(x.get("split") == "valid" for x in lines)
    for x in lines:
        assert x["zeta_1"] > 0 and x["zeta_2"] > 0 and len(x["KL"]) == layers + 1, x
        assert x["KL"][-1] == pytest.approx(0.0, abs=1e-6)  # TEACHER=self: q_L against itself
        assert len(x["D"]) == layers and "S_model" in x and "zeta_L" in x
    assert "zeta_1" in out  # the console line
    assert "[SD_ALPHA=0.5 else the paper's: SD_K=0.25" in out  # the plan line


def test_cpu_memory_estimate_counts_the_lens_pieces():
    """16 fp32 [chunk, vocab / tp] pieces, as measured (megatron_ext/selfdistill.py)."""
    from launcher.memory import estimate
    from recipes import model_recipe

    model = model_recipe("tiny")
    kw = dict(vocab=32768, micro_batch_size=4, seq_length=model.seq_length, tp=2)
    added = estimate(model, **kw, lens_chunk=128).activations - estimate(model, **kw).activations
    assert added == pytest.approx(16 * 4 * 128 * 32768 / 2, rel=1e-6)
