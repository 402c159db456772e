"""The launcher's GPU flags, planned on CPU (PLAN_GPUS): complete for Megatron without TE/Apex
(finding 5, checked with Megatron's own parser and validate_args), the H200 throughput options,
and JREG-incompatible offloading refused (finding 7)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

import launcher as launch
from launcher import planner

launch_gpu_info = planner.gpu_info


def gpu_plan(monkeypatch, data, te: bool, **settings) -> tuple[launch.Plan, list[str]]:
    """DRY_RUN's plan on 8 sm90 GPUs: a PLAN_GPUS preview unless gpu_info is patched."""
    if planner.gpu_info is launch_gpu_info:
        monkeypatch.setenv("PLAN_GPUS", "8:9")
    monkeypatch.setattr(planner, "te_available", lambda: te)
    monkeypatch.setattr(planner, "te_import_error", lambda: None if te else "not installed")
    p = launch.plan({"DRY_RUN": "1", "DATA": str(data), **settings})
    return p, launch.megatron_args(p)


@pytest.mark.parametrize("size", ["1b", "8b"])
def test_gpu_without_te_flags_pass_megatron_and_build_the_local_spec(monkeypatch, smoke_data, size):
    """Megatron parses and validates the no-TE GPU command, and the config it makes builds the
    local spec's norm and linear layers without Apex or TE (8b: TP=2, where SP must be off)."""
    from megatron.core.transformer.torch_norm import WrappedTorchNorm
    from megatron.training import arguments
    from megatron.training.argument_utils import gpt_config_from_args
    from megatron.training.arguments import parse_args, validate_args

    p, flags = gpu_plan(monkeypatch, smoke_data, te=False, SIZE=size)
    assert flags[flags.index("--transformer-impl") + 1] == "local"
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("CUDA_DEVICE_MAX_CONNECTIONS", "1")  # launch.run_env sets it on GPUs
    # the one question validate_args asks the GPU (arguments.py:1414, for TP>1): an H200 is sm90
    monkeypatch.setattr(arguments, "get_device_arch_version", lambda: 9)
    monkeypatch.setattr(sys, "argv", ["train", *flags])
    args = parse_args(ignore_unknown_args=True)  # the --jreg-* flags are ours
    validate_args(args)
    assert args.bf16 and args.transformer_impl == "local"
    config = gpt_config_from_args(args).transformer
    # torch_norm.py:44-55 asserts each of these for the torch norm the local spec builds
    WrappedTorchNorm(config=config, hidden_size=config.hidden_size, eps=config.layernorm_epsilon)
    # tensor_parallel/layers.py:1071: the fused wgrad kernel comes from Apex/TE only
    if importlib.util.find_spec("fused_weight_gradient_mlp_cuda") is None:
        assert not config.gradient_accumulation_fusion
    assert not config.apply_rope_fusion and not config.masked_softmax_fusion
    assert config.sequence_parallel is False
    assert args.tensor_model_parallel_size == p.layout.tp == (2 if size == "8b" else 1)


@pytest.mark.parametrize("te", [True, False], ids=["te", "local"])
def test_h200_throughput_flags(monkeypatch, smoke_data, te):
    p, flags = gpu_plan(monkeypatch, smoke_data, te=te, SIZE="1b")
    cmd = " ".join(flags)
    for flag in ("--bf16", "--overlap-grad-reduce", "--overlap-param-gather",
                 "--use-distributed-optimizer", "--cross-entropy-loss-fusion",
                 "--cross-entropy-fusion-impl native", "--manual-gc --manual-gc-interval 100",
                 "--distributed-timeout-minutes 60"):  # fmt: skip
        assert flag in cmd, flag
    assert "--micro-batch-size 8" in cmd  # a preview: the node fits it (test_gpu_memory.py)
    assert "--tp-comm-overlap" not in cmd
    assert ("--fp8-format hybrid" in cmd) == te
    assert ("--transformer-impl transformer_engine" in cmd) == te
    # Apex's fused wgrad kernel is not installed: off with TE too (the output layer needs it)
    assert "--no-gradient-accumulation-fusion" in cmd
    assert ("--attention-backend fused" in cmd) == te


def test_no_overlap_without_distributed_optimizer(monkeypatch, smoke_data):
    _, flags = gpu_plan(monkeypatch, smoke_data, te=True, SIZE="125m")
    assert "--overlap-param-gather" not in flags and "--manual-gc" in flags


@pytest.mark.parametrize(
    "modules, te, refused",
    [("attn_norm", False, "attn_norm"), ("qkv_linear core_attn", True, "qkv_linear"),
     ("core_attn attn_norm", True, "attn_norm"), ("qkv_linear", False, None),
     ("core_attn mlp_norm", True, None)],
)  # fmt: skip
def test_offloading_the_layer_input_is_refused(modules, te, refused):
    extra = ["--fine-grained-activation-offloading", "--offload-modules", *modules.split()]
    msg = launch.jreg_incompatible(extra, use_te=te)
    if refused is None:
        assert msg is None
    else:
        assert msg.startswith(f"--offload-modules {refused} offloads the layer input")
    assert launch.jreg_incompatible(["--offload-modules", "attn_norm"], use_te=te) is None


def test_launcher_refuses_offloading_in_one_line(smoke_data, capsys):
    code = launch.main([f"DATA={smoke_data}", "DRY_RUN=1",
                        "ARGS=--fine-grained-activation-offloading --offload-modules attn_norm"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --offload-modules attn_norm")


def test_gpu_count_asks_torch_only_where_a_gpu_driver_is(monkeypatch, tmp_path):
    """No GPU device file: (0, 0) without a torch query (the launcher then never imports torch);
    with one: torch's count and capability, as before."""
    import torch

    def no_query():
        raise AssertionError("torch was asked")

    monkeypatch.delenv("PLAN_GPUS", raising=False)
    monkeypatch.setattr(planner, "GPU_DEVICE_FILES", (str(tmp_path / "nvidiactl"),))
    monkeypatch.setattr(torch.cuda, "is_available", no_query)
    assert planner.gpu_info() == (0, 0) and planner.gpu_memory() is None
    (tmp_path / "nvidiactl").touch()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (9, 0))
    assert planner.gpu_info() == (8, 9)
