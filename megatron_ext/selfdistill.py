"""The self-distillation paper's loss: lambda * (zeta_1 + alpha * zeta_2), exact under TP.

    zeta_1 = sum_{l=0..L} w_l * mean_tokens KL(q_l, q_target)
    zeta_2 = sum_{l=1..L} w_l * mean_tokens |h_l - h_{l-1}| / |h_{l-1}|
    w_l    = exp(k l) / sum_{i=0..L} exp(k i)

q_l is the logit lens of h_l (the model's final norm, then its output layer; h_0 is the first
layer's input). Why this file exists apart from the per-token plug-ins of
``megatron_ext/regularizers/``: zeta_1 needs the output layer, whose rows are split over the TP
ranks (vocabulary-parallel), so every log-softmax takes the same cross-rank log-sum-exp as
Megatron's ``vocab_parallel_cross_entropy`` (max all-reduced, then the sum of exponentials).

Memory: the lens logits of one (layer, token chunk) exist at a time, [chunk, vocab / tp]; each
piece runs under ``torch.utils.checkpoint`` so backward recomputes it instead of keeping it, and
[L+1, s, b, vocab] is never held. The target's log-probabilities of one chunk (no grad) live while
one piece runs (recomputed in it, and again in its backward: the lens costs 6 projections per
(layer, token) where a plain forward + backward would cost 3).

``direction``: ``paper`` is KL(q_l || q_target) = sum q_l (log q_l - log q_target), the paper's
KL(q_l, q_target) read literally (mode-seeking in the student); ``forward`` is
KL(q_target || q_l), the usual distillation direction (the cross entropy to the target, less its
entropy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch.utils.checkpoint import checkpoint

from megatron_ext.sd_settings import SelfDistillConfig


def layer_weights(num_layers: int, k: float = 0.25) -> torch.Tensor:
    """w_0..w_L (float64), w_l = exp(k l) / sum_i exp(k i); they sum to 1."""
    return torch.softmax(k * torch.arange(num_layers + 1, dtype=torch.float64), dim=0)


class _AllReduceSum(torch.autograd.Function):
    """Sum of the ranks' partial values in forward. Backward: identity when every rank's consumer
    of the sum is the same replicated computation (the per-token KL feeding the loss, as
    Megatron's ``reduce_from_..._region``); the sum of the ranks' gradients when each rank's
    consumer is its own vocabulary shard (the log-sum-exp under every shard's log-probabilities:
    its gradient is the sum over the whole vocabulary)."""

    @staticmethod
    def forward(ctx, x, group, sum_grads: bool):
        ctx.group, ctx.sum_grads = group, sum_grads
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad):
        if ctx.sum_grads:
            grad = grad.clone()
            dist.all_reduce(grad, group=ctx.group)
        return grad, None, None


class _CopyToGroup(torch.autograd.Function):
    """Identity in forward; sum of the ranks' gradients in backward (the input is replicated and
    each rank uses it against its own vocabulary shard), as ``copy_to_..._region``."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _GatherTokens(torch.autograd.Function):
    """Sequence parallelism: all-gather the ranks' token pieces (dim 0) in forward; in backward,
    the sum of the ranks' gradients, this rank's piece (a reduce-scatter, written as all-reduce
    and slice so gloo runs it), as the output layer's input under SP."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad.chunk(dist.get_world_size(ctx.group))[dist.get_rank(ctx.group)], None


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 or wider (float64 stays float64, for the exactness tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _tp(group) -> bool:
    return group is not None and dist.is_initialized() and dist.get_world_size(group) > 1


def vocab_parallel_log_softmax(logits: torch.Tensor, group=None) -> torch.Tensor:
    """log softmax over the full vocabulary of ``logits`` [n, vocab / tp] (this rank's shard):
    the max (no grad: the result does not depend on it) and the sum of exponentials are
    all-reduced across ``group``, as in ``vocab_parallel_cross_entropy``."""
    logits = _wide(logits)
    m = logits.detach().amax(dim=-1, keepdim=True)
    if _tp(group):
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    sumexp = (logits - m).exp().sum(dim=-1, keepdim=True)
    if _tp(group):
        sumexp = _AllReduceSum.apply(sumexp, group, True)
    return logits - m - sumexp.log()


def _kl_piece(h, t_h, t_norm, t_weight, norm, weight, direction, group, sp):
    """Per-token KL of one chunk of one layer, [n]. The target's log-probabilities are computed
    here (no grad) rather than passed in: checkpoint keeps its inputs alive until backward, and
    [tokens, vocab / tp] of them per microbatch would be the largest tensor of the step."""
    with torch.no_grad():
        t_x = t_norm(t_h)
        if sp:
            t_x = _GatherTokens.apply(t_x, group)
        target_logp = vocab_parallel_log_softmax(t_x @ t_weight.t(), group)
    x = norm(h)
    if sp:  # the head's input, as ColumnParallelLinear's: SP gathers the tokens,
        x = _GatherTokens.apply(x, group)
    elif _tp(group):  # else the norm's output is replicated and its gradients summed
        x = _CopyToGroup.apply(x, group)
    logp = vocab_parallel_log_softmax(x @ weight.t(), group)
    if direction == "paper":
        per = (logp.exp() * (logp - target_logp)).sum(dim=-1)
    else:
        per = (target_logp.exp() * (target_logp - logp)).sum(dim=-1)
    if _tp(group):
        per = _AllReduceSum.apply(per, group, False)
    return per


def zeta1(
    hiddens: Sequence[torch.Tensor],
    norm: Callable[[torch.Tensor], torch.Tensor],
    weight: torch.Tensor,
    cfg: SelfDistillConfig,
    *,
    target: tuple[torch.Tensor, Callable, torch.Tensor] | None = None,
    group=None,
    sequence_parallel: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """zeta_1 and the per-layer token-mean KL (detached), from ``hiddens`` = [h_0, ..., h_L]
    (each [s, b, h], h_L before the final norm), the final ``norm``, the output layer's
    ``weight`` [vocab / tp, h] and the TP ``group``. ``target``: the frozen teacher's
    (h_L, norm, weight); None for ``teacher=self`` (h_L of ``hiddens``, detached).
    ``sequence_parallel``: the hidden states hold this rank's s / tp tokens (the loss and the
    metrics are over all tokens, the same on every rank; the norm's gradient is this rank's part,
    summed over TP by ``finalize_model_grads`` as for every SP norm)."""
    sp = sequence_parallel and _tp(group)
    num_layers = len(hiddens) - 1
    w = layer_weights(num_layers, cfg.k).tolist()
    t_h, t_norm, t_weight = target if target is not None else (hiddens[-1], norm, weight)
    flat = [h.reshape(-1, h.shape[-1]) for h in hiddens]
    t_flat = t_h.reshape(-1, t_h.shape[-1])
    n = flat[0].shape[0]
    n_all = n * (dist.get_world_size(group) if sp else 1)
    kl_sum = [_wide(flat[0].new_zeros(())) for _ in hiddens]
    for start in range(0, n, cfg.chunk_tokens):
        end = min(start + cfg.chunk_tokens, n)
        t_h = t_flat[start:end].detach()
        for layer, h in enumerate(flat):
            per = checkpoint(
                _kl_piece, h[start:end], t_h, t_norm, t_weight.detach(), norm, weight,
                cfg.direction, group, sp, use_reentrant=False,
            )  # fmt: skip
            kl_sum[layer] = kl_sum[layer] + per.sum()
    kl = torch.stack(kl_sum) / n_all
    total = sum(wl * kl[layer] for layer, wl in enumerate(w))
    return total, kl.detach()


def zeta2(
    hiddens: Sequence[torch.Tensor], k: float = 0.25, *, group=None, sequence_parallel=False
) -> tuple[torch.Tensor, torch.Tensor]:
    """zeta_2 and the per-layer token-mean relative change (detached), l = 1..L; under SP the
    ranks' means of their s / tp tokens are averaged (the gradient stays this rank's)."""
    w = layer_weights(len(hiddens) - 1, k).tolist()
    rel = torch.stack(
        [
            ((_wide(b) - _wide(a)).norm(dim=-1) / _wide(a).norm(dim=-1).clamp_min(1e-12)).mean()
            for a, b in zip(hiddens[:-1], hiddens[1:], strict=True)
        ]
    )
    if sequence_parallel and _tp(group):
        rel = _AllReduceSum.apply(rel / dist.get_world_size(group), group, False)
    total = sum(w[layer + 1] * rel[layer] for layer in range(len(rel)))
    return total, rel.detach()


def selfdistill_loss(
    hiddens, norm, weight, cfg: SelfDistillConfig, *, target=None, group=None, sp=False
):
    """zeta_1 + alpha * zeta_2 (multiply by lambda outside) and the metrics:
    ``{"zeta_1", "zeta_2", "kl" [L+1], "rel" [L]}`` (detached)."""
    z1, kl = zeta1(hiddens, norm, weight, cfg, target=target, group=group, sequence_parallel=sp)
    z2, rel = zeta2(hiddens, cfg.k, group=group, sequence_parallel=sp)
    metrics = {"zeta_1": z1.detach(), "zeta_2": z2.detach(), "kl": kl, "rel": rel}
    return z1 + cfg.alpha * z2, metrics
