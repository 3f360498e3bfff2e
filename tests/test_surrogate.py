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


# -- sparse swarms: many domains, most weights exactly zero, few runs ------------------------------
def sparse_swarm(n=64, K=40, seed=0, rare=(), rare_runs=2):
    """Mixtures as sparse swarms draw them (a random support per run, then random weights on it)
    and a loss with diminishing returns in each task's exposure (mean over tasks that each draw on
    a few domains). Domains in `rare` are non-zero in exactly `rare_runs` runs."""
    rng = np.random.default_rng(seed)
    support = rng.random((n, K)) < 0.3
    for j in rare:
        support[:, j] = False
        support[rng.choice(n, size=rare_runs, replace=False), j] = True
    support[~support.any(axis=1), 0 if 0 not in rare else 1] = True
    X = np.where(support, rng.gamma(1.0, size=(n, K)), 0.0)
    X /= X.sum(axis=1, keepdims=True)
    tasks = np.zeros((30, K))
    for t in range(30):
        tasks[t, rng.choice(K, size=3, replace=False)] = rng.uniform(0.3, 1.0, size=3)

    def loss(W):
        return np.mean(1.0 + 0.2 * (0.01 + W @ tasks.T) ** -0.3, axis=1)

    return X, loss(X) + 0.002 * rng.standard_normal(n), loss, rng


def test_auto_never_predicts_below_zero_or_far_below_the_best_run_on_a_sparse_swarm():
    X, y, _, rng = sparse_swarm(n=64, K=40, seed=1)
    model = mixopt.fit(X, y - y.min() + 0.01)          # losses close to zero: the floor at 0 binds too
    target = y - y.min() + 0.01
    support = rng.random((4000, 40)) < 0.3                 # unseen runs of the same swarm
    support[~support.any(axis=1), 0] = True
    unseen = np.where(support, rng.gamma(1.0, size=(4000, 40)), 0.0)
    unseen = np.vstack([unseen / unseen.sum(axis=1, keepdims=True), rng.dirichlet(np.full(40, 0.05), 4000), np.eye(40)])
    predicted = model.predict(unseen)
    assert predicted.min() >= 0.0
    assert predicted.min() >= target.min() - 1.0 * target.std() - 1e-12
    assert model.objective()(unseen).min() >= target.min() - 1.0 * target.std() - 1e-12


def test_soft_floor_changes_nothing_above_the_knee_and_never_goes_below_the_floor():
    from mixopt.surrogate.base import soft_floor

    values = np.linspace(-100.0, 3.0, 1001)
    floored = soft_floor(values, 1.0, 0.1)
    assert np.all(floored >= 1.0)
    assert np.all(np.diff(floored) >= 0)                               # order kept
    np.testing.assert_array_equal(floored[values >= 1.1], values[values >= 1.1])


@pytest.mark.parametrize("rare_runs", [0, 2])
def test_spread_is_larger_leaning_on_a_rarely_seen_domain_than_on_a_well_covered_one(rare_runs):
    X, y, _, _ = sparse_swarm(n=96, K=24, seed=2, rare=(0,), rare_runs=rare_runs)
    model = mixopt.fit(X, y)
    base = X[X[:, 0] == 0][:20]                         # runs the model was fitted on
    common = int(np.argmax((X > 0).sum(axis=0)))        # the domain most runs gave weight
    rare, covered = 0.5 * base, 0.5 * base
    rare[:, 0] += 0.5                                   # half the mixture on a domain 2 runs tried
    covered[:, common] += 0.5                           # half on one that many runs tried
    spread_rare, spread_covered = model.objective_spread(rare), model.objective_spread(covered)
    assert np.mean(spread_rare > spread_covered) >= 0.8
    assert np.median(spread_rare) > 2 * np.median(spread_covered)
    assert np.all(spread_rare < 2 * np.ptp(y))          # large, but on the scale of the losses
    assert np.median(model.objective_spread(base)) < np.median(spread_covered)


def test_no_pairwise_model_over_many_domains_on_few_runs():
    X, y, _, _ = sparse_swarm(n=128, K=64, seed=3)
    model = mixopt.fit(X, y)
    admitted = dict(zip(model.members, model.admitted_))
    assert not admitted["quadratic-wlog"]               # 2,144 features for 102 training runs per fold
    assert "quadratic-wlog" not in model.cv_scores_
    assert admitted["linear-wlog"] and admitted["gp"]


def test_stacking_cannot_hand_most_weight_to_an_unstable_member():
    from mixopt.surrogate import stacking_weights

    rng = np.random.default_rng(0)
    y = rng.standard_normal(100)
    steady = y + 0.5 * rng.standard_normal(100)         # fits the runs worse
    swinging = y + 0.3 * rng.standard_normal(100)       # fits the runs better ...
    oof = np.stack([steady, swinging], axis=1)
    assert stacking_weights(oof, y)[1] > 0.5             # ... and takes the weight on runs alone
    weights = stacking_weights(oof, y, instability=np.array([0.1, 3.0]))   # ... but swings elsewhere
    assert weights[1] < 0.1 and np.isclose(weights.sum(), 1.0)


def test_the_ensemble_measures_instability_and_keeps_weight_off_what_swings():
    X, y, _, _ = sparse_swarm(n=64, K=40, seed=4)
    model = mixopt.fit(X, y)
    weights = dict(zip(model.members, model.weights_[:, 0]))
    unstable = [m for m, s in model.instability_.items() if s > 1.5]
    assert unstable                                      # some member does swing on this swarm ...
    assert sum(weights[m] for m in unstable) < 0.25      # ... and gets little of the weight


def test_cv_summary_reports_signal_and_its_absence():
    X, y, loss, rng = sparse_swarm(n=80, K=12, seed=5)
    model = mixopt.fit(X, y)
    summary = mixopt.surrogate.cv_summary(model, y)
    assert summary["runs"] == 80
    assert summary["spearman"] > 0.7 and summary["top1_regret"] < 0.1
    noise = rng.standard_normal(80)
    none = mixopt.surrogate.cv_summary(mixopt.fit(X, noise), noise)
    assert abs(none["spearman"]) < 0.4
    # an array of out-of-fold predictions works as well; a model without them needs X
    assert mixopt.surrogate.cv_summary(model.honest_oof_, y) == summary
    linear = mixopt.fit(X, y, kind="linear-wlog")
    with pytest.raises(InputError, match="pass X"):
        mixopt.surrogate.cv_summary(linear, y)
    assert mixopt.surrogate.cv_summary(linear, y, X=X)["runs"] == 80


def test_gp_posterior_grows_away_from_the_runs_and_compiles_to_the_same_predictions():
    X, y = quadratic_runs(n=60, K=5, seed=1, noise=0.01)
    model = mixopt.fit(X, y, kind="gp")
    far = np.eye(5)                                      # vertices: far from Dirichlet(1) runs
    assert np.all(model.predict_std(far) > 3 * np.median(model.predict_std(X)))
    fresh = np.random.default_rng(9).dirichlet(np.ones(5), 200)
    np.testing.assert_allclose(model.objective()(fresh), model.predict(fresh), rtol=1e-10, atol=1e-12)
    correlation = np.corrcoef(model.predict(fresh), 2.0 + ((fresh - np.linspace(1, 2, 5) / 7.5) ** 2).sum(1))[0, 1]
    assert correlation > 0.95


def test_ensemble_objective_and_spread_programs_match_the_plain_path():
    X, y, _, rng = sparse_swarm(n=60, K=10, seed=6)
    Y = np.stack([y, y ** 2], axis=1)
    model = mixopt.fit(X, Y)
    points = mixopt.surrogate.recombined_mixtures(X, 300, seed=1)
    v = np.array([0.3, 0.7])
    np.testing.assert_allclose(model.objective(v)(points), mixopt.surrogate.base.soft_floor(
        model._predict(points) @ v, model.floor_ @ v, model.floor_width_ @ v), rtol=1e-9)
    plain = np.sqrt(model._variances(points, v) + model.coverage_variance(points, v))
    np.testing.assert_allclose(model.objective_spread(points, v), plain, rtol=1e-6)
