"""Nemotron-CC quality buckets (arXiv 2412.02595): per-classifier percentile thresholds, 0-19 buckets, labels.

Per classifier, the 5th, 10th, ..., 95th token-weighted percentiles of its scores (on a sample) are 19
thresholds; a score's bucket is how many thresholds it reaches (0-19, as `np.digitize`); a document's bucket is
the max over classifiers, and its label: High = 19, Medium-High = 18, Medium = 12-17, Medium-Low = 7-11,
Low = 0-6. Pure numpy, shared by `quality` (which assigns buckets) and `mix` (which selects them).
"""

from __future__ import annotations

import numpy as np

PERCENTILES = np.arange(5, 100, 5)  # 19 cut points -> buckets 0..19
LABELS = ((19, "High"), (18, "Medium-High"), (12, "Medium"), (7, "Medium-Low"), (0, "Low"))  # (lowest bucket, label)


def weighted_percentiles(scores: np.ndarray, weights: np.ndarray, percentiles=PERCENTILES) -> np.ndarray:
    """Inverted-CDF weighted percentiles: for each p, the smallest score whose cumulative weight reaches p%.

    Integer weights (tokens) are compared exactly: cum_weight * 100 >= p * total.
    """
    order = np.argsort(scores, kind="stable")
    cum = np.cumsum(np.asarray(weights, dtype=np.int64)[order])
    idx = np.searchsorted(cum * 100, np.asarray(percentiles, dtype=np.int64) * cum[-1], side="left")
    return np.asarray(scores)[order][idx]


def digitize(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Bucket 0..len(thresholds): how many thresholds are <= the score (np.digitize, as NVIDIA's recipe)."""
    return np.digitize(scores, thresholds).astype(np.int8)


def ensemble_buckets(scores: dict[str, np.ndarray], thresholds: dict[str, np.ndarray]) -> np.ndarray:
    """Per document, the max over classifiers of its digitized score."""
    return np.max([digitize(scores[name], np.asarray(thresholds[name])) for name in thresholds], axis=0)


def bucket_labels(buckets: np.ndarray) -> np.ndarray:
    """High = 19, Medium-High = 18, Medium = 12-17, Medium-Low = 7-11, Low = 0-6."""
    lows = [low for low, _ in LABELS]
    return np.select([buckets >= low for low in lows], [label for _, label in LABELS], default="Low").astype(object)


def label_buckets(label: str) -> list[int]:
    """The buckets a label covers, e.g. "Medium" -> [12, ..., 17]."""
    buckets = [b for b in range(20) if bucket_labels(np.array([b]))[0] == label]
    if not buckets:
        raise ValueError(f"unknown quality label {label!r}; known: {[name for _, name in LABELS]}")
    return buckets
