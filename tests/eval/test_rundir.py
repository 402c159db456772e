"""Reading run directories (no Megatron): command flags, checkpoints, validation-pass numbering."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest

from eval.rundir import EvalError, Schedule, load_run
from megatron_ext.runconfig import parse_flags as parse_command

MODEL = ("--num-layers 4 --hidden-size 128 --ffn-hidden-size 384 --num-attention-heads 4 "
         "--group-query-attention --num-query-groups 2 --kv-channels 32 --seq-length 128 "
         "--position-embedding-type rope --rotary-base 10000 --normalization RMSNorm --swiglu "
         "--disable-bias-linear --untie-embeddings-and-output-weights")  # fmt: skip


def fake_run(tmp_path: Path, extra: str = "", checkpoints=(5, 10), tracker: str | None = "10"):
    """A run directory with the files ``make pretrain`` writes (no real weights)."""
    run, data = tmp_path / "run", tmp_path / "data"
    (data / "tokenizer").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (data / f"{split}_text_document.idx").write_bytes(b"")
    flags = (
        f"{MODEL} --micro-batch-size 4 --global-batch-size 8 --train-iters 10 --eval-interval 5 "
        f"--eval-iters 4 --seed 7 --vocab-size 1024 --tokenizer-model {data / 'tokenizer'} "
        + " ".join(f"--{s}-data-path {data / f'{s}_text_document'}" for s in ("train", "valid", "test"))
        + f" --jreg-reg l2rel --jreg-lambda 0.5 --jreg-weights exp:0.5 {extra}"
    )  # fmt: skip
    run.mkdir()
    (run / "command.txt").write_text(
        "/x/python -m torch.distributed.run --nproc-per-node 2 --master-port 1 "
        f"-m megatron_ext.train {flags}\n"
    )
    ckpts = run / "checkpoints"
    ckpts.mkdir()
    for it in checkpoints:
        (ckpts / f"iter_{it:07d}").mkdir()
        (ckpts / f"iter_{it:07d}" / "metadata.json").write_text("{}")
    if tracker is not None:
        (ckpts / "latest_checkpointed_iteration.txt").write_text(tracker)
    return run


def test_parse_command_takes_trainer_flags_only_last_wins():
    text = shlex.join(["py", "-m", "torch.distributed.run", "--nproc-per-node", "4", "-m",
                       "megatron_ext.train", "--seed", "1", "--swiglu", "--seed=3",
                       "--valid-data-path", "1.0", "a"])  # fmt: skip
    flags = parse_command(text)
    assert flags == {"--seed": ["3"], "--swiglu": [], "--valid-data-path": ["1.0", "a"]}


def test_load_run_reads_model_schedule_and_regulariser(tmp_path):
    run = load_run(str(fake_run(tmp_path)))
    assert (run.model.num_layers, run.model.num_query_groups, run.model.rotary_base) == (
        4,
        2,
        10000,
    )
    assert run.schedule == Schedule(seed=7, micro_batch_size=4, global_batch_size=8,
                                    train_iters=10, eval_interval=5, eval_iters=4)  # fmt: skip
    assert (run.vocab_size, run.reg, run.lam, run.weights) == (1024, "l2rel", 0.5, "exp:0.5")
    assert not run.bf16


@pytest.mark.parametrize(
    ("extra", "message"),
    [("--qk-layernorm", "QK layernorm"), ("--normalization LayerNorm", "RMSNorm"),
     ("--train-data-path 0.5 a 0.5 b", "mix a weighted blend"), ("--kv-channels 16", "kv-channels")],
)  # fmt: skip
def test_unsupported_runs_are_refused(tmp_path, extra, message):
    with pytest.raises(EvalError, match=message):
        load_run(str(fake_run(tmp_path, extra)))


@pytest.mark.parametrize(
    ("extra", "tied", "bias", "factor"),
    [("", False, False, None),
     ("--add-qkv-bias", False, True, None),  # Qwen2 (untied: 7B)
     ("--add-qkv-bias --use-rope-scaling", True, True, 8.0),  # Megatron's default factor
     ("--use-rope-scaling --rope-scaling-factor 32.0", True, False, 32.0),  # Llama-3.2-1B
     ("--rope-scaling-factor 32.0", True, False, None)],  # ignored without --use-rope-scaling
)  # fmt: skip
def test_imported_model_switches_are_read(tmp_path, extra, tied, bias, factor):
    """A continued run of an imported model read from its flags: Megatron ties the embeddings
    unless --untie-embeddings-and-output-weights, and eval/ builds q/k/v biases and llama3 RoPE."""
    path = fake_run(tmp_path, extra)
    if tied:
        command = path / "command.txt"
        untie = " --untie-embeddings-and-output-weights"
        command.write_text(command.read_text().replace(untie, ""))
    model = load_run(str(path)).model
    assert (model.tie_embeddings, model.qkv_bias, model.rope_scaling_factor) == (tied, bias, factor)


def test_missing_run_and_missing_command(tmp_path):
    with pytest.raises(EvalError, match="does not exist"):
        load_run(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalError, match="command.txt"):
        load_run(str(tmp_path / "empty"))


def test_checkpoint_selection(tmp_path):
    # iter 15 is newer than the tracker (an interrupted save): never selected.
    run = load_run(str(fake_run(tmp_path, checkpoints=(5, 10, 15), tracker="10")))
    assert run.checkpoints() == [5, 10]
    assert run.select("all") == [5, 10] and run.select("latest") == [10]
    assert run.select("10,5") == [5, 10]
    with pytest.raises(EvalError, match="no checkpoint iter_15.*available: 5, 10"):
        run.select("15")
    with pytest.raises(EvalError, match="ITER must be"):
        run.select("last")


def test_run_without_checkpoints(tmp_path):
    run = load_run(str(fake_run(tmp_path, checkpoints=(), tracker=None)))
    with pytest.raises(EvalError, match="no complete checkpoint"):
        run.select("all")


def test_validation_passes():
    sched = Schedule(seed=1, micro_batch_size=4, global_batch_size=8, train_iters=10,
                     eval_interval=5, eval_iters=4)  # fmt: skip
    assert sched.num_passes == 3 and sched.valid_num_samples == 96
    assert sched.pass_samples(2) == range(32, 64)
    assert [sched.pass_at(i) for i in (4, 5, 10)] == [None, 1, 2]
    with pytest.raises(EvalError, match="passes 1..3"):
        sched.pass_samples(4)
    uneven = Schedule(seed=1, micro_batch_size=4, global_batch_size=8, train_iters=12,
                      eval_interval=5, eval_iters=4)  # fmt: skip
    assert uneven.pass_at(12) == 3 == uneven.num_passes  # the final pass after training


@pytest.mark.parametrize(("train_iters", "eval_interval"), [(10, 5), (12, 5), (3, 100)])
def test_valid_num_samples_is_megatrons(train_iters, eval_interval):
    """Megatron's own get_train_valid_test_num_samples sizes the validation dataset."""
    from megatron.training import global_vars, training

    args = argparse.Namespace(
        train_samples=None, train_iters=train_iters, global_batch_size=8, full_validation=False,
        skip_train=False, eval_interval=eval_interval, start_eval_at_iter=None, eval_iters=4,
        phase_transition_iterations=None,
    )  # fmt: skip
    old = global_vars._GLOBAL_ARGS
    global_vars._GLOBAL_ARGS = args
    try:
        _, valid_samples, _ = training.get_train_valid_test_num_samples()
    finally:
        global_vars._GLOBAL_ARGS = old
    sched = Schedule(seed=1, micro_batch_size=4, global_batch_size=8, train_iters=train_iters,
                     eval_interval=eval_interval, eval_iters=4)  # fmt: skip
    assert sched.valid_num_samples == valid_samples


def test_logged_pass_old_and_new_format(tmp_path):
    run = load_run(str(fake_run(tmp_path)))  # eval_interval 5, train_iters 10
    path = run.path / "metrics.jsonl"
    old = [{"iteration": 5, "split": "valid", "lm_loss": 1.0}, {"iteration": 5, "lm_loss": 9.0},
           {"iteration": 5, "split": "valid", "lm_loss": 2.0},
           {"iteration": 10, "split": "valid", "lm_loss": 3.0}]  # fmt: skip
    path.write_text("".join(json.dumps(x) + "\n" for x in old) + "{torn")
    assert run.logged_pass(1) == (old[2], None)  # the last line after a resume
    line, note = run.logged_pass(2)
    assert line == old[3] and "averages" in note  # the pooled last line of the old format
    assert run.logged_pass(3) == (None, None)
    new = [{"iteration": 5, "split": "valid", "eval_pass": 1, "lm_loss": 1.0},
           {"iteration": 10, "split": "valid", "eval_pass": 2, "lm_loss": 2.0},
           {"iteration": 10, "split": "valid", "eval_pass": 3, "lm_loss": 3.0},
           {"iteration": 10, "split": "test", "lm_loss": 4.0}]  # fmt: skip
    path.write_text("".join(json.dumps(x) + "\n" for x in new))
    assert [run.logged_pass(e) for e in (1, 2, 3, 4)] == [
        (new[0], None), (new[1], None), (new[2], None), (None, None)]  # fmt: skip
    assert run.tokens_seen(10) == 10 * 8 * 128


def test_run_config_json_replaces_command_txt(tmp_path):
    """A run with run_config.json and no command.txt reads the same (the old run's command.txt
    converted once, then deleted)."""
    from megatron_ext.runconfig import RUN_CONFIG
    from megatron_ext.runconfig import load as load_run_config

    path = fake_run(tmp_path)
    old = load_run(str(path))
    (path / RUN_CONFIG).write_text(load_run_config(path).to_json())
    (path / "command.txt").unlink()
    new = load_run(str(path))
    assert (new.model, new.schedule, new.vocab_size, new.tokenizer_dir) == (
        old.model, old.schedule, old.vocab_size, old.tokenizer_dir)  # fmt: skip
    assert [new.prefixes(s) for s in ("train", "valid", "test")] == [
        old.prefixes(s) for s in ("train", "valid", "test")]  # fmt: skip
    assert (new.reg, new.lam, new.weights, new.bf16) == ("l2rel", 0.5, "exp:0.5", False)
