"""Massive activations and voids of the residual stream: pure functions on hidden states.

Kept apart from the probe (no hooks, no model, no Megatron) so a unit test can check them on
hand-built states with answers known by hand. Shapes: ``_nh`` = [tokens, hidden], ``_bsh`` =
[sequences, positions, hidden], ``_nl`` = [tokens, layers].

Massive activations, as the paper's code computes them (Sun et al., 2024, locuslab/
massive-activations ``main_llm.py --exp2``): per sequence and residual state h_l, the three
largest |a| and the lower median |a| (``torch.median``) over every position and channel, then the
mean of each over sequences. ``MassiveStats`` streams this (nothing kept but sums), and adds
``max_pooled`` (the largest |a| of the whole sample) and counts of |a| > 100 and of
|a| >= 1000 x the median of the activation's own sequence.

Voids (L2 adaptive computation, manishemirani/void_in_language_models ``lac.py``): per token,
Delta_l = ||h_l|| - ||h_{l-1}|| for l = 1..L (h_0 is the input of layer 1), tau_l = alpha x
(max_{j<l} Delta_j - min_{j<l} Delta_j), and layer l is a void for that token when
Delta_l < tau_l, active otherwise. Layer 1 has no earlier change; the reference then takes the
range over its batch dimension, which for one sequence gives tau_1 = 0: layer 1 is a void exactly
when it shrinks the norm (||h_1|| < ||h_0||). We use tau_1 = 0 for every token (the one-sequence
answer; the reference's batch-dependent threshold for batches of several sequences is not copied).
"""

from __future__ import annotations

import torch

MASSIVE_ABS = 100.0
"""``|a| > MASSIVE_ABS`` counts as massive in absolute terms."""
MASSIVE_REL = 1000.0
"""``|a| >= MASSIVE_REL x median |a|`` counts as massive relative to the sequence's median."""
VOID_ALPHA = 0.8
"""Default alpha of the void threshold."""
MASSIVE_DEFINITION = (
    "Sun et al. 2024 (locuslab/massive-activations main_llm.py exp2): per sequence, top-3 and "
    "lower median of |a| over all positions and channels of h_l, averaged over sequences"
)


def massive_activations(h_nh: torch.Tensor, top_k: int = 3) -> dict:
    """Massive-activation statistics of one residual state of ONE sequence (or any set).

    Args:
        h_nh: every activation of h_l in the set (any shape; it is flattened).
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


class MassiveStats:
    """The paper's per-sequence statistic of states h_0..h_{n-1}, streamed over batches."""

    def __init__(self, num_states: int, top_k: int = 3):
        self.top_k = top_k
        self.top = torch.zeros(num_states, top_k, dtype=torch.float64)
        self.median = torch.zeros(num_states, dtype=torch.float64)
        self.max_pooled = torch.zeros(num_states, dtype=torch.float64)
        self.over_abs = torch.zeros(num_states, dtype=torch.int64)
        self.over_rel = torch.zeros(num_states, dtype=torch.int64)
        self.num_activations = torch.zeros(num_states, dtype=torch.int64)
        self.num_sequences = 0

    @torch.no_grad()
    def add(self, hidden_bsh: list[torch.Tensor]) -> None:
        """One batch: state i is ``[sequences, positions, hidden]``."""
        if len(hidden_bsh) != len(self.median):
            raise ValueError(f"expected {len(self.median)} states, got {len(hidden_bsh)}")
        for i, h_bsh in enumerate(hidden_bsh):
            a_bn = h_bsh.detach().float().abs().reshape(h_bsh.shape[0], -1)
            if a_bn.shape[1] < self.top_k:
                raise ValueError(f"a sequence has fewer than {self.top_k} activations")
            top = a_bn.topk(self.top_k, dim=1).values.double()
            median_b = a_bn.median(dim=1).values
            self.top[i] += top.sum(0).cpu()
            self.median[i] += float(median_b.double().sum())
            self.max_pooled[i] = max(float(self.max_pooled[i]), float(top[:, 0].max()))
            self.over_abs[i] += int((a_bn > MASSIVE_ABS).sum())
            self.over_rel[i] += int((a_bn >= MASSIVE_REL * median_b[:, None]).sum())
            self.num_activations[i] += a_bn.numel()
        self.num_sequences += hidden_bsh[0].shape[0]

    def summary(self) -> dict:
        """Per state (lists over h_0..h_L): ``top`` and ``median`` (the paper's), the rest ours."""
        if not self.num_sequences:
            raise RuntimeError("no sequence was added")
        n = self.num_sequences
        return {
            "definition": MASSIVE_DEFINITION,
            "top": (self.top / n).tolist(),
            "median": (self.median / n).tolist(),
            "max_pooled": self.max_pooled.tolist(),
            "num_over_100": self.over_abs.tolist(),
            "num_over_1000x_median": self.over_rel.tolist(),
            "num_activations": self.num_activations.tolist(),
            "num_sequences": n,
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
        ``[tokens, L]`` bool, column l-1 for layer l; column 0 (layer 1, tau_1 = 0) is True
        where layer 1 does not shrink the norm.
    """
    if norms_nl.dim() != 2 or norms_nl.shape[1] < 2:
        raise ValueError(f"need [tokens, L+1] norms with L >= 1, got {tuple(norms_nl.shape)}")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    delta_nl = norms_nl[:, 1:] - norms_nl[:, :-1]  # column l-1: Delta_l
    running_max = torch.cummax(delta_nl, dim=1).values  # column l-1: max_{j<=l} Delta_j
    running_min = torch.cummin(delta_nl, dim=1).values
    tau_nl = torch.zeros_like(delta_nl)  # tau_1 = 0
    tau_nl[:, 1:] = alpha * (running_max[:, :-1] - running_min[:, :-1])  # tau_l for l = 2..L
    return delta_nl >= tau_nl


def void_summary(num_active_l: torch.Tensor, num_tokens: int, alpha: float) -> dict:
    """Summary of ``active_layers`` counts gathered over a sample.

    Args:
        num_active_l: ``[L]`` tokens for which layer l is active (``active_layers(...).sum(0)``,
            summed over microbatches).
        num_tokens: tokens counted.
        alpha: the alpha used (recorded).

    Returns:
        ``alpha``, ``layer_rate`` (per layer 1..L, the fraction of tokens for which it is active)
        and ``active_fraction`` (the mean over tokens of the fraction of active layers; equal to
        the mean of ``layer_rate``).
    """
    rate = num_active_l.double() / num_tokens
    return {"alpha": alpha, "active_fraction": float(rate.mean()), "layer_rate": rate.tolist()}
