"""Fused Triton kernels for the per-token displacements of jreg.py (imported lazily, on demand).

The eager autograd functions in jreg.py read and write the ``[..., h]`` tensors several times
(fp32 casts, products, norms, then the gradient expressions, one kernel each): roughly 100 bytes
per hidden element for forward + backward. Here forward reads the two inputs once and writes
per-token scalars; backward reads them once more and writes the two gradients (~12 bytes per bf16
element in all). The math is jreg.py's, line for line (fp32 accumulation, norms clamped at
``EPS``, the clamp's zero derivative for zero vectors); tests compare both paths.

One program per token (row); it loops over the hidden size in ``BLOCK``-wide masked chunks, so
any ``h`` works. Saved for backward: the inputs as given (alive anyway as layer activations) and
per-token fp32 scalars, exactly what the eager functions save.

A regulariser opts in to a fused implementation by naming it in its registration
(``megatron_ext/regularizers/jreg.py``: ``fused="megatron_ext.jreg_triton:FusedDisplacement.apply"``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from megatron_ext.jreg import EPS

MAX_BLOCK = 1024  # elements of a row per loop iteration (fp32 registers: 3 x 4 KiB per program)


@triton.jit
def _load_pair(a_row, b_row, start, h, BLOCK: tl.constexpr):
    """Columns ``start .. start + BLOCK`` of one row of a and b in fp32 (zeros past ``h``)."""
    cols = start + tl.arange(0, BLOCK)
    mask = cols < h
    a = tl.load(a_row + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_row + cols, mask=mask, other=0.0).to(tl.float32)
    return cols, mask, a, b


@triton.jit
def _psi_fwd(a_ptr, b_ptr, psi_ptr, na_ptr, nb_ptr, cos_ptr, h, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    a_row, b_row = a_ptr + row * h, b_ptr + row * h
    dot = tl.zeros([BLOCK], dtype=tl.float32)
    sa = tl.zeros([BLOCK], dtype=tl.float32)
    sb = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, h, BLOCK):
        cols, mask, a, b = _load_pair(a_row, b_row, start, h, BLOCK)
        dot += a * b
        sa += a * a
        sb += b * b
    na = tl.sqrt(tl.sum(sa, axis=0))
    nb = tl.sqrt(tl.sum(sb, axis=0))
    cos = tl.sum(dot, axis=0) / (tl.maximum(na, eps) * tl.maximum(nb, eps))
    tl.store(psi_ptr + row, (1.0 - cos) * 0.5)
    tl.store(na_ptr + row, na)
    tl.store(nb_ptr + row, nb)
    tl.store(cos_ptr + row, cos)


@triton.jit
def _psi_bwd(
    a_ptr, b_ptr, g_ptr, na_ptr, nb_ptr, cos_ptr, ga_ptr, gb_ptr, h, eps,
    BLOCK: tl.constexpr, NEED_A: tl.constexpr, NEED_B: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    na = tl.load(na_ptr + row)
    nb = tl.load(nb_ptr + row)
    cos = tl.load(cos_ptr + row)
    g = -0.5 * tl.load(g_ptr + row).to(tl.float32)
    na_c, nb_c = tl.maximum(na, eps), tl.maximum(nb, eps)
    inv = g / (na_c * nb_c)
    # d|a|/da = a / |a| only where the norm is not clamped (as in jreg.Displacement.backward)
    ga_self = tl.where(na > eps, g * cos / (na_c * na_c), 0.0)
    gb_self = tl.where(nb > eps, g * cos / (nb_c * nb_c), 0.0)
    a_row, b_row = a_ptr + row * h, b_ptr + row * h
    for start in range(0, h, BLOCK):
        cols, mask, a, b = _load_pair(a_row, b_row, start, h, BLOCK)
        if NEED_A:
            ga = inv * b - ga_self * a
            tl.store(ga_ptr + row * h + cols, ga.to(ga_ptr.dtype.element_ty), mask=mask)
        if NEED_B:
            gb = inv * a - gb_self * b
            tl.store(gb_ptr + row * h + cols, gb.to(gb_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rl2_fwd(a_ptr, b_ptr, r_ptr, nd_ptr, na_ptr, h, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    a_row, b_row = a_ptr + row * h, b_ptr + row * h
    sd = tl.zeros([BLOCK], dtype=tl.float32)
    sa = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, h, BLOCK):
        cols, mask, a, b = _load_pair(a_row, b_row, start, h, BLOCK)
        d = b - a
        sd += d * d
        sa += a * a
    nd = tl.sqrt(tl.sum(sd, axis=0))
    na = tl.sqrt(tl.sum(sa, axis=0))
    tl.store(r_ptr + row, nd / tl.maximum(na, eps))
    tl.store(nd_ptr + row, nd)
    tl.store(na_ptr + row, na)


@triton.jit
def _rl2_bwd(
    a_ptr, b_ptr, g_ptr, nd_ptr, na_ptr, ga_ptr, gb_ptr, h, eps,
    BLOCK: tl.constexpr, NEED_A: tl.constexpr, NEED_B: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    nd = tl.load(nd_ptr + row)
    na = tl.load(na_ptr + row)
    g = tl.load(g_ptr + row).to(tl.float32)
    na_c, nd_c = tl.maximum(na, eps), tl.maximum(nd, eps)
    # r = |d| / |a|, d = b - a: dr/db = d / (|d| |a|); dr/da = -dr/db - |d| a / |a|^3
    coef_d = tl.where(nd > eps, g / (nd_c * na_c), 0.0)
    coef_a = tl.where(na > eps, g * nd / (na_c * na_c * na_c), 0.0)
    a_row, b_row = a_ptr + row * h, b_ptr + row * h
    for start in range(0, h, BLOCK):
        cols, mask, a, b = _load_pair(a_row, b_row, start, h, BLOCK)
        d = b - a
        if NEED_A:
            ga = -coef_d * d - coef_a * a
            tl.store(ga_ptr + row * h + cols, ga.to(ga_ptr.dtype.element_ty), mask=mask)
        if NEED_B:
            gb = coef_d * d
            tl.store(gb_ptr + row * h + cols, gb.to(gb_ptr.dtype.element_ty), mask=mask)


def _block(h: int) -> int:
    return min(MAX_BLOCK, triton.next_power_of_2(h))


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``[..., h]`` as contiguous ``[rows, h]`` (a view for Megatron's contiguous activations)."""
    return t.reshape(-1, t.shape[-1]).contiguous()


def _scalars(a: torch.Tensor, n: int) -> list[torch.Tensor]:
    return [torch.empty(a.shape[:-1], dtype=torch.float32, device=a.device) for _ in range(n)]


def _grads(ctx, a2: torch.Tensor, b2: torch.Tensor):
    ga = torch.empty_like(a2) if ctx.needs_input_grad[0] else a2
    gb = torch.empty_like(b2) if ctx.needs_input_grad[1] else b2  # unused pointer when not needed
    return ga, gb


def _unpack(ctx, ga, gb, a, b):
    return (
        ga.view(a.shape) if ctx.needs_input_grad[0] else None,
        gb.view(b.shape) if ctx.needs_input_grad[1] else None,
    )


class FusedDisplacement(torch.autograd.Function):
    """Triton twin of ``jreg.Displacement``: Psi per token, the same saved tensors."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a2, b2 = _rows(a), _rows(b)
        h = a2.shape[1]
        psi, na, nb, cos = _scalars(a, 4)
        if a2.shape[0]:
            _psi_fwd[(a2.shape[0],)](a2, b2, psi, na, nb, cos, h, EPS, BLOCK=_block(h))
        ctx.save_for_backward(a, b, na, nb, cos)
        return psi

    @staticmethod
    def backward(ctx, grad_psi: torch.Tensor):
        a, b, na, nb, cos = ctx.saved_tensors
        a2, b2 = _rows(a), _rows(b)
        h = a2.shape[1]
        ga, gb = _grads(ctx, a2, b2)
        if a2.shape[0]:
            _psi_bwd[(a2.shape[0],)](
                a2, b2, grad_psi.contiguous(), na, nb, cos, ga, gb, h, EPS, BLOCK=_block(h),
                NEED_A=ctx.needs_input_grad[0], NEED_B=ctx.needs_input_grad[1],
            )  # fmt: skip
        return _unpack(ctx, ga, gb, a, b)


class FusedRelativeL2(torch.autograd.Function):
    """Triton twin of ``jreg.RelativeL2``: |b - a| / |a| per token, the same saved tensors."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a2, b2 = _rows(a), _rows(b)
        h = a2.shape[1]
        r, nd, na = _scalars(a, 3)
        if a2.shape[0]:
            _rl2_fwd[(a2.shape[0],)](a2, b2, r, nd, na, h, EPS, BLOCK=_block(h))
        ctx.save_for_backward(a, b, nd, na)
        return r

    @staticmethod
    def backward(ctx, grad_r: torch.Tensor):
        a, b, nd, na = ctx.saved_tensors
        a2, b2 = _rows(a), _rows(b)
        h = a2.shape[1]
        ga, gb = _grads(ctx, a2, b2)
        if a2.shape[0]:
            _rl2_bwd[(a2.shape[0],)](
                a2, b2, grad_r.contiguous(), nd, na, ga, gb, h, EPS, BLOCK=_block(h),
                NEED_A=ctx.needs_input_grad[0], NEED_B=ctx.needs_input_grad[1],
            )  # fmt: skip
        return _unpack(ctx, ga, gb, a, b)
