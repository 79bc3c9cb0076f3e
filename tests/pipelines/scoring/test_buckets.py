"""Nemotron-CC bucketing: token-weighted percentile thresholds, digitizing, the max-ensemble and the labels."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.scoring.buckets import (
    PERCENTILES,
    bucket_labels,
    digitize,
    ensemble_buckets,
    label_buckets,
    weighted_percentiles,
)


def test_weighted_thresholds_and_digitize_match_a_hand_computed_example():
    # Four documents; the token weights put 10%, 30%, 40% and 20% of the tokens at each score.
    scores = np.array([0.9, 0.1, 0.7, 0.4])  # unsorted on purpose
    tokens = np.array([20, 10, 40, 30])
    # Cumulative token share in score order: 0.1 -> 10%, 0.4 -> 40%, 0.7 -> 80%, 0.9 -> 100%. The p-th threshold
    # is the smallest score whose cumulative share reaches p%: p=5,10 -> 0.1 (2 cuts); 15..40 -> 0.4 (6 cuts);
    # 45..80 -> 0.7 (8 cuts); 85..95 -> 0.9 (3 cuts).
    expected = [0.1] * 2 + [0.4] * 6 + [0.7] * 8 + [0.9] * 3
    thresholds = weighted_percentiles(scores, tokens)
    assert thresholds.tolist() == expected
    # bucket = how many thresholds are <= the score: 0.1 -> 2, 0.4 -> 8, 0.7 -> 16, 0.9 -> 19
    assert digitize(scores, thresholds).tolist() == [19, 2, 16, 8]
    # between two thresholds and below the lowest one
    assert digitize(np.array([0.05, 0.5, 1.0]), thresholds).tolist() == [0, 8, 19]


def test_token_weighting_moves_the_thresholds():
    scores = np.array([0.1, 0.4, 0.7, 0.9])
    # Equal weights: shares 25/50/75/100% -> 5 cuts at 0.1, 5 at 0.4, 5 at 0.7, 4 at 0.9.
    equal = weighted_percentiles(scores, np.ones(4, dtype=int))
    assert equal.tolist() == [0.1] * 5 + [0.4] * 5 + [0.7] * 5 + [0.9] * 4
    assert digitize(scores, equal).tolist() == [5, 10, 15, 19]
    # A long high-score document holding 97% of the tokens: every cut sits at its score, so it alone is
    # bucket 19 and the short documents fall to bucket 0 (by document count they would spread over 5..15).
    heavy = weighted_percentiles(scores, np.array([1, 1, 1, 97]))
    assert heavy.tolist() == [0.9] * 19
    assert digitize(scores, heavy).tolist() == [0, 0, 0, 19]


def test_each_bucket_holds_about_five_percent_of_the_tokens():
    rng = np.random.default_rng(0)
    scores, tokens = rng.random(20_000), rng.integers(50, 2000, 20_000)
    buckets = digitize(scores, weighted_percentiles(scores, tokens))
    share = np.bincount(buckets, tokens, minlength=20) / tokens.sum()
    assert len(PERCENTILES) == 19 and buckets.min() == 0 and buckets.max() == 19
    np.testing.assert_allclose(share, 0.05, atol=0.002)


def test_ensemble_takes_the_max_over_classifiers():
    thresholds = {"dclm": np.linspace(0.05, 0.95, 19), "edu": np.linspace(0.5, 4.5, 19)}
    scores = {
        "dclm": np.array([0.97, 0.02, 0.52, 0.02]),  # buckets 19, 0, 10, 0
        "edu": np.array([0.0, 4.9, 2.6, 0.0]),  # buckets 0, 19, 10 (2.5 <= 2.6 < 2.72), 0
    }
    assert digitize(scores["edu"], thresholds["edu"]).tolist() == [0, 19, 10, 0]
    assert ensemble_buckets(scores, thresholds).tolist() == [19, 19, 10, 0]
    # one classifier alone is its own digitized score
    assert ensemble_buckets({"dclm": scores["dclm"]}, {"dclm": thresholds["dclm"]}).tolist() == [19, 0, 10, 0]


def test_labels():
    labels = bucket_labels(np.arange(20)).tolist()
    assert labels == ["Low"] * 7 + ["Medium-Low"] * 5 + ["Medium"] * 6 + ["Medium-High", "High"]
    assert label_buckets("High") == [19] and label_buckets("Medium-High") == [18]
    assert label_buckets("Medium") == list(range(12, 18)) and label_buckets("Low") == list(range(7))
    with pytest.raises(ValueError, match="unknown quality label"):
        label_buckets("Excellent")
