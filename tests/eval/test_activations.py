"""Massive activations and voids (eval.activations) on hand-built hidden states, answers by hand."""

from __future__ import annotations

import pytest
import torch

from eval.activations import (
    MassiveStats,
    active_layers,
    massive_activations,
    token_norms,
    void_summary,
)


def test_massive_activations_known_answer():
    h_nh = torch.tensor(
        [[1.0, -2.0, 3.0, 0.5], [-0.1, 150.0, 1.0, 1.0], [2.0, -1.0, 0.25, -2500.0]]
    )
    # |a| sorted: 0.1 0.25 0.5 1 1 1 1 2 2 3 150 2500 -> lower median (6th of 12) = 1
    stats = massive_activations(h_nh)
    assert stats["top"] == [2500.0, 150.0, 3.0]
    assert stats["median"] == 1.0
    assert stats["num_over_100"] == 2  # 150 and 2500
    assert stats["num_over_1000x_median"] == 1  # 2500 >= 1000 x 1
    assert stats["num_activations"] == 12
    # the relative threshold is inclusive, the absolute one strict
    edge = massive_activations(torch.tensor([0.1, 0.1, 0.1, 100.0]))
    assert (edge["num_over_100"], edge["num_over_1000x_median"]) == (0, 1)


def states(norms: list[list[float]]) -> list[torch.Tensor]:
    """h_0..h_L as [s=1, b=tokens, hidden=3] with ||h_l|| of token t = norms[t][l]."""
    direction = torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64)  # unit vector
    n_tl = torch.tensor(norms, dtype=torch.float64)
    return [(n_tl[:, layer, None] * direction).unsqueeze(0) for layer in range(n_tl.shape[1])]


# token A: Delta = 2, 1, 0.5, 3.5 -> tau_1 = 0, tau_3 = 0.8 (2 - 1), tau_4 = 0.8 (2 - 0.5) = 1.2
# token B: Delta = -1, 0.5, -0.3, 0 -> tau_1 = tau_2 = 0, tau_3 = tau_4 = 0.8 (0.5 + 1) = 1.2
NORMS = [[1.0, 3.0, 4.0, 4.5, 8.0], [2.0, 1.0, 1.5, 1.2, 1.2]]


def test_voids_known_answer():
    norms_nl = token_norms(states(NORMS))
    torch.testing.assert_close(norms_nl, torch.tensor(NORMS, dtype=torch.float64))
    active = active_layers(norms_nl)
    assert active.tolist() == [[True, True, False, True], [False, True, False, False]]
    summary = void_summary(active.sum(0), num_tokens=2, alpha=0.8)
    assert summary["layer_rate"] == [0.5, 1.0, 0.0, 0.5]
    assert summary["active_fraction"] == pytest.approx(0.5)
    # alpha is a setting: 0.3 lowers tau_3 of token A to 0.3 < Delta_3 = 0.5
    assert active_layers(norms_nl, alpha=0.3)[0].tolist() == [True, True, True, True]


def test_layer_one_void_when_it_shrinks_the_norm_as_the_reference():
    """lac.py with one sequence: tau_1 = alpha x (max - min over a single value) = 0."""
    active = active_layers(torch.tensor([[5.0, 1.0, 0.9], [1.0, 2.0, 2.0], [1.0, 1.0, 3.0]]))
    # token 1: layer 1 shrinks (void), layer 2 tau = 0.8 x 0 = 0 and shrinks (void);
    # token 2: both grow or keep the norm (Delta = 0 >= tau = 0: active); token 3 likewise
    assert active.tolist() == [[False, False], [True, True], [True, True]]


def test_massive_stats_is_the_paper_per_sequence_mean():
    """Per sequence top-3 and lower median over positions x channels, then the sequence mean;
    streamed over batches of different sizes, equal to the per-sequence reference."""
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randn(5, 4, generator=gen) * (1 + 300 * (i == 2)) for i in range(5)]
    stats = MassiveStats(1)
    stats.add([torch.stack(seqs[:2])])
    stats.add([torch.stack(seqs[2:])])
    out = stats.summary()
    per = [massive_activations(s) for s in seqs]
    assert out["top"][0] == pytest.approx([sum(p["top"][k] for p in per) / 5 for k in range(3)])
    assert out["median"][0] == pytest.approx(sum(p["median"] for p in per) / 5)
    assert out["max_pooled"][0] == pytest.approx(max(p["top"][0] for p in per))
    assert out["num_over_100"][0] == sum(p["num_over_100"] for p in per) > 0
    assert out["num_over_1000x_median"][0] == sum(p["num_over_1000x_median"] for p in per)
    assert out["num_activations"] == [100] and out["num_sequences"] == 5
    pooled = massive_activations(torch.stack(seqs))
    assert out["median"][0] != pytest.approx(pooled["median"])  # not the pooled statistic


def test_bad_input():
    with pytest.raises(ValueError, match="L >= 1"):
        active_layers(torch.ones(3, 1))
    with pytest.raises(ValueError, match="alpha"):
        active_layers(torch.ones(3, 2), alpha=0.0)
    with pytest.raises(ValueError, match="no activations"):
        massive_activations(torch.empty(0))
