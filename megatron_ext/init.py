"""Initial weights that depend only on the seed and the model, never on the parallel layout.

Megatron seeds each pipeline stage differently (seed + 100 * pp_rank) and its SwiGLU ``fc1``
CPU initialisation is not TP-invariant (the per-rank layout is [gate_r; up_r] while the split of
the full matrix is contiguous). Here every parameter is drawn in full from a generator seeded by
``(seed, global parameter name)`` with Megatron's distributions, and each rank keeps its shard:
TP=1, TP=2, PP=2 and VPP runs (and REG=none vs REG=jreg) start from the same model.

``global_name`` and ``shard_pieces`` also serve the inverse direction (gathering shards into
full tensors for tests and export).
"""

from __future__ import annotations

import hashlib
import math
import re

import torch
from megatron.core.transformer.transformer_layer import TransformerLayer

_LAYER_RE = re.compile(r"(^|\.)layers\.(\d+)\.")
_SCALED = ("linear_proj.weight", "linear_fc2.weight")


def global_names(model_chunk: torch.nn.Module) -> dict[str, str]:
    """Map each local parameter name of a model chunk to its layout-independent global name.

    Local layer indices become global 0-based layer indices; a DDP/Float16 ``module.`` prefix is
    dropped.
    """
    layer_of = {}
    for mod_name, mod in model_chunk.named_modules():
        if isinstance(mod, TransformerLayer):
            layer_of[mod_name] = mod.layer_number - 1
    out = {}
    for name, _ in model_chunk.named_parameters():
        gname = name
        match = _LAYER_RE.search(name)
        if match:
            owner = name[: match.end() - 1]
            gname = _LAYER_RE.sub(rf"\g<1>layers.{layer_of[owner]}.", name, count=1)
        while gname.startswith("module."):
            gname = gname[len("module.") :]
        out[name] = gname
    return out


def shard_pieces(
    gname: str, param: torch.Tensor, global_shape: tuple[int, ...], tp_rank: int, tp_size: int,
    gated: bool,
) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:  # fmt: skip
    """Where this rank's shard sits in the full tensor: ``[(global_slices, local_slices), ...]``."""
    full = tuple(slice(None) for _ in global_shape)
    if not getattr(param, "tensor_model_parallel", False) or tp_size == 1:
        return [(full, full)]
    dim = param.partition_dim
    if gated and gname.endswith("mlp.linear_fc1.weight"):
        # Global [gate; up] (each ffn rows); local [gate_r; up_r].
        half = global_shape[0] // 2
        part = half // tp_size
        pieces = []
        for j in range(2):
            g0 = j * half + tp_rank * part
            pieces.append(((slice(g0, g0 + part),), (slice(j * part, (j + 1) * part),)))
        return pieces
    part = global_shape[dim] // tp_size
    gsl = list(full)
    gsl[dim] = slice(tp_rank * part, (tp_rank + 1) * part)
    return [(tuple(gsl), full)]


def global_shape(param: torch.Tensor, tp_size: int) -> tuple[int, ...]:
    """Full (unsharded) shape of a parameter."""
    shape = list(param.shape)
    if getattr(param, "tensor_model_parallel", False):
        shape[param.partition_dim] *= tp_size
    return tuple(shape)


def _seed(seed: int, gname: str) -> int:
    digest = hashlib.sha256(f"{seed}:{gname}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _std(gname: str, std: float, num_layers: int) -> float | None:
    """Megatron's init: normal(std); output projections scaled; norms ones (None)."""
    if "layernorm" in gname or gname.endswith("norm.weight"):
        return None
    if gname.endswith(_SCALED):
        return std / math.sqrt(2.0 * num_layers)
    return std


@torch.no_grad()
def layout_invariant_init(
    model_chunks: list[torch.nn.Module], *, seed: int, std: float, num_layers: int,
    tp_rank: int, tp_size: int, gated: bool = True,
) -> None:  # fmt: skip
    """Overwrite every parameter of ``model_chunks`` with its shard of a seed-determined tensor."""
    for chunk in model_chunks:
        names = global_names(chunk)
        for name, param in chunk.named_parameters():
            gname = names[name]
            pstd = _std(gname, std, num_layers)
            if gname.endswith(".bias"):
                param.zero_()
                continue
            if pstd is None:
                param.fill_(1.0)
                continue
            shape = global_shape(param, tp_size)
            gen = torch.Generator(device=param.device).manual_seed(_seed(seed, gname))
            full = torch.empty(shape, dtype=torch.float32, device=param.device)
            full.normal_(0.0, pstd, generator=gen)
            for gsl, lsl in shard_pieces(gname, param, shape, tp_rank, tp_size, gated):
                param[lsl].copy_(full[gsl])
