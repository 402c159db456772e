"""Our own run -> make export -> make import gives the run's logits; INIT= trains from the
imported weights (fresh optimizer, iteration 0), at TP=1 and at TP=2 x PP=2, and a second start
resumes from the run's own checkpoint; a dataset with another tokenizer is refused with one line."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from tests.eval.conftest import eval_ok, pretrain, read_jsonl
from tests.helpers import run_checked

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def imported(exported, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "model"
    eval_ok("import", f"MODEL={exported}", f"RUN={out}")
    return out


def test_round_trip_logits_equal_the_run(tp_pp_logits, imported, tmp_path):
    ref = torch.load(tp_pp_logits)
    torch.save(ref["tokens"], tmp_path / "tokens.pt")
    dump = tmp_path / "imported.pt"
    cmd = [sys.executable, "-m", "tests.eval.import_logits", "--load", str(imported),
           str(tmp_path / "tokens.pt"), str(dump)]  # fmt: skip
    code, out = run_checked(cmd, timeout=300)
    assert code == 0, out[-4000:]
    logits = torch.load(dump)
    assert logits.shape == ref["logits"].shape  # the padded vocabulary is kept both ways
    torch.testing.assert_close(logits, ref["logits"], rtol=1e-5, atol=1e-5)
    assert ref["logits"].std() > 1e-2


def _settings(imported) -> dict:
    # TRAIN=tiny: tiny's batch of 8 (INIT='s default, continued, has 128: 16x the CPU time)
    return dict(INIT=imported, TRAIN="tiny", REG="jreg", LOG_INTERVAL=1, SAVE_INTERVAL=3)


@pytest.fixture(scope="module")
def continued(imported, smoke_data, tmp_path_factory):
    """3 iterations from the imported weights, one process (test_init_trains_then_resumes then
    resumes it; its first iteration stays the reference of the TP=2 x PP=2 start)."""
    run = tmp_path_factory.mktemp("continued") / "tp1"
    return pretrain(run, smoke_data, ITERS=3, **_settings(imported))


def test_init_trains_then_resumes(imported, continued, smoke_data):
    run = continued
    finetune = f"attempting to finetune with checkpoint in {imported}"  # Megatron's words
    assert finetune in _last_log(run)
    first = _train_lines(run)
    assert [x["iteration"] for x in first] == [1, 2, 3]
    assert all(x["lm_loss"] == x["lm_loss"] for x in first)  # finite (not NaN)
    pretrain(run, smoke_data, ITERS=4, ARGS="--override-opt_param-scheduler", **_settings(imported))
    lines = _train_lines(run)
    assert [x["iteration"] for x in lines] == [1, 2, 3, 4]  # resumed at 3, not from INIT again
    assert finetune not in _last_log(run)
    assert (run / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "4"


def test_imported_checkpoint_loads_at_tp2_pp2(imported, continued, tp_pp_run, smoke_data, tmp_path):
    """dist-checkpointing reshards the imported (TP=1) checkpoint into TP=2 x PP=2: the first
    iteration's loss, computed on the loaded weights before any update, and the second's are the
    one-process start's (measured: equal to every printed digit), not the loss of random weights
    on the same batch (tp_pp_run's iteration 1: 6.94 against 6.57). ITERS=2: Megatron asserts
    warmup < decay iterations, and the launcher's warmup is at least 1."""
    run = pretrain(tmp_path / "tp2pp2", smoke_data, ITERS=2, NPROC=4, TP=2, PP=2,
                   **_settings(imported))  # fmt: skip
    assert f"attempting to finetune with checkpoint in {imported}" in _last_log(run)
    losses = [x["lm_loss"] for x in _train_lines(run)]
    reference = [x["lm_loss"] for x in _train_lines(continued)[:2]]
    assert losses == pytest.approx(reference, rel=1e-5, abs=0)
    assert abs(losses[0] - _train_lines(tp_pp_run)[0]["lm_loss"]) > 1e-2


def _frozen(imported, **more) -> dict:
    return dict(INIT=imported, TRAIN="tiny", REG="selfdistill", SD_TEACHER="frozen", LAMBDA=1,
                LOG_INTERVAL=1, **more)  # fmt: skip


def test_frozen_teacher_is_the_init_model_after_a_resume(imported, smoke_data, tmp_path):
    """SD_TEACHER=frozen distills toward INIT's model, read again at every start: its last
    layer's KL is 0 while the student still equals INIT (iteration 1) and > 0 once the student
    has moved; a run resumed from its own iteration-2 checkpoint, at TP=2 with sequence
    parallelism, computes iteration 3 as the uninterrupted one-process run did (a teacher taken
    from the resumed weights would give KL_L = 0 there; a teacher whose tokens did not line up
    with the student's under SP, other KL values)."""
    straight = pretrain(tmp_path / "straight", smoke_data, ITERS=3, SAVE_INTERVAL=2,
                        **_frozen(imported))  # fmt: skip
    assert "SD_TEACHER=frozen: the teacher is" in _last_log(straight)
    lines = _train_lines(straight)
    assert lines[0]["KL"][-1] == 0.0 and lines[2]["KL"][-1] > 1e-3
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "iter_0000003")
    (resumed / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("2")
    pretrain(resumed, smoke_data, ITERS=3, SAVE_INTERVAL=2, NPROC=2, TP=2, **_frozen(imported))
    log = _last_log(resumed)
    assert "SP=on" in log and "resuming from" in log and "the teacher is" in log
    again = _train_lines(resumed)
    assert [x["iteration"] for x in again] == [1, 2, 3]
    for key in ("lm_loss", "zeta_1", "zeta_2", "KL"):
        assert again[2][key] == pytest.approx(lines[2][key], rel=1e-5, abs=1e-7), key


def _train_lines(run) -> list[dict]:
    return [x for x in read_jsonl(run / "metrics.jsonl") if "split" not in x]


def _last_log(run) -> str:
    return sorted((run / "logs").glob("*.log"))[-1].read_text()


def test_init_refuses_another_tokenizer(imported, smoke_data, tmp_path):
    fake_source = tmp_path / "source"
    record = json.loads((imported / "import.json").read_text())
    shutil.copytree(record["source"], fake_source)
    tok = json.loads((fake_source / "tokenizer.json").read_text())
    tok["added_tokens"].append({"id": 5, "content": "<|other|>", "special": True})
    (fake_source / "tokenizer.json").write_text(json.dumps(tok))
    other = tmp_path / "other"
    shutil.copytree(imported, other)
    (other / "import.json").write_text(json.dumps({**record, "source": str(fake_source)}))
    cmd = [sys.executable, "-m", "launcher", f"RUN={tmp_path / 'r'}", f"DATA={smoke_data}",
           f"INIT={other}", "DRY_RUN=1"]  # fmt: skip
    code, out = run_checked(cmd, timeout=120)
    assert code != 0
    errors = [x for x in out.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "special tokens" in errors[0], out[-2000:]
