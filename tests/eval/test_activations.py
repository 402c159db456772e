"""Massive activations and voids (eval.activations) on hand-built hidden states, answers by hand."""

from __future__ import annotations

import pytest
import torch

from eval.activations import active_layers, massive_activations, token_norms, void_summary


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


# token A: Delta = 2, 1, 0.5, 3.5 -> tau_3 = 0.8 (2 - 1), tau_4 = 0.8 (2 - 0.5) = 1.2
# token B: Delta = -1, 0.5, -0.3, 0 -> tau_2 = 0, tau_3 = tau_4 = 0.8 (0.5 + 1) = 1.2
NORMS = [[1.0, 3.0, 4.0, 4.5, 8.0], [2.0, 1.0, 1.5, 1.2, 1.2]]


def test_voids_known_answer():
    norms_nl = token_norms(states(NORMS))
    torch.testing.assert_close(norms_nl, torch.tensor(NORMS, dtype=torch.float64))
    active = active_layers(norms_nl)
    assert active.tolist() == [[True, True, False, True], [True, True, False, False]]
    summary = void_summary(active.sum(0), num_tokens=2, alpha=0.8)
    assert summary["layer_rate"] == [1.0, 1.0, 0.0, 0.5]
    assert summary["active_fraction"] == pytest.approx(0.625)
    # alpha is a setting: 0.3 lowers tau_3 of token A to 0.3 < Delta_3 = 0.5
    assert active_layers(norms_nl, alpha=0.3)[0].tolist() == [True, True, True, True]


def test_layer_one_always_active_layer_two_void_when_the_norm_shrinks():
    active = active_layers(torch.tensor([[5.0, 1.0, 0.9], [1.0, 2.0, 2.0]]))
    # layer 1 shrinks the norm by 4 and is still active (no earlier change); layer 2: tau = 0
    assert active.tolist() == [[True, False], [True, True]]


def test_bad_input():
    with pytest.raises(ValueError, match="L >= 1"):
        active_layers(torch.ones(3, 1))
    with pytest.raises(ValueError, match="alpha"):
        active_layers(torch.ones(3, 2), alpha=0.0)
    with pytest.raises(ValueError, match="no activations"):
        massive_activations(torch.empty(0))
