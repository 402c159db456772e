"""The JREG math: per-token displacement between a layer's input and output, and layer weights.

Pure torch, no distributed calls, no globals, so every function here can be checked against a
closed form on CPU. Shapes: hidden states are ``[..., h]`` (Megatron's ``[s, b, h]``); the
displacements are per token, ``[...]`` (``[s, b]``).

Both displacements are custom autograd functions that compute in fp32 whatever the input dtype
and save only the original (e.g. bf16) tensors, which are alive anyway as layer activations, plus
per-token fp32 scalars. A plain ``F.cosine_similarity(a.float(), b.float())`` would keep two fp32
``[s, b, h]`` copies alive until backward, doubling the activation memory of every layer.

They are registered as the regularisers ``jreg`` and ``l2rel`` (``megatron_ext/regularizers/``),
with their fused Triton twins (``jreg_triton``: same math, same saved tensors, one read of the
inputs per pass) as an attribute of the registration; the registration's call chooses which runs,
and ``displacement``/``relative_l2`` below are that call.
"""

from __future__ import annotations

import torch

from megatron_ext.schedules import SCHEDULES, parse_schedule, weights  # noqa: F401

# Norms below EPS are clamped, as in ``torch.nn.functional.cosine_similarity``: a zero vector gives
# a finite displacement (cos = 0, Psi = 0.5) instead of NaN.
EPS = 1e-8


def _acc(t: torch.Tensor) -> torch.Tensor:
    """The accumulation dtype: fp32 for bf16/fp16/fp32 inputs, float64 kept (for gradcheck)."""
    return t if t.dtype == torch.float64 else t.float()


def _fp32_stats(a: torch.Tensor, b: torch.Tensor):
    """Per-token fp32 ``(a.b, |a|, |b|)`` without materialising fp32 copies beyond a temporary."""
    a32, b32 = _acc(a), _acc(b)
    return (a32 * b32).sum(-1), a32.norm(dim=-1), b32.norm(dim=-1)


class Displacement(torch.autograd.Function):
    """Psi = (1 - cos(a, b)) / 2 per token, saving a, b and per-token scalars only."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        dot, na, nb = _fp32_stats(a, b)
        na_c, nb_c = na.clamp_min(EPS), nb.clamp_min(EPS)
        cos = dot / (na_c * nb_c)
        ctx.save_for_backward(a, b, na, nb, cos)
        return (1.0 - cos) * 0.5

    @staticmethod
    def backward(ctx, grad_psi: torch.Tensor):
        a, b, na, nb, cos = ctx.saved_tensors
        na_c, nb_c = na.clamp_min(EPS), nb.clamp_min(EPS)
        # dPsi/dcos = -1/2; dcos/da = b / (|a| |b|) - cos * a / |a|^2 (last term only where the
        # norm is not clamped, since the clamp has zero derivative there).
        g = -0.5 * _acc(grad_psi)
        inv = g / (na_c * nb_c)
        ga_self = torch.where(na > EPS, g * cos / na_c.square(), torch.zeros_like(g))
        gb_self = torch.where(nb > EPS, g * cos / nb_c.square(), torch.zeros_like(g))
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = (inv[..., None] * _acc(b) - ga_self[..., None] * _acc(a)).to(a.dtype)
        if ctx.needs_input_grad[1]:
            grad_b = (inv[..., None] * _acc(a) - gb_self[..., None] * _acc(b)).to(b.dtype)
        return grad_a, grad_b


class RelativeL2(torch.autograd.Function):
    """|b - a| / |a| per token, saving a, b and per-token scalars only."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a32 = _acc(a)
        nd = (_acc(b) - a32).norm(dim=-1)
        na = a32.norm(dim=-1)
        ctx.save_for_backward(a, b, nd, na)
        return nd / na.clamp_min(EPS)

    @staticmethod
    def backward(ctx, grad_r: torch.Tensor):
        a, b, nd, na = ctx.saved_tensors
        na_c, nd_c = na.clamp_min(EPS), nd.clamp_min(EPS)
        g = _acc(grad_r)
        # r = |d| / |a| with d = b - a: dr/db = d / (|d| |a|); dr/da = -dr/db - |d| a / |a|^3.
        coef_d = torch.where(nd > EPS, g / (nd_c * na_c), torch.zeros_like(g))
        coef_a = torch.where(na > EPS, g * nd / na_c.pow(3), torch.zeros_like(g))
        d = _acc(b) - _acc(a)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = (-coef_d[..., None] * d - coef_a[..., None] * _acc(a)).to(a.dtype)
        if ctx.needs_input_grad[1]:
            grad_b = (coef_d[..., None] * d).to(b.dtype)
        return grad_a, grad_b


def _registered(name: str):
    from megatron_ext.regularizers import get  # the plug-ins import this module

    return get(name)


def displacement(h_in: torch.Tensor, h_out: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """Per-token JREG displacement Psi = 1 - (1 + cos(h_in, h_out)) / 2 (``REG=jreg``).

    Args:
        h_in: layer input, ``[..., h]`` (Megatron ``[s, b, h]``), any float dtype.
        h_out: layer output, same shape.
        impl: ``auto`` (fused Triton kernel for CUDA tensors, eager on CPU), ``eager`` or
            ``triton`` (forced; CPU tensors only under ``TRITON_INTERPRET=1``).

    Returns:
        tensor ``[...]`` in [0, 1], fp32 (float64 for float64 inputs); 0.5 where either vector
        is all zeros.
    """
    return _registered("jreg")(h_in, h_out, impl=impl)


def relative_l2(h_in: torch.Tensor, h_out: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """Per-token relative L2 displacement ``|h_out - h_in| / |h_in|`` (``[...]``, fp32 or f64;
    ``REG=l2rel``); ``impl`` as for ``displacement``."""
    return _registered("l2rel")(h_in, h_out, impl=impl)


def layer_weights(num_layers: int, schedule: str = "uniform", **kw: float) -> torch.Tensor:
    """Layer-weight schedule w_1..w_L as a float64 tensor (``megatron_ext.schedules.weights``,
    which holds the schedules and their checks without torch, for the launcher)."""
    return torch.tensor(weights(num_layers, schedule, **kw), dtype=torch.float64)
