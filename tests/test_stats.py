"""Rank statistics (mixopt/stats.py): what the stages, `mixopt validate` and the report rank with."""

import numpy as np
import pytest

from mixopt.stats import ordinal_ranks, rankdata, spearman


def test_spearman_matches_the_textbook_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)  # scipy.stats.spearmanr
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert np.isnan(spearman([1.0], [2.0]))


def test_ranks_average_ties_and_order_the_rest():
    assert rankdata([3.0, 1.0, 3.0, 2.0]).tolist() == [2.5, 0.0, 2.5, 1.0]     # scipy.stats.rankdata - 1
    assert ordinal_ranks([3.0, np.nan, 1.0, 3.0, np.inf]).tolist() == [2, 4, 1, 3, 5]
