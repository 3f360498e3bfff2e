import numpy as np
import pytest

import mixopt
from mixopt import InputError
from mixopt.surrogate import LightGBMSurrogate, LinearSurrogate, cross_val_predict


def quadratic_runs(n=120, K=4, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.ones(K), size=n)
    optimum = np.linspace(1, 2, K) / np.linspace(1, 2, K).sum()
    y = 2.0 + ((X - optimum) ** 2).sum(axis=1) + noise * rng.standard_normal(n)
    return X, y


def test_lightgbm_predictions_repeat_exactly_for_a_seed():
    X, y = quadratic_runs()
    first = LightGBMSurrogate(seed=3).fit(X, y).predict(X[:10])
    second = LightGBMSurrogate(seed=3).fit(X, y).predict(X[:10])
    np.testing.assert_array_equal(first, second)


def test_lightgbm_ranks_held_out_mixtures():
    X, y = quadratic_runs(n=300)
    model = LightGBMSurrogate().fit(X[:200], y[:200])
    correlation = np.corrcoef(model.predict(X[200:]), y[200:])[0, 1]
    assert correlation > 0.8


def test_regmix_settings_cannot_split_on_few_runs_but_ours_can():
    X, y = quadratic_runs(n=24)
    assert np.ptp(LightGBMSurrogate(regmix=True).fit(X, y).predict(X)) == 0.0
    assert np.ptp(LightGBMSurrogate().fit(X, y).predict(X)) > 0.0


def test_linear_recovers_a_linear_law():
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), size=50)
    y = X @ np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(LinearSurrogate(ridge=0).fit(X, y).predict(X), y, atol=1e-8)


def test_multi_output_shapes():
    X, y = quadratic_runs(n=60)
    Y = np.stack([y, 2 * y], axis=1)
    model = mixopt.fit(X, Y, kind="linear")
    assert model.predict(X[:5]).shape == (5, 2)
    assert mixopt.fit(X, y, kind="linear").predict(X[:5]).shape == (5,)


def test_auto_picks_by_cross_validation_and_reports_scores():
    X, y = quadratic_runs(n=80)
    model = mixopt.fit(X, y, seed=0)
    members = set(mixopt.surrogate.DEFAULT_MEMBERS)
    assert set(model.cv_scores_) == members | {"ensemble"}
    # stacking never does worse out of fold than the best single member, and its weights are a simplex
    assert model.cv_scores_["ensemble"] <= min(model.cv_scores_[m] for m in members) + 1e-12
    assert np.all(model.weights_ >= 0) and np.allclose(model.weights_.sum(axis=0), 1.0)


def test_cross_val_predict_never_sees_the_held_out_row():
    X, y = quadratic_runs(n=30)
    y_spiked = y.copy()
    y_spiked[0] = 100.0  # a model that saw row 0 would predict far above 2 there
    out_of_fold = cross_val_predict(lambda: LinearSurrogate(), X, y_spiked, folds=30)
    in_sample = LinearSurrogate().fit(X, y_spiked).predict(X[:1])
    assert out_of_fold[0, 0] < in_sample[0]


@pytest.mark.parametrize(
    "X, y, message",
    [
        (np.ones((3, 1)), np.ones(3), "K >= 2"),
        (np.ones((3, 2)), np.ones(4), "rows"),
        (np.full((3, 2), np.nan), np.ones(3), "NaN"),
        (np.ones((3, 2)), np.array([1.0, np.inf, 1.0]), "NaN or infinite"),
    ],
)
def test_bad_training_data_is_named(X, y, message):
    with pytest.raises(InputError, match=message):
        mixopt.fit(X, y)


def test_predict_before_fit_and_wrong_width():
    with pytest.raises(InputError, match="not fitted"):
        LinearSurrogate().predict(np.ones((2, 3)) / 3)
    model = LinearSurrogate().fit(*quadratic_runs(n=20, K=4))
    with pytest.raises(InputError, match="columns"):
        model.predict(np.ones((2, 3)) / 3)
