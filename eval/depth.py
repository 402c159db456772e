"""How a model uses its depth (Gupta et al., "How Do LLMs Use Their Depth?"): pure functions on
the logit lens's top-1 predictions, kept apart from the model for hand-checked tests.

* Decision depth of a token: the first layer l (0 = embeddings .. L) from which the lens's top-1
  equals the model's final top-1 at every later layer; L when only the output agrees.
* Frequency buckets: token ids ranked by their count in the dataset (most frequent first):
  ``top10`` (ranks 1-10), ``top100`` (ranks 11-100), ``rest``. The decision-depth distribution is
  split by the bucket of the final prediction.
* Guess-then-refine: per layer l and bucket B, ``guess_share`` = fraction of tokens whose top-1 at
  layer l is in B, and ``overturned`` = of those, the fraction whose final top-1 differs (the
  guess a later layer overturns).

Shapes: ``_nl`` = [tokens, L+1 layers], ``_n`` = [tokens].
"""

from __future__ import annotations

import numpy as np
import torch

BUCKETS = ("top10", "top100", "rest")
_EDGES = (10, 100)


def bucket_table(counts: np.ndarray | torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``[vocab_size]`` bucket index (0 top10, 1 top100, 2 rest) from per-token-id counts.

    Ties are broken by the smaller token id; ids beyond ``counts`` (padded vocabularies) and ids
    never seen are ``rest`` unless they are among the first 100 ranks.
    """
    c = torch.zeros(vocab_size, dtype=torch.float64)
    src = torch.as_tensor(np.asarray(counts), dtype=torch.float64)[:vocab_size]
    c[: len(src)] = src
    order = torch.argsort(-c, stable=True)
    table = torch.full((vocab_size,), 2, dtype=torch.long)
    table[order[: _EDGES[1]]] = 1
    table[order[: _EDGES[0]]] = 0
    return table


def decision_depth(tops_nl: torch.Tensor) -> torch.Tensor:
    """``[tokens]`` first layer from which the top-1 equals the last column's and stays equal."""
    agree_nl = tops_nl == tops_nl[:, -1:]
    stays_nl = agree_nl.flip(1).long().cumprod(1).flip(1)  # 1 where this and every later agree
    return tops_nl.shape[1] - stays_nl.sum(1)


class DepthStats:
    """Decision depth and guess-then-refine, accumulated over (masked) tokens."""

    def __init__(self, num_layers: int, buckets: torch.Tensor):
        self.buckets = buckets.cpu()
        states = num_layers + 1
        self.hist = torch.zeros(len(BUCKETS), states, dtype=torch.float64)
        self.guess = torch.zeros(len(BUCKETS), states, dtype=torch.float64)
        self.overturned = torch.zeros(len(BUCKETS), states, dtype=torch.float64)

    def add(self, tops_nl: torch.Tensor, mask_n: torch.Tensor) -> None:
        """Top-1 ids of h_0..h_L (last column: the model's output) of some tokens."""
        tops_nl, mask_n = tops_nl.cpu(), mask_n.double().cpu()
        depth_n = decision_depth(tops_nl)
        final_bucket_n = self.buckets[tops_nl[:, -1]]
        self.hist.index_put_((final_bucket_n, depth_n), mask_n, accumulate=True)
        bucket_nl = self.buckets[tops_nl]
        changed_nl = (tops_nl != tops_nl[:, -1:]).double()
        layer_nl = torch.arange(tops_nl.shape[1]).expand_as(tops_nl)
        weight_nl = mask_n[:, None].expand_as(changed_nl)
        self.guess.index_put_((bucket_nl, layer_nl), weight_nl, accumulate=True)
        self.overturned.index_put_((bucket_nl, layer_nl), weight_nl * changed_nl, accumulate=True)

    def summary(self) -> dict:
        """JSON-ready; fractions are NaN where a bucket has no token."""
        total = float(self.hist.sum())
        n_b = self.hist.sum(1)
        layers = torch.arange(self.hist.shape[1], dtype=torch.float64)
        mean_b = (self.hist * layers).sum(1) / n_b
        out = {
            "buckets": list(BUCKETS),
            "num_tokens": dict(zip(BUCKETS, n_b.tolist(), strict=True)),
            "mean": dict(zip(BUCKETS, mean_b.tolist(), strict=True)),
            "mean_all": float((self.hist * layers).sum() / max(total, 1.0)),
            "hist": {b: (self.hist[i] / n_b[i]).tolist() for i, b in enumerate(BUCKETS)},
            "guess_share": {b: (self.guess[i] / max(total, 1.0)).tolist()
                            for i, b in enumerate(BUCKETS)},
            "overturned": {b: (self.overturned[i] / self.guess[i]).tolist()
                           for i, b in enumerate(BUCKETS)},
        }  # fmt: skip
        return out
