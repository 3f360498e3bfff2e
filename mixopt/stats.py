"""Rank statistics: how well one ordering of mixtures agrees with another.

    spearman(predicted, observed)     rank correlation, ties averaged (as scipy.stats.spearmanr)
    rankdata(values)                  0-based ranks with ties averaged (as scipy.stats.rankdata, minus 1)
    ordinal_ranks(values)             1-based ranks, lowest first, NaN last, ties in order given
    top1_regret(predicted, observed)  where the run ranked first by `predicted` stands by `observed`

Intervals over seeds (what `mixopt validate` reports):

    t_interval(values)                mean and its two-sided Student-t interval (paired, on differences)
    paired_noise(table)               the noise of a paired difference, pooled over a (mixtures, seeds) table
    t_quantile(confidence, df)        two-sided critical value of Student's t (integer df)

numpy only: the study stages, `mixopt validate` and the report rank with these, and none of them
needs scipy or the plotting stack for it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

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


def top1_regret(predicted, observed) -> float:
    """Where the run that `predicted` ranks best (lowest) stands among all runs by `observed`: the
    share of the other runs with a lower observed value (0 when it is the best run, 1 the worst;
    ties in `observed` count in its favour). When several runs tie for the lowest prediction, the
    mean over them (the expected regret of picking one at random: about 0.5 for a model that
    predicts a constant). NaN with fewer than two runs. A model whose first pick is a median run
    scores about 0.5, however good its rank correlation."""
    predicted, observed = np.asarray(predicted, dtype=np.float64), np.asarray(observed, dtype=np.float64)
    if len(observed) < 2:
        return float("nan")
    chosen = observed[predicted == predicted.min()]
    return float(np.mean(np.sum(observed[None, :] < chosen[:, None], axis=1))) / (len(observed) - 1)


# -- intervals over seeds --------------------------------------------------------------------------
def t_two_sided_cdf(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with `df` (a positive integer) degrees of freedom, in closed form
    (Abramowitz & Stegun 26.7.3-4: a finite series in cos(theta), theta = atan(t / sqrt(df)))."""
    df = int(df)
    if df < 1:
        raise ValueError(f"df must be a positive integer, got {df}")
    t = abs(float(t))
    if math.isinf(t):
        return 1.0
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:        # sin(theta) * [1 + 1/2 c^2 + 1*3/(2*4) c^4 + ... up to c^(df-2)]
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return min(1.0, s * total)
    if df == 1:
        return 2.0 * theta / math.pi
    # 2/pi * [theta + sin(theta) cos(theta) (1 + 2/3 c^2 + 2*4/(3*5) c^4 + ... up to c^(df-3))]
    term, total = 1.0, 1.0
    for k in range(1, (df - 1) // 2):
        term *= c2 * (2 * k) / (2 * k + 1)
        total += term
    return min(1.0, 2.0 / math.pi * (theta + s * math.sqrt(c2) * total))


def t_quantile(confidence: float, df: int) -> float:
    """The t with P(|T| <= t) = confidence (the two-sided critical value: 12.706 for 95% and df 1,
    4.303 for df 2, 1.960 as df grows), by bisection on t_two_sided_cdf to 1e-12."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    low, high = 0.0, 1.0
    while t_two_sided_cdf(high, df) < confidence:
        high *= 2.0
    while high - low > 1e-12 * max(1.0, high):
        middle = 0.5 * (low + high)
        if t_two_sided_cdf(middle, df) < confidence:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided t-interval: mean +- t(confidence, n - 1) * sd / sqrt(n).

    n counts the finite values used; sd is their sample standard deviation (ddof 1). With fewer than
    two values sd, half_width, low and high are NaN (one value says nothing about its spread)."""

    mean: float
    low: float
    high: float
    half_width: float
    sd: float
    n: int
    confidence: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def t_interval(values, confidence: float = 0.95) -> Interval:
    """The mean of the finite entries of `values` and its t-interval (Student's t, n - 1 degrees of
    freedom): for per-seed paired differences this is the paired t-interval."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return Interval(mean, math.nan, math.nan, math.nan, math.nan, n, confidence)
    sd = float(values.std(ddof=1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, half, sd, n, confidence)


@dataclass(frozen=True)
class PairedNoise:
    """The noise of one paired difference between two mixtures at one seed, pooled over a table.

    sd: sqrt(2) * the residual standard deviation of the (mixtures x seeds) table after removing
    each mixture's mean and each seed's mean (two-way additive model; under common random numbers
    the seed's mean is the shift that seed gives every mixture alike). df = (M - 1)(S - 1).
    resolution: the half-width of a 95% interval of a paired difference averaged over the S seeds,
    t(confidence, df) * sd / sqrt(S): differences smaller than this cannot be told from zero."""

    sd: float
    df: int
    seeds: int
    mixtures: int
    resolution: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def paired_noise(table, confidence: float = 0.95) -> PairedNoise:
    """PairedNoise of a (mixtures, seeds) table of objectives; seeds with a non-finite entry are left
    out. NaN figures when fewer than two mixtures or two seeds remain."""
    table = np.asarray(table, dtype=np.float64)
    if table.ndim != 2:
        raise ValueError(f"table must be (mixtures, seeds), got shape {table.shape}")
    table = table[:, np.all(np.isfinite(table), axis=0)]
    M, S = table.shape
    df = (M - 1) * (S - 1)
    if M < 2 or S < 2:
        return PairedNoise(math.nan, max(df, 0), S, M, math.nan)
    residual = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + table.mean()
    sd = math.sqrt(2.0 * float(np.sum(residual ** 2)) / df)
    return PairedNoise(sd, df, S, M, t_quantile(confidence, df) * sd / math.sqrt(S))
