"""The GPU path's findings (issue 9), each pinned on CPU: what a GPU run would hit first.

Transformer Engine is not installed on CPU machines, so its parameter names are written out here
from megatron-core 0.19.2's TE spec (gpt_layer_specs.py: TELayerNormColumnParallelLinear for
linear_qkv and linear_fc1, TERowParallelLinear for linear_proj/linear_fc2, TENorm for the final
and q/k norms) and TE's own modules (te.pytorch.LayerNormLinear: weight, layer_norm_weight,
layer_norm_bias; LayerNormMLP: layer_norm_weight, fc1_weight, fc2_weight; RMSNorm/LayerNorm:
weight, bias), and the init decision is tested on stand-ins with TE's class and attribute names.
"""

from __future__ import annotations

import json
import math
import os
import sys

import pytest
import torch

from megatron_ext.device import ALLOW_CPU_VAR, cluster_without_gpu, rank_device
from megatron_ext.init import init_kind, layout_invariant_init, param_owners
from megatron_ext.nonfinite import is_nonfinite_error
from tests.helpers import REPO, run_checked, torchrun

L = 4  # layers of the stand-in models
STD = 0.02

# One Llama layer (index 0) plus the model-level parameters, per spec: name -> expected kind.
LOCAL_NAMES = {
    "embedding.word_embeddings.weight": "normal",
    "decoder.layers.0.input_layernorm.weight": "ones",
    "decoder.layers.0.self_attention.linear_qkv.weight": "normal",
    "decoder.layers.0.self_attention.q_layernorm.weight": "ones",  # --qk-layernorm
    "decoder.layers.0.self_attention.k_layernorm.weight": "ones",
    "decoder.layers.0.self_attention.linear_proj.weight": "scaled",
    "decoder.layers.0.pre_mlp_layernorm.weight": "ones",
    "decoder.layers.0.mlp.linear_fc1.weight": "normal",
    "decoder.layers.0.mlp.linear_fc2.weight": "scaled",
    "decoder.final_layernorm.weight": "ones",
    "output_layer.weight": "normal",
}
TE_NAMES = {
    "embedding.word_embeddings.weight": "normal",
    "decoder.layers.0.self_attention.linear_qkv.layer_norm_weight": "ones",
    "decoder.layers.0.self_attention.linear_qkv.weight": "normal",
    "decoder.layers.0.self_attention.q_layernorm.weight": "ones",
    "decoder.layers.0.self_attention.k_layernorm.weight": "ones",
    "decoder.layers.0.self_attention.linear_proj.weight": "scaled",
    "decoder.layers.0.mlp.linear_fc1.layer_norm_weight": "ones",
    "decoder.layers.0.mlp.linear_fc1.weight": "normal",
    "decoder.layers.0.mlp.linear_fc2.weight": "scaled",
    "decoder.final_layernorm.weight": "ones",
    "output_layer.weight": "normal",
}
# TE's LayerNormMLP (norm + fc1 + fc2 in one module) and LayerNorm-flavoured fused norms.
TE_FUSED_MLP_NAMES = {
    "decoder.layers.0.mlp.layer_norm_weight": "ones",
    "decoder.layers.0.mlp.layer_norm_bias": "zeros",
    "decoder.layers.0.mlp.fc1_weight": "normal",
    "decoder.layers.0.mlp.fc2_weight": "scaled",
    "decoder.layers.0.self_attention.linear_qkv.layer_norm_bias": "zeros",
}

# The class that owns each parameter (by the last path component before the attribute).
TE_CLASS = {
    "linear_qkv": "LayerNormLinear", "linear_fc1": "LayerNormLinear", "linear_proj": "Linear",
    "linear_fc2": "Linear", "q_layernorm": "RMSNorm", "k_layernorm": "RMSNorm",
    "final_layernorm": "RMSNorm", "mlp": "LayerNormMLP", "word_embeddings": "Embedding",
    "output_layer": "Linear",
}  # fmt: skip
LOCAL_CLASS = {
    "input_layernorm": torch.nn.RMSNorm, "pre_mlp_layernorm": torch.nn.RMSNorm,
    "q_layernorm": torch.nn.RMSNorm, "k_layernorm": torch.nn.RMSNorm,
    "final_layernorm": torch.nn.RMSNorm,
}  # fmt: skip


def stand_in(names: dict[str, str], classes: dict) -> torch.nn.Module:
    """A module tree with exactly these parameter paths; owners get the given class (a name
    makes an empty nn.Module subclass of that name, as TE's modules are named)."""
    root = torch.nn.Module()
    for name in names:
        *path, attr = name.split(".")
        mod = root
        for i, part in enumerate(path):
            if not hasattr(mod, part):
                cls = classes.get(part, torch.nn.Module) if i == len(path) - 1 else torch.nn.Module
                if isinstance(cls, str):
                    cls = type(cls, (torch.nn.Module,), {})
                child = cls.__new__(cls)
                torch.nn.Module.__init__(child)
                mod.add_module(part, child)
            mod = getattr(mod, part)
        mod.register_parameter(attr, torch.nn.Parameter(torch.empty(64, 64)))
    return root


@pytest.mark.parametrize(
    "names, classes",
    [(LOCAL_NAMES, LOCAL_CLASS), (TE_NAMES, TE_CLASS), (TE_FUSED_MLP_NAMES, TE_CLASS)],
    ids=["local", "te", "te-layernorm-mlp"],
)
def test_every_norm_gain_is_one_and_the_rest_follow_megatron(names, classes):
    """Finding 1: TE's fused norm weights (linear_qkv/linear_fc1.layer_norm_weight) are gains."""
    model = stand_in(names, classes)
    owners = param_owners(model)
    assert {n: init_kind(*owners[n], n) for n in names} == names
    layout_invariant_init([model], seed=1, std=STD, num_layers=L, tp_rank=0, tp_size=1)
    params = dict(model.named_parameters())
    for name, kind in names.items():
        p = params[name]
        if kind in ("ones", "zeros"):
            assert (p == (1.0 if kind == "ones" else 0.0)).all(), name
        else:
            want = STD / math.sqrt(2 * L) if kind == "scaled" else STD
            assert p.std().item() == pytest.approx(want, rel=0.1), name


def test_te_and_local_specs_draw_the_same_weights():
    """The parameters both specs share get the same draws: TE-spec == local-spec init."""
    local, te = stand_in(LOCAL_NAMES, LOCAL_CLASS), stand_in(TE_NAMES, TE_CLASS)
    for model in (local, te):
        layout_invariant_init([model], seed=7, std=STD, num_layers=L, tp_rank=0, tp_size=1)
    lp, tp = dict(local.named_parameters()), dict(te.named_parameters())
    shared = set(lp) & set(tp)
    assert len(shared) == 9
    for name in shared:
        assert torch.equal(lp[name], tp[name]), name


def test_real_local_spec_names_and_qk_layernorm(tmp_path):
    """Findings 1 and 8 on a real Megatron model: the local spec built from a config with
    qk_layernorm=True has q/k norm modules, its names are the ones written out above, and every
    norm gain is 1 after the layout-invariant init."""
    out = tmp_path / "probe.json"
    torchrun(1, "tests.gpu_path.spec_probe", ["--out", str(out)], timeout=300)
    probe = json.loads(out.read_text())
    layer0 = {
        n: v for n, v in probe.items() if ".layers." not in n or ".layers.0." in n
    }  # fmt: skip
    assert set(layer0) == set(LOCAL_NAMES)
    for name, kind in LOCAL_NAMES.items():
        assert layer0[name]["ones"] == (kind == "ones"), name
    assert probe["decoder.layers.3.self_attention.q_layernorm.weight"]["owner"] == "RMSNorm"


def test_tracker_device_is_the_ranks_own_gpu():
    """Finding 3: rank with LOCAL_RANK=3 keeps its buffers on cuda:3, not cuda:0."""
    assert rank_device(True, {"LOCAL_RANK": "3"}) == "cuda:3"
    assert rank_device(True, {}) == "cuda:0"
    assert rank_device(False, {"LOCAL_RANK": "3"}) == "cpu"
    source = (REPO / "megatron_ext" / "train.py").read_text()
    assert "current_device()" not in source and "rank_device(" in source


def test_dataset_helpers_are_never_compiled(tmp_path):
    """Finding 2: without the CPU shims, Megatron's _compile_dependencies runs no `make`."""
    log = tmp_path / "make.log"
    fake = tmp_path / "bin" / "make"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit 2\n')
    fake.chmod(0o755)
    script = (
        "import torch, types\n"
        "from megatron_ext import cpu_compat, megatron_compat\n"
        "megatron_compat.enable()\n"
        "assert not cpu_compat.is_enabled()\n"
        "torch.distributed.init_process_group('gloo', rank=0, world_size=1)\n"
        "from megatron.training import global_vars, initialize\n"
        "global_vars.set_args(types.SimpleNamespace())\n"
        "initialize._compile_dependencies()\n"
        "print('compiled-ok')\n"
    )
    env = {
        "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "0",
    }  # fmt: skip
    code, out = run_checked([sys.executable, "-c", script], 300, **env)
    assert code == 0 and "compiled-ok" in out, out
    assert not log.exists(), log.read_text()


def test_synchronous_checkpoint_save_starts_no_process(tmp_path):
    """A torch_dist save without --async-save writes its results through an in-process queue,
    not a spawned multiprocessing Manager (a second Python start per saving process), and the
    checkpoint loads back."""
    script = (
        "import multiprocessing, sys, torch\n"
        "from megatron_ext import cpu_compat, megatron_compat\n"
        "cpu_compat.enable()\n"
        "megatron_compat.enable()\n"
        "torch.distributed.init_process_group('gloo', rank=0, world_size=1)\n"
        "from megatron.core import dist_checkpointing\n"
        "from megatron.core.dist_checkpointing import ShardedTensor\n"
        "def state(t):\n"
        "    return {'w': ShardedTensor.from_rank_offsets('w', t, replica_id=0)}\n"
        "dist_checkpointing.save(state(torch.arange(6.0)), sys.argv[1])\n"
        "assert not multiprocessing.active_children(), multiprocessing.active_children()\n"
        "loaded = dist_checkpointing.load(state(torch.zeros(6)), sys.argv[1])\n"
        "assert torch.equal(loaded['w'], torch.arange(6.0)), loaded\n"
        "print('saved-ok')\n"
    )
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0"}
    code, out = run_checked([sys.executable, "-c", script, str(ckpt)], 300, **env)
    assert code == 0 and "saved-ok" in out, out[-3000:]


def test_cpu_process_imports_megatron_without_the_compiler():
    """Megatron's @jit_fuser functions are plain functions on CPU (its noop_decorator), so a CPU
    process never imports torch._dynamo/inductor at start-up (~2.3 s each); torch.compile itself
    is still torch's."""
    script = (
        "import sys, torch\n"
        "real = torch.compile\n"
        "from megatron_ext import cpu_compat\n"
        "cpu_compat.enable()\n"
        "from megatron.core import jit\n"
        "from megatron.core.fusions.fused_bias_gelu import bias_gelu\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo imported'\n"
        "assert jit.jit_fuser is jit.noop_decorator, jit.jit_fuser\n"
        "assert torch.compile is real and bias_gelu.__module__.startswith('megatron')\n"
        "x, b = torch.randn(4), torch.randn(4)\n"
        "y = x + b\n"
        "ref = y * 0.5 * (1.0 + torch.tanh(0.79788456 * y * (1 + 0.044715 * y * y)))\n"
        "assert torch.allclose(bias_gelu(b, x), ref), (bias_gelu(b, x), ref)\n"
        "print('no-compiler-ok')\n"
    )
    code, out = run_checked([sys.executable, "-c", script], 300)
    assert code == 0 and "no-compiler-ok" in out, out[-3000:]


def test_no_gpu_in_a_cluster_job_is_refused():
    """Finding 4: a job that sees no GPU names the likely cause; ALLOW_CPU=1 overrides."""
    assert cluster_without_gpu(0, 1, {}) is None  # a laptop: CPU is fine
    assert cluster_without_gpu(8, 4, {"PBS_JOBID": "1.pbs"}) is None  # GPUs: fine
    msg = cluster_without_gpu(0, 1, {"PBS_JOBID": "7.pbs1"}, torch_cuda="13.0")
    assert "PBS job 7.pbs1" in msg and "driver may be too old for torch's CUDA 13.0" in msg
    msg = cluster_without_gpu(0, 1, {"SLURM_JOB_ID": "9", "CUDA_VISIBLE_DEVICES": "4,5"})
    assert "Slurm job 9" in msg and "CUDA_VISIBLE_DEVICES='4,5'" in msg
    assert "a 2-node run" in cluster_without_gpu(0, 2, {})
    assert cluster_without_gpu(0, 2, {ALLOW_CPU_VAR: "1", "PBS_JOBID": "1"}) is None


def test_launcher_refuses_cpu_training_in_a_job(tmp_path, smoke_data):
    launch = [sys.executable, "-m", "launcher", f"RUN={tmp_path / 'r'}",
              f"DATA={smoke_data}", "ITERS=1"]  # fmt: skip
    code, out = run_checked(launch, 300, PBS_JOBID="77.pbs1", CUDA_VISIBLE_DEVICES="2")
    assert code == 2, out
    assert out.strip().splitlines() == [
        "error: no GPU visible to torch inside PBS job 77.pbs1: CUDA_VISIBLE_DEVICES='2' is set; "
        "if it was exported from another node (or a login shell), unset it: the scheduler sets "
        "it per node. To train on CPU in a job anyway, set ALLOW_CPU=1"
    ]
    assert not (tmp_path / "r").exists()


def test_pbs_job_does_not_forward_cuda_visible_devices(tmp_path):
    """Finding 4: jobs/abci/pretrain.sh passed every CUDA_* variable to every node."""
    from tests.jobs.common import calls
    from tests.jobs.test_scripts import cluster_env, run

    script, env, _ = cluster_env(tmp_path, "pbs", SIZE="8b", RUN=tmp_path / "run",
                                 LAUNCH_PYTHON=tmp_path / "bin" / "fake-python",
                                 CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7")  # fmt: skip
    proc = run([script], env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mpirun = next(c for c in calls(tmp_path) if c[0] == "mpirun")
    exported = {mpirun[i + 1] for i, w in enumerate(mpirun) if w == "-x"}
    assert "CUDA_DEVICE_MAX_CONNECTIONS" in exported
    assert "CUDA_VISIBLE_DEVICES" not in exported


def _megatron_rejection(value: float, message: str) -> RuntimeError:
    """The RuntimeError Megatron's rerun state machine raises for a rejected result."""
    from unittest import mock

    from megatron.core.rerun_state_machine import RerunMode, RerunStateMachine

    machine = RerunStateMachine(mode=RerunMode.DISABLED)
    with mock.patch.object(torch.cuda, "current_device", return_value=0):
        with pytest.raises(RuntimeError) as info:
            machine.validate_result(
                result=torch.tensor(value), rejection_func=lambda x: True, message=message,
                fatal=True,
            )  # fmt: skip
    return info.value


def test_nan_exit_only_for_megatrons_nonfinite_rejection():
    """Finding 6: 'info', 'inference', 'infinite loop' in an error do not make it a NaN stop."""
    grad_nan = "found NaN in local grad norm for bucket #0 in backward pass before data-parallel"
    grad_inf = "found Inf in local grad norm for bucket #0 in backward pass before data-parallel"
    assert is_nonfinite_error(_megatron_rejection(float("nan"), grad_nan))
    assert is_nonfinite_error(_megatron_rejection(float("inf"), grad_inf))
    assert is_nonfinite_error(_megatron_rejection(float("nan"), "loss is NaN"))
    assert not is_nonfinite_error(_megatron_rejection(12.5, "found unexpected large grads"))
    for text in ("CUDA error: see info above", "inference mode tensors cannot be saved",
                 "infinite wait in NCCL watchdog", "nan"):  # fmt: skip
        assert not is_nonfinite_error(RuntimeError(text)), text
    assert not is_nonfinite_error(ValueError(str(_megatron_rejection(float("nan"), grad_nan))))


def test_train_uses_the_nonfinite_check():
    source = (REPO / "megatron_ext" / "train.py").read_text()
    assert "is_nonfinite_error(err)" in source and '"nan" not in' not in source
