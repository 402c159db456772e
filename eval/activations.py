"""Massive activations and voids of the residual stream: pure functions on hidden states.

Kept apart from the probe (no hooks, no model, no Megatron) so a unit test can check them on
hand-built states with answers known by hand. Shapes: ``_nh`` = [tokens, hidden], ``_nl`` =
[tokens, layers].

Massive activations (Sun et al., 2024): per residual state h_l, the three largest |a| over every
token and channel, the median |a|, and how many activations have |a| > 100 and |a| >= 1000 x the
median.

Voids (L2 adaptive computation): per token, Delta_l = ||h_l|| - ||h_{l-1}|| for l = 1..L (h_0 is
the embedding output), tau_l = alpha x (max_{j<l} Delta_j - min_{j<l} Delta_j), and layer l is a
void for that token when Delta_l < tau_l, active otherwise. Layer 1 has no earlier change to
compare with (tau_1 is undefined): it is counted as active for every token. Layer 2 has one
earlier change, so tau_2 = 0 and layer 2 is a void exactly when it shrinks the norm.
"""

from __future__ import annotations

import torch

MASSIVE_ABS = 100.0
"""``|a| > MASSIVE_ABS`` counts as massive in absolute terms."""
MASSIVE_REL = 1000.0
"""``|a| >= MASSIVE_REL x median |a|`` counts as massive relative to the layer."""
VOID_ALPHA = 0.8
"""Default alpha of the void threshold."""


def massive_activations(h_nh: torch.Tensor, top_k: int = 3) -> dict:
    """Massive-activation statistics of one residual state over a sample.

    Args:
        h_nh: every activation of h_l in the sample (any shape; it is flattened).
        top_k: how many of the largest |a| to report.

    Returns:
        ``top`` (the ``top_k`` largest |a|, descending), ``median`` (the lower median of |a|, as
        ``torch.median``), ``num_over_100`` (|a| > 100), ``num_over_1000x_median``
        (|a| >= 1000 x median) and ``num_activations``.
    """
    a = h_nh.detach().reshape(-1).abs()
    if not a.numel():
        raise ValueError("no activations")
    median = float(a.median())
    return {
        "top": a.topk(min(top_k, a.numel())).values.tolist(),
        "median": median,
        "num_over_100": int((a > MASSIVE_ABS).sum()),
        "num_over_1000x_median": int((a >= MASSIVE_REL * median).sum()),
        "num_activations": a.numel(),
    }


def token_norms(hidden: list[torch.Tensor]) -> torch.Tensor:
    """``[tokens, L+1]`` L2 norms ||h_0||..||h_L|| per token from L+1 states of one shape
    ``[..., hidden]`` (token order is whatever the leading dimensions give)."""
    return torch.stack([h.detach().double().norm(dim=-1).reshape(-1) for h in hidden], dim=-1)


def active_layers(norms_nl: torch.Tensor, alpha: float = VOID_ALPHA) -> torch.Tensor:
    """Which layers are active (not voids) for each token.

    Args:
        norms_nl: ``[tokens, L+1]`` norms ||h_0||..||h_L||.
        alpha: threshold scale (> 0).

    Returns:
        ``[tokens, L]`` bool, column l-1 for layer l; column 0 (layer 1) is all True.
    """
    if norms_nl.dim() != 2 or norms_nl.shape[1] < 2:
        raise ValueError(f"need [tokens, L+1] norms with L >= 1, got {tuple(norms_nl.shape)}")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    delta_nl = norms_nl[:, 1:] - norms_nl[:, :-1]  # column l-1: Delta_l
    running_max = torch.cummax(delta_nl, dim=1).values  # column l-1: max_{j<=l} Delta_j
    running_min = torch.cummin(delta_nl, dim=1).values
    active = torch.ones_like(delta_nl, dtype=torch.bool)
    tau = alpha * (running_max[:, :-1] - running_min[:, :-1])  # tau_l for l = 2..L
    active[:, 1:] = delta_nl[:, 1:] >= tau
    return active


def void_summary(num_active_l: torch.Tensor, num_tokens: int, alpha: float) -> dict:
    """Summary of ``active_layers`` counts gathered over a sample.

    Args:
        num_active_l: ``[L]`` tokens for which layer l is active (``active_layers(...).sum(0)``,
            summed over microbatches).
        num_tokens: tokens counted.
        alpha: the alpha used (recorded).

    Returns:
        ``alpha``, ``layer_rate`` (per layer 1..L, the fraction of tokens for which it is active)
        and ``active_fraction`` (the mean over tokens of the fraction of active layers, layer 1
        included; equal to the mean of ``layer_rate``).
    """
    rate = num_active_l.double() / num_tokens
    return {"alpha": alpha, "active_fraction": float(rate.mean()), "layer_rate": rate.tolist()}
