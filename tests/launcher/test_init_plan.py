"""TRAIN= and INIT= in the plan (DRY_RUN, no Megatron start): INIT= trains with the
continued-pretraining schedule unless TRAIN= names another, a bad TRAIN is one line; an imported
model's switches (tied embeddings, q/k/v biases, llama3 RoPE scaling) are what its command line
says, so eval/ reading the run back from its flags builds the same model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from launcher.cli import describe, main, run_config
from launcher.command import megatron_args
from launcher.planner import plan
from megatron_ext.runconfig import from_flags, parse_flags
from recipes import model_recipe, train_recipe
from tests.helpers import fake_import

# Qwen2-0.5B's and Llama-3.2-1B's switches on a tiny shape
QWEN2 = dict(tie_embeddings=True, qkv_bias=True, rotary_base=1_000_000)
LLAMA3 = dict(tie_embeddings=True, rope_scaling_factor=32.0)
UNTIED_BIASES = dict(qkv_bias=True)


def dry_plan(tmp_path: Path, data: Path, **settings):
    return plan({"RUN": str(tmp_path / "run"), "DATA": str(data), "DRY_RUN": "1", **settings})


def test_init_trains_with_the_continued_schedule(tmp_path, smoke_data):
    init = fake_import(tmp_path / "imported", smoke_data, **LLAMA3)
    p = dry_plan(tmp_path, smoke_data, INIT=str(init))
    tiny = train_recipe("tiny")
    assert p.schedule == "continued" and "SIZE=tiny TRAIN=continued REG=" in describe(p)
    assert (p.train.lr, p.train.min_lr, p.train.global_batch_size) == (1e-4, 1e-5, 128)
    assert p.train.train_iters == 10_000_000 // (128 * 128)  # 10M tokens at tiny's 128
    assert p.train.micro_batch_size == tiny.micro_batch_size  # the size's fit for its machine
    assert p.model.seq_length == 128 and p.model.rope_scaling_factor == 32.0
    own = dry_plan(tmp_path, smoke_data, INIT=str(init), TRAIN="tiny")
    assert own.train == tiny and "TRAIN=" not in describe(own)
    other = dry_plan(tmp_path, smoke_data, TRAIN="continued", ITERS="7")
    assert other.train.lr == 1e-4 and other.train.train_iters == 7
    assert other.model == model_recipe("tiny")  # TRAIN= alone keeps SIZE's model
    assert dry_plan(tmp_path, smoke_data, TRAIN="1b").train == train_recipe("1b")


def test_bad_train_is_one_line(tmp_path, smoke_data, capsys):
    code = main([f"RUN={tmp_path / 'r'}", f"DATA={smoke_data}", "TRAIN=fast", "DRY_RUN=1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: unknown TRAIN 'fast'; valid: continued, tiny, 125m"), err


@pytest.mark.parametrize(
    "switches", [QWEN2, LLAMA3, UNTIED_BIASES], ids=["qwen2", "llama3", "untied"]
)
def test_imported_model_reads_back_from_its_command(tmp_path, smoke_data, switches):
    init = fake_import(tmp_path / "imported", smoke_data, **switches)
    p = dry_plan(tmp_path, smoke_data, INIT=str(init), NPROC="4", TP="2", PP="2")
    written = run_config(p)
    read = from_flags(parse_flags(megatron_args(p)), size=p.size, vocab=p.model_vocab)
    assert (
        written.model == p.model.replace(seq_length=128) == model_recipe("tiny").replace(**switches)
    )
    # the warmup comes back from its rounded iteration count: the same flags, the same run
    assert read.train.megatron_flags() == written.train.megatron_flags()
    assert dataclasses.replace(read, data=None, train=None) == dataclasses.replace(
        written, extra_args=[], data=None, train=None
    )


def test_args_switches_reach_the_run_config(tmp_path, smoke_data):
    args = "--add-qkv-bias --use-rope-scaling --rope-scaling-factor 16"
    written = run_config(dry_plan(tmp_path, smoke_data, ARGS=args))
    model = written.model
    assert (model.qkv_bias, model.rope_scaling_factor, model.tie_embeddings) == (True, 16.0, False)
    init = fake_import(tmp_path / "imported", smoke_data, **LLAMA3)
    p = dry_plan(tmp_path, smoke_data, INIT=str(init), ARGS="--rope-scaling-factor 8")
    assert run_config(p).model.rope_scaling_factor == 8.0  # changes a model that scales
    assert run_config(dry_plan(tmp_path, smoke_data, ARGS="--rope-scaling-factor 8")).model == (
        model_recipe("tiny")  # Megatron ignores it without --use-rope-scaling
    )
