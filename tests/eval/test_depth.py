"""Decision depth, frequency buckets and guess-then-refine (eval.depth) on hand-built top-1s."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eval.depth import BUCKETS, DepthStats, bucket_table, decision_depth


def test_bucket_table_ranks_by_count_ties_by_id():
    counts = np.arange(200)[::-1].copy()  # id 0 most frequent .. id 199 least
    counts[150] = 10_000  # the most frequent of all
    table = bucket_table(counts, vocab_size=210)
    assert table[150] == 0 and table[:9].tolist() == [0] * 9 and table[9] == 1
    assert table[10:99].tolist() == [1] * 89 and table[99] == 2 and table[205] == 2
    assert (table == 0).sum() == 10 and (table == 1).sum() == 90
    # padded vocabulary: ids beyond the counts are rest (unless among the first 100 ranks)
    assert bucket_table(np.array([5, 1]), 4).tolist() == [0, 0, 0, 0]


def test_decision_depth_first_layer_that_stays_final():
    tops = torch.tensor([
        [7, 7, 7, 7],  # decided at the embeddings
        [1, 7, 2, 7],  # agrees at 1 but changes at 2: decided at 3
        [1, 2, 7, 7],  # decided at 2
        [3, 3, 3, 9],  # only the output: 3 (= L)
    ])  # fmt: skip
    assert decision_depth(tops).tolist() == [0, 3, 2, 3]


def test_depth_stats_split_by_bucket_and_overturned_guesses():
    buckets = torch.tensor([0, 0, 1, 2, 2])  # ids 0,1 top10; 2 top100; 3,4 rest
    stats = DepthStats(num_layers=2, buckets=buckets)
    tops = torch.tensor([[0, 3, 3], [0, 0, 0], [1, 2, 2], [4, 4, 4]])
    stats.add(tops, torch.tensor([1.0, 1.0, 1.0, 0.0]))  # the last token is masked out
    out = stats.summary()
    assert out["buckets"] == list(BUCKETS)
    # final predictions: 3 (rest, depth 1), 0 (top10, depth 0), 2 (top100, depth 1)
    assert out["num_tokens"] == {"top10": 1.0, "top100": 1.0, "rest": 1.0}
    assert out["hist"]["top10"] == [1.0, 0.0, 0.0] and out["hist"]["rest"] == [0.0, 1.0, 0.0]
    assert out["mean"] == {"top10": 0.0, "top100": 1.0, "rest": 1.0}
    assert out["mean_all"] == pytest.approx(2 / 3)
    # layer 0 guesses 0, 0, 1: all top10; two of them overturned (0 -> 3, 1 -> 2)
    assert out["guess_share"]["top10"] == pytest.approx([1.0, 1 / 3, 1 / 3])
    assert out["guess_share"]["top100"] == pytest.approx([0.0, 1 / 3, 1 / 3])
    assert out["overturned"]["top10"] == pytest.approx([2 / 3, 0.0, 0.0])
    assert math.isnan(out["overturned"]["top100"][0])
    assert out["overturned"]["rest"] == pytest.approx([math.nan, 0.0, 0.0], nan_ok=True)
