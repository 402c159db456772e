"""Model recipes: every size is valid and Llama-shaped; bad layouts and shapes get clear errors."""

import pytest

from megatron_ext.config import LlamaConfig, megatron_flags
from megatron_ext.regconfig import JregConfig
from recipes import SIZES, model_recipe


@pytest.mark.parametrize("size", list(SIZES))
def test_sizes_are_valid(size):
    cfg = model_recipe(size)
    assert cfg.hidden_size % cfg.num_attention_heads == 0
    assert cfg.num_attention_heads % cfg.num_query_groups == 0
    cfg.check_layout(tp=1, pp=1)
    flags = megatron_flags(cfg)
    assert flags[flags.index("--num-layers") + 1] == str(cfg.num_layers)
    assert "--swiglu" in flags and "--untie-embeddings-and-output-weights" in flags


def test_tiny_is_small():
    cfg = model_recipe("tiny")
    assert cfg.num_layers <= 6 and 128 <= cfg.hidden_size <= 256


def test_known_shapes():
    assert (model_recipe("8b").num_layers, model_recipe("8b").hidden_size) == (32, 4096)
    assert model_recipe("1b").ffn_hidden_size == 8192


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_attention_heads": 5}, "num_attention_heads=5 must divide hidden_size=128"),
        ({"num_query_groups": 3}, "num_query_groups=3 must divide num_attention_heads=4"),
        ({"num_layers": 0}, "num_layers must be a positive integer"),
    ],
)
def test_bad_shapes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        model_recipe("tiny").replace(**kwargs)


def test_bad_layouts():
    cfg = model_recipe("tiny")  # 4 layers
    with pytest.raises(ValueError, match="num_layers=4 is not divisible by PP=3"):
        cfg.check_layout(pp=3)
    with pytest.raises(ValueError, match="PP=2 x VPP=4"):
        cfg.check_layout(pp=2, vpp=4)
    with pytest.raises(ValueError, match="TP=4 must divide num_query_groups=2"):
        cfg.check_layout(tp=4)
    cfg.check_layout(tp=2, pp=2, vpp=2)


def test_unknown_size():
    with pytest.raises(ValueError, match="unknown SIZE 'huge'; valid: tiny, 125m"):
        model_recipe("huge")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reg": "l1"}, "unknown REG 'l1'; valid: jreg, l2rel, none"),
        ({"lam": -0.1}, "LAMBDA must be a finite number >= 0"),
        ({"lam": float("nan")}, "LAMBDA must be a finite number >= 0"),
        ({"schedule": "cubic"}, "unknown WEIGHTS 'cubic'"),
        ({"schedule": "last_k", "schedule_k": 9}, "last_k needs an integer k in 1..4"),
    ],
)
def test_bad_jreg_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        JregConfig(num_layers=4, **kwargs)


def test_layer_config_is_dataclass():
    assert LlamaConfig.__dataclass_params__.kw_only


def test_study_recipe_has_depth_and_ten_checkpoints():
    from recipes import train_recipe

    model, train = model_recipe("study"), train_recipe("study")
    assert 8 <= model.num_layers <= 16 and model.hidden_size <= 256  # deep and narrow
    tokens = train.train_iters * train.global_batch_size * model.seq_length
    assert 2e6 <= tokens <= 1e7  # a few million tokens
    assert train.train_iters // train.save_interval >= 10
    assert train.eval_interval == train.save_interval  # a validation pass at every checkpoint


@pytest.mark.parametrize("iters", [1, 2, 3000])
def test_schedule_passes_megatrons_scheduler(iters):
    """ITERS=1 used to die in Megatron's assert lr_warmup_steps < lr_decay_steps (warmup >= 1):
    the flags must build Megatron's own OptimizerParamScheduler the way training.py does."""
    import torch
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    from recipes import training

    cfg = training.tiny().replace(train_iters=iters)
    flags = cfg.megatron_flags()
    warmup = int(flags[flags.index("--lr-warmup-iters") + 1])
    assert warmup == (0 if iters == 1 else max(1, round(cfg.lr_warmup_fraction * iters)))
    gbs = cfg.global_batch_size
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    OptimizerParamScheduler(opt, init_lr=0.0, max_lr=cfg.lr, min_lr=cfg.min_lr,
                            lr_warmup_steps=warmup * gbs, lr_decay_steps=iters * gbs,
                            lr_decay_style=cfg.lr_decay_style, start_wd=0.1, end_wd=0.1,
                            wd_incr_steps=iters * gbs, wd_incr_style="constant")  # fmt: skip
