"""Rank statistics and intervals over seeds (mixopt/stats.py): what the stages, `mixopt validate` and the
report rank with, and the intervals `mixopt validate` reports."""

import numpy as np
import pytest

from mixopt.stats import (
    ordinal_ranks,
    paired_noise,
    rankdata,
    spearman,
    t_interval,
    t_quantile,
    t_two_sided_cdf,
    top1_regret,
)


def test_spearman_matches_the_textbook_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # scipy.stats.spearmanr
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert np.isnan(spearman([1.0], [2.0]))


def test_ranks_average_ties_and_order_the_rest():
    assert rankdata([3.0, 1.0, 3.0, 2.0]).tolist() == [2.5, 0.0, 2.5, 1.0]     # scipy.stats.rankdata - 1
    assert ordinal_ranks([3.0, np.nan, 1.0, 3.0, np.inf]).tolist() == [2, 4, 1, 3, 5]


def test_top1_regret_is_where_the_first_pick_stands():
    observed = [2.0, 1.0, 3.0, 4.0, 5.0]
    assert top1_regret([0.5, 0.1, 0.9, 0.9, 0.9], observed) == 0.0          # picks the best run
    assert top1_regret([0.9, 0.9, 0.9, 0.9, 0.1], observed) == 1.0          # picks the worst
    assert top1_regret([0.9, 0.9, 0.1, 0.9, 0.9], observed) == 0.5          # a median run
    assert top1_regret([0.1, 0.9, 0.9, 0.9, 0.9], [1.0, 1.0, 2.0, 3.0, 4.0]) == 0.0   # ties count in its favour
    assert top1_regret(np.zeros(5), observed) == 0.5          # no first pick (a constant): a random one
    assert top1_regret([0.1, 0.1, 0.9, 0.9, 0.9], observed) == 0.125   # a tie for first: the mean of 0.25 and 0
    assert np.isnan(top1_regret([1.0], [1.0]))


def test_t_quantiles_match_the_tables():
    # two-sided 95% critical values of Student's t (any statistics table; scipy.stats.t.ppf(0.975, df))
    table = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105, 9: 2.262157163, 30: 2.042272456}
    for df, expected in table.items():
        assert t_quantile(0.95, df) == pytest.approx(expected, abs=1e-8)
    assert t_quantile(0.90, 5) == pytest.approx(2.015048373, abs=1e-8)
    assert t_two_sided_cdf(t_quantile(0.95, 7), 7) == pytest.approx(0.95, abs=1e-12)
    assert t_quantile(0.95, 2000) == pytest.approx(1.961151, abs=1e-5)      # towards the normal's 1.959964


def test_t_interval_of_known_numbers():
    interval = t_interval([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sd sqrt(5/3), half-width t(0.975, 3) * sd / 2
    assert interval.mean == 2.5 and interval.n == 4
    assert interval.sd == pytest.approx(1.2909944487)
    assert (interval.low, interval.high) == pytest.approx((0.4457397432, 4.5542602568))
    paired = t_interval(np.array([2.71, 2.69, 2.73]) - np.array([2.70, 2.70, 2.70]))   # per-seed differences
    assert paired.mean == pytest.approx(0.01) and paired.half_width == pytest.approx(4.302652730 * 0.02 / 3 ** 0.5)
    with_failure = t_interval([0.5, np.nan, 1.5])          # a failed run is left out, not counted
    assert with_failure.n == 2 and with_failure.mean == 1.0
    one = t_interval([0.3])
    assert one.mean == 0.3 and np.isnan(one.low) and np.isnan(one.half_width)


def test_paired_noise_removes_the_mixture_and_the_seed_effects():
    mixture_effect = np.array([0.0, 0.1, -0.2])[:, None]
    seed_shift = np.array([0.0, 0.7, -0.4, 0.2])[None, :]
    additive = 2.0 + mixture_effect + seed_shift
    assert paired_noise(additive).sd == pytest.approx(0.0, abs=1e-12)
    residual = np.array([[0.01, -0.01, 0.0, 0.0], [-0.01, 0.01, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    noise = paired_noise(additive + residual)
    assert noise.df == 6 and noise.mixtures == 3 and noise.seeds == 4
    assert noise.sd == pytest.approx((2 * 4e-4 / 6) ** 0.5)          # sqrt(2 * sum of squares / df)
    assert noise.resolution == pytest.approx(t_quantile(0.95, 6) * noise.sd / 2)
    with_failure = paired_noise(np.column_stack([additive + residual, [2.0, np.nan, 2.0]]))
    assert with_failure.seeds == 4 and with_failure.sd == pytest.approx(noise.sd)
    assert np.isnan(paired_noise(additive[:, :1]).sd)
