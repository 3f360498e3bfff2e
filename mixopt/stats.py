"""Rank statistics: how well one ordering of mixtures agrees with another.

    spearman(predicted, observed)     rank correlation, ties averaged (as scipy.stats.spearmanr)
    rankdata(values)                  0-based ranks with ties averaged (as scipy.stats.rankdata, minus 1)
    ordinal_ranks(values)             1-based ranks, lowest first, NaN last, ties in order given

numpy only: the study stages, `mixopt validate` and the report rank with these, and none of them
needs scipy or the plotting stack for it.
"""

from __future__ import annotations

import numpy as np


def rankdata(values) -> np.ndarray:
    """0-based ranks with ties averaged (as scipy.stats.rankdata, minus one)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = 0.5 * (start + end - 1)
            start = end
    return ranks


def spearman(a, b) -> float:
    """Spearman's rank correlation of two sequences; NaN when either has fewer than two values or
    no spread in rank."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def ordinal_ranks(values) -> np.ndarray:
    """1-based ranks of `values`, lowest first; NaN and infinities rank last; ties keep the order given."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(np.where(np.isfinite(values), values, np.inf), kind="mergesort")
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.arange(1, len(values) + 1)
    return ranks
