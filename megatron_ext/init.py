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
            if owner in layer_of:  # a TransformerLayer (local index -> global index)
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


# Transformer Engine's fused norm + GEMM modules own their norm's parameters under these names
# (te.pytorch.LayerNormLinear: weight, bias, layer_norm_weight, layer_norm_bias; LayerNormMLP:
# layer_norm_weight, layer_norm_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias). Megatron's TE
# spec uses LayerNormLinear for linear_qkv and linear_fc1 (the input and pre-MLP RMSNorms).
_TE_FUSED_NORM_WEIGHTS = ("layer_norm_weight",)
# Norm modules by class: torch's, Megatron's fused one, and the classes TENorm builds (TE's
# LayerNorm/RMSNorm) or Apex provides, matched by class name so TE/Apex need not be importable.
_NORM_CLASS_NAMES = frozenset(
    {"LayerNorm", "RMSNorm", "FusedLayerNorm", "FusedRMSNorm", "MixedFusedLayerNorm",
     "MixedFusedRMSNorm"}
)  # fmt: skip
_SCALED = ("linear_proj.weight", "linear_fc2.weight", "fc2_weight")


def is_norm_module(module: torch.nn.Module) -> bool:
    """True for a normalisation layer (its ``weight`` is a gain initialised to 1)."""
    return isinstance(module, torch.nn.LayerNorm | torch.nn.RMSNorm) or (
        type(module).__name__ in _NORM_CLASS_NAMES
    )


def init_kind(owner: torch.nn.Module, local_name: str, gname: str) -> str:
    """How Megatron initialises a parameter: ``ones`` (norm gains), ``zeros`` (biases),
    ``scaled`` (output projections: std / sqrt(2 L)) or ``normal`` (std).

    Decided by what the parameter is (the module that owns it and its attribute name there),
    not by the path the spec happens to give it: ``owner`` is the module that registers the
    parameter as ``local_name``; ``gname`` is its global dotted name.
    """
    if local_name in _TE_FUSED_NORM_WEIGHTS or (is_norm_module(owner) and local_name == "weight"):
        return "ones"
    if local_name == "bias" or local_name.endswith("_bias"):
        return "zeros"
    if gname.endswith(_SCALED):
        return "scaled"
    return "normal"


def param_owners(module: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, str]]:
    """Each parameter's dotted name -> (the module that registers it, its name there)."""
    out = {}
    for mod_name, mod in module.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):
            out[f"{mod_name}.{pname}" if mod_name else pname] = (mod, pname)
    return out


@torch.no_grad()
def layout_invariant_init(
    model_chunks: list[torch.nn.Module], *, seed: int, std: float, num_layers: int,
    tp_rank: int, tp_size: int, gated: bool = True,
) -> None:  # fmt: skip
    """Overwrite every parameter of ``model_chunks`` with its shard of a seed-determined tensor."""
    for chunk in model_chunks:
        names = global_names(chunk)
        owners = param_owners(chunk)
        for name, param in chunk.named_parameters():
            gname = names[name]
            kind = init_kind(*owners[name], gname)
            if kind in ("ones", "zeros"):
                param.fill_(1.0 if kind == "ones" else 0.0)
                continue
            pstd = std / math.sqrt(2.0 * num_layers) if kind == "scaled" else std
            shape = global_shape(param, tp_size)
            gen = torch.Generator(device=param.device).manual_seed(_seed(seed, gname))
            full = torch.empty(shape, dtype=torch.float32, device=param.device)
            full.normal_(0.0, pstd, generator=gen)
            for gsl, lsl in shard_pieces(gname, param, shape, tp_rank, tp_size, gated):
                param[lsl].copy_(full[gsl])
