"""GPU activation memory as README states it (issue 20, items 6 and 7).

Item 7: README gave 8b's activations at seq 4096 (~18 GB) while the recipe trains at 8192.
Item 6: with PP > 1 the JREG layer output a stage sends stays alive after Megatron's
``deallocate_output_tensor``: shown here with Megatron's own function on the layer's exact
sequence (JregRuntime.apply, then make_viewless_tensor as megatron_ext/layer.py does), and counted
in ``launcher.memory.gpu_activations``.
"""

from __future__ import annotations

import re

import pytest
import torch

from launcher.memory import gpu_activations
from recipes import SIZES
from tests.helpers import REPO


def test_readme_activation_figures_are_the_recipes():
    row = next(x for x in (REPO / "README.md").read_text().splitlines()
               if x.startswith("| micro batch 8 (1b)"))  # fmt: skip
    match = re.search(r"~(\d+), ~(\d+) and ~(\d+) GB of activations per GPU at (\d+), (\d+) and "
                      r"(\d+) tokens", row)  # fmt: skip
    assert match, row
    stated = [int(x) for x in match.groups()]
    for i, size in enumerate(("1b", "3b", "8b")):
        entry = SIZES[size]
        model, train, layout = entry.model(), entry.train(), entry.gpu_layout
        assert stated[3 + i] == model.seq_length, size
        est = gpu_activations(model, micro_batch_size=train.micro_batch_size, tp=layout.tp)
        assert stated[i] == round(est.total / 1e9), (size, est.total / 1e9)
    # 8b: 34 x 8192 x 2 x 4096 x 32 layers / TP 2 bytes
    assert gpu_activations(SIZES["8b"].model(), micro_batch_size=2, tp=2).total == 36_507_222_016


def test_jreg_pins_the_stage_output_megatron_deallocates():
    """After Megatron's deallocate_output_tensor the sent tensor holds 1 element, yet the JREG
    displacement's saved h_out is the full [s, b, h] storage: the pipeline frees nothing."""
    from megatron.core.pipeline_parallel.schedules import deallocate_output_tensor
    from megatron.core.utils import make_viewless_tensor

    from megatron_ext.reg import JregRuntime
    from megatron_ext.regconfig import JregConfig

    s, b, h = 16, 2, 32
    runtime = JregRuntime(JregConfig(num_layers=2, lam=0.1))
    h_in = torch.randn(s, b, h, dtype=torch.bfloat16, requires_grad=True)
    h_out = h_in + torch.randn(s, b, h, dtype=torch.bfloat16)  # the residual add
    address = h_out.data_ptr()
    out = runtime.apply(2, h_in, h_out, training=True)
    sent = make_viewless_tensor(out, requires_grad=True, keep_graph=True)  # megatron_ext/layer.py
    assert sent.data_ptr() == address
    deallocate_output_tensor(sent, deallocate_pipeline_outputs=True)
    assert sent.numel() == 1
    saved = [t for node in _graph(sent.grad_fn) if "Displacement" in type(node).__name__
             for t in node.saved_tensors]  # fmt: skip
    pinned = [t for t in saved if t.data_ptr() == address]
    assert len(pinned) == 1 and pinned[0].shape == (s, b, h)
    # counted: one such bf16 tensor per micro batch in flight (PP on stage 0), / TP
    model = SIZES["8b"].model()
    est = gpu_activations(model, micro_batch_size=2, tp=2, pp=4)
    assert est.pinned_stage_outputs == 4 * model.seq_length * 2 * model.hidden_size * 2 // 2
    assert est.pinned_stage_outputs < 0.01 * est.layers
    assert gpu_activations(model, micro_batch_size=2, tp=2).pinned_stage_outputs == 0


def _graph(fn):
    seen, todo = [], [fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.append(node)
        todo += [n for n, _ in node.next_functions]
    return seen


def test_without_te_the_micro_batch_fits_unfused_attention(monkeypatch, smoke_data):
    """Seen on an H200 (2026-12-04, docs/benchmarks.md): SIZE=1b with TE=0 kept the recipe's
    micro batch 8 at seq 4096 and ran out of memory in the first layer's unfused attention (131.9
    of 139.8 GiB in use, 8 GiB more asked). The estimate must call that run too large, and the
    plan lowers the micro batch (the global batch stays) and says why; with TE it is untouched."""
    from launcher import planner
    from launcher.cli import describe
    from launcher.gpu import GPU_USABLE, local_spec_bytes
    from launcher.settings import LaunchError
    from tests.gpu_path.test_launch_gpu import gpu_plan

    model = SIZES["1b"].model()
    h200 = 139.8 * 2**30  # torch's total_memory on that node
    seen = local_spec_bytes(model.replace(seq_length=4096), micro=8, vocab=128256, tp=1, pp=1,
                            cp=1, dp=1, distributed_optimizer=True)  # fmt: skip
    assert seen > GPU_USABLE * h200
    monkeypatch.setattr(planner, "gpu_memory", lambda: int(h200))
    monkeypatch.setattr(planner, "gpu_info", lambda: (8, 9))  # on the node, not a preview
    p, flags = gpu_plan(monkeypatch, smoke_data, te=False, SIZE="1b", TE="0")
    micro = p.train.micro_batch_size
    assert (
        micro < p.asked_micro_batch
        and p.train.global_batch_size == SIZES["1b"].train().global_batch_size
    )
    assert flags[flags.index("--micro-batch-size") + 1] == str(micro)
    assert (
        f"micro batch {micro} (recipe's {p.asked_micro_batch} lowered to fit unfused attention"
        in describe(p)
    )
    te, _ = gpu_plan(monkeypatch, smoke_data, te=True, SIZE="1b")
    assert te.train.micro_batch_size == te.asked_micro_batch
    kept, _ = gpu_plan(
        monkeypatch, smoke_data, te=False, SIZE="1b", TE="0", ARGS="--micro-batch-size 4"
    )
    assert kept.train.micro_batch_size == 4  # asked for: left alone
    monkeypatch.setattr(planner, "gpu_memory", lambda: 16 * 2**30)
    with pytest.raises(LaunchError, match="even micro batch 1 needs ~.* GiB per GPU of 16 GiB"):
        gpu_plan(monkeypatch, smoke_data, te=False, SIZE="1b", TE="0")
