"""runs/<RUN>/run_config.json: the typed configs round-trip through JSON, the launcher's config
(the plan's dataclasses with ARGS applied) equals what its own command line says (so old runs,
read from command.txt, and new runs agree), and eval reads a run that has no command.txt."""

from __future__ import annotations

import dataclasses

import pytest

from launcher.cli import run_config
from launcher.command import megatron_args
from launcher.planner import plan
from megatron_ext.config import ParallelConfig
from megatron_ext.regconfig import JregConfig
from megatron_ext.runconfig import (
    DataConfig,
    RunConfig,
    from_flags,
    parse_flags,
)
from recipes import SIZES, model_recipe, train_recipe


@pytest.mark.parametrize("size", list(SIZES))
def test_round_trip_gives_the_same_dataclasses(size):
    model = model_recipe(size)
    cfg = RunConfig(
        size=size, model=model, train=train_recipe(size),
        parallel=ParallelConfig(tp=2, pp=2, vpp=2), seed=7, vocab_size=9216, bf16=True,
        reg=JregConfig(reg="l2rel", lam=0.5, schedule="exp", schedule_k=0.25,
                       num_layers=model.num_layers),
        data=DataConfig(path="/d", prefixes={"train": "/d/t"}, tokenizer_dir="/d/tok",
                        eod_mask_loss=True),
        save_dir="/r/checkpoints", extra_args=["--eod-mask-loss"],
    )  # fmt: skip
    back = RunConfig.from_json(cfg.to_json())
    assert back == cfg
    assert (
        isinstance(back.model, type(model))
        and back.reg.weights.tolist() == cfg.reg.weights.tolist()
    )
    assert back.weights_spec == "exp:0.25"


def test_unknown_schema_is_refused():
    with pytest.raises(ValueError, match="schema_version 99"):
        RunConfig.from_json('{"schema_version": 99}')


@pytest.mark.parametrize(
    ("env", "settings"),
    [({}, {}),
     ({}, {"NPROC": "2", "TP": "2", "REG": "none", "WEIGHTS": "last_k:2", "SEED": "5",
           "ARGS": "--eval-interval 5 --seq-length 64 --eod-mask-loss"}),
     ({"PLAN_GPUS": "8:9"}, {"SIZE": "8b", "LAMBDA": "0.3", "WEIGHTS": "exp:0.25"}),
     ({"PLAN_GPUS": "8:9"}, {"SIZE": "350m", "PP": "2", "VPP": "3"}),
     ({}, {"NPROC": "2", "TP": "2", "REG": "selfdistill", "LAMBDA": "0.2", "SD_ALPHA": "0.5",
           "SD_DIRECTION": "forward", "ARGS": "--sd-k 0.5"})],
)  # fmt: skip
def test_launcher_config_is_what_its_command_says(monkeypatch, tmp_path, smoke_data, env, settings):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    p = plan({"RUN": str(tmp_path / "r"), "DATA": str(smoke_data), "DRY_RUN": "1", **settings})
    written = run_config(p)
    read = from_flags(parse_flags(megatron_args(p)), size=p.size, vocab=p.model_vocab)
    assert dataclasses.replace(written, extra_args=[], data=None) == dataclasses.replace(
        read, data=None
    )
    assert written.data == dataclasses.replace(read.data, path=str(p.data))
    if "--eval-interval" in settings.get("ARGS", ""):  # ARGS applied to the configs, kept as given
        assert (written.train.eval_interval, written.model.seq_length) == (5, 64)
        assert written.data.eod_mask_loss and written.extra_args == settings["ARGS"].split()
    assert RunConfig.from_json(written.to_json()) == written
    if settings.get("REG") == "selfdistill":  # SD_* and an ARGS --sd-* flag
        sd = written.reg.selfdistill
        assert (sd.k, sd.alpha, sd.direction, sd.teacher) == (0.5, 0.5, "forward", "self")
