"""The Transformer Engine GPU path, run as far as a CPU allows (issue 20, items 1-3 and 5).

Each test plans a GPU node's run with the launcher (PLAN_GPUS, or the planner's GPU probe
replaced), hands the launcher's flags to Megatron's own parse_args/validate_args, builds the
TransformerConfig as megatron.training does, and constructs the modules of that model that need
neither TE nor CUDA. Where TE itself is consulted, the stand-in is named: the rope-fusion kernel an
installed TE supplies (rope_utils.fused_apply_rotary_pos_emb, checked by TransformerConfig).
"""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest

import launcher as launch
from launcher import gpu, planner
from tests.gpu_path.test_launch_gpu import gpu_plan


def megatron_config(monkeypatch, flags: list[str], world: int = 8):
    """(args, TransformerConfig) exactly as megatron.training builds them from ``flags`` on
    global rank 0 of ``world`` GPU ranks."""
    from megatron.core.models.common.embeddings import rope_utils
    from megatron.training import arguments
    from megatron.training.argument_utils import gpt_config_from_args

    for key, value in {"WORLD_SIZE": str(world), "RANK": "0", "LOCAL_RANK": "0",
                       "CUDA_DEVICE_MAX_CONNECTIONS": "1"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(arguments, "get_device_arch_version", lambda: 9)  # an H200 is sm90
    if "transformer_engine" in flags:  # the TE kernel TransformerConfig asks for (see docstring)
        monkeypatch.setattr(rope_utils, "fused_apply_rotary_pos_emb", lambda *a, **k: None)
    monkeypatch.setattr(sys, "argv", ["train", *flags])
    args = arguments.parse_args(ignore_unknown_args=True)  # the --jreg-* flags are ours
    arguments.validate_args(args)
    return args, gpt_config_from_args(args).transformer


@pytest.mark.parametrize("size", ["1b", "8b"])
def test_te_run_builds_its_output_layer_and_embedding(monkeypatch, smoke_data, size):
    """Item 1: with the TE flags, Megatron's own output layer (ColumnParallelLinear, gpt_model.py
    :264, also under TE) was built with gradient_accumulation_fusion on and raised for the
    missing Apex kernel (tensor_parallel/layers.py:1070): every TE run died at model build. The
    modules of that model that need neither TE nor CUDA are built here: output layer, embedding,
    rotary embedding (the TE layers themselves need a GPU node)."""
    from megatron.core import tensor_parallel
    from megatron.core.models.common.embeddings.language_model_embedding import (
        LanguageModelEmbedding,
    )
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    p, flags = gpu_plan(monkeypatch, smoke_data, te=True, SIZE=size)
    assert p.use_te and not p.grad_accum_fusion  # no Apex here (never installed)
    args, config = megatron_config(monkeypatch, flags)
    assert config.transformer_impl == "transformer_engine" and config.fp8 == "hybrid"
    # the one change for a CPU: weights allocated on the CPU (use_cpu_initialization)
    cpu = dataclasses.replace(config, use_cpu_initialization=True)
    output = tensor_parallel.ColumnParallelLinear(
        cpu.hidden_size, p.model_vocab, config=cpu, init_method=cpu.init_method, bias=False,
        skip_bias_add=False, gather_output=False,
    )  # fmt: skip
    assert tuple(output.weight.shape) == (p.model_vocab, cpu.hidden_size)
    assert not config.gradient_accumulation_fusion
    embedding = LanguageModelEmbedding(config=cpu, vocab_size=p.model_vocab,
                                       max_sequence_length=args.max_position_embeddings,
                                       position_embedding_type="rope")  # fmt: skip
    assert tuple(embedding.word_embeddings.weight.shape) == (p.model_vocab, cpu.hidden_size)
    rope = RotaryEmbedding(kv_channels=cpu.kv_channels, rotary_percent=args.rotary_percent,
                           rotary_base=args.rotary_base, use_cpu_initialization=True)  # fmt: skip
    assert rope.inv_freq.numel() == cpu.kv_channels // 2


def test_te_run_chooses_fused_attention_explicitly(monkeypatch, smoke_data):
    """Item 3: the attention backend was auto, for which Megatron allows TE's flash, fused AND
    unfused attention (NVTE_*_ATTN=1, language_module.py:139): a shape cuDNN declined fell back to
    unfused attention silently. Chosen, Megatron pins cuDNN fused attention and TE fails loudly."""
    from megatron.core.models.common.language_module.language_module import LanguageModule
    from megatron.core.transformer.enums import AttnBackend

    _, flags = gpu_plan(monkeypatch, smoke_data, te=True, SIZE="1b")
    args, config = megatron_config(monkeypatch, flags)
    assert args.attention_backend == AttnBackend.fused
    for name in ("NVTE_FLASH_ATTN", "NVTE_FUSED_ATTN", "NVTE_UNFUSED_ATTN"):
        monkeypatch.delenv(name, raising=False)
    LanguageModule._set_attention_backend(types.SimpleNamespace(config=config))
    import os

    assert [os.environ[f"NVTE_{k}_ATTN"] for k in ("FLASH", "FUSED", "UNFUSED")] == ["0", "1", "0"]


@pytest.fixture
def gpu_node(monkeypatch):
    """Plans as on a real node with 8 sm90 GPUs (not a PLAN_GPUS preview)."""
    monkeypatch.delenv("PLAN_GPUS", raising=False)
    monkeypatch.setattr(planner, "gpu_info", lambda: (8, 9))
    yield
    for name in [m for m in sys.modules if m.split(".")[0] == "transformer_engine"]:
        del sys.modules[name]  # the broken stand-in below must not outlive its test


def test_hopper_node_without_te_refuses_instead_of_the_slow_path(gpu_node, smoke_data):
    """Item 2: a node where TE is missing planned the bf16 local spec without a word."""
    with pytest.raises(launch.LaunchError, match=r"sm90 GPU node .*not installed.*TE=0"):
        launch.plan({"DATA": str(smoke_data), "SIZE": "1b"})
    p = launch.plan({"DATA": str(smoke_data), "SIZE": "1b", "TE": "0"})
    assert not p.use_te and p.fp8 == "off" and p.te_problem == "TE=0"
    assert "--transformer-impl local" in " ".join(launch.megatron_args(p))


def test_hopper_node_with_a_broken_te_names_the_import_error(gpu_node, smoke_data, tmp_path,
                                                            monkeypatch):  # fmt: skip
    """Item 2: installed but not importable (built for another torch/CUDA) was taken as usable:
    the old presence check found the package."""
    pkg = tmp_path / "transformer_engine"
    (pkg / "pytorch").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "pytorch" / "__init__.py").write_text(
        "raise ImportError('libcudnn_engines_precompiled.so.9: cannot open shared object file')"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(launch.LaunchError, match=r"ImportError: libcudnn_engines.*TE=0"):
        launch.plan({"DATA": str(smoke_data), "SIZE": "1b"})


@pytest.mark.parametrize(
    "setting, gpus, capability, problem, preview, use_te",
    [("auto", 8, 9, None, False, True), ("auto", 8, 9, "x", False, "refused"),
     ("0", 8, 9, None, False, False), ("1", 8, 8, "x", False, "refused"),
     ("auto", 8, 8, "x", False, False), ("auto", 8, 9, "x", True, False),
     ("auto", 0, 0, "x", False, False), ("yes", 8, 9, None, False, "bad")],
)  # fmt: skip
def test_te_choice(setting, gpus, capability, problem, preview, use_te):
    kw = dict(num_gpus=gpus, capability=capability, problem=problem, preview=preview)
    if isinstance(use_te, str):
        with pytest.raises(launch.LaunchError, match="TE=0" if use_te == "refused" else "TE must"):
            gpu.te_choice(setting, **kw)
    else:
        assert gpu.te_choice(setting, **kw) is use_te


def test_many_nodes_lower_the_micro_batch_not_raise_the_global_batch(monkeypatch, smoke_data):
    """Item 5: 1b on 32 nodes (DP 256, micro batch 8) was planned with a global batch of 2048,
    4x the recipe's 512 tokens per step; now micro batch 2 x DP 256 = 512, and Megatron's own
    validation accepts the result."""
    p, flags = gpu_plan(monkeypatch, smoke_data, te=True, SIZE="1b", NNODES="32")
    assert (p.train.global_batch_size, p.train.micro_batch_size) == (512, 2)
    args, _ = megatron_config(monkeypatch, flags, world=256)
    assert (args.global_batch_size, args.micro_batch_size, args.data_parallel_size) == (512, 2, 256)
    assert "micro batch 2 (recipe's 8 lowered" in launch.describe(p)
    with pytest.raises(launch.LaunchError, match="does not split over 1024 data-parallel ranks"):
        gpu_plan(monkeypatch, smoke_data, te=True, SIZE="1b", NNODES="128")


@pytest.mark.parametrize(
    "batch, micro, dp, fitted",
    [(512, 8, 8, (8, 512)), (512, 8, 256, (2, 512)), (512, 4, 64, (4, 512)),
     (512, 8, 24, None), (8, 4, 16, None), (2048, 2, 1024, (2, 2048))],
)  # fmt: skip
def test_fit_batch(batch, micro, dp, fitted):
    if fitted is None:
        with pytest.raises(launch.LaunchError, match="does not split"):
            gpu.fit_batch(batch, micro, dp)
    else:
        assert gpu.fit_batch(batch, micro, dp) == fitted


def test_a_te_that_crashes_the_interpreter_is_a_message(tmp_path, monkeypatch):
    """The import is tried in a child: a TE whose libraries kill the process (segfault) is an
    error line, not a dead launcher."""
    from megatron_ext.config import te_import_error

    pkg = tmp_path / "transformer_engine"
    (pkg / "pytorch").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "pytorch" / "__init__.py").write_text("import os, signal\nos.kill(os.getpid(), 11)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert te_import_error() == "import transformer_engine.pytorch failed: exit code -11"
