import numpy as np
import pytest

import mixopt
from mixopt import InputError, MixtureSpace, Study
from mixopt.search import search
from mixopt.trust import TRUST_MIN, box_runs, calibration_slope


def tight_space():
    # a tiny domain whose repetition cap binds, a lower bound, and a max weight
    return MixtureSpace(["web", "code", "books", "tiny"], [8e9, 1e9, 2e9, 1e7], target_tokens=1e10,
                        max_epochs=4, min_weights={"books": 0.1}, max_weights={"web": 0.6})


def quadratic_to(optimum):
    optimum = np.asarray(optimum)
    return lambda X: ((np.atleast_2d(X) - optimum) ** 2).sum(axis=1)


@pytest.mark.parametrize("method", ["constrained", "topk"])
def test_search_results_are_feasible(method):
    space = tight_space()
    # the unconstrained optimum asks for far more of the tiny domain than its cap allows
    found = search(space, quadratic_to([0.1, 0.1, 0.0, 0.8]), method, seed=0, candidates=5000)
    assert space.contains(found.weights).all()
    assert found.weights[3] <= space.upper[3] + 1e-9 and found.weights[2] >= 0.1 - 1e-9


def test_constrained_search_finds_the_constrained_optimum_better_than_topk():
    space = tight_space()
    score = quadratic_to([0.5, 0.2, 0.2, 0.1])
    constrained = search(space, score, "constrained", seed=0, candidates=2000)
    topk = search(space, score, "topk", seed=0, candidates=2000, top_k=50)
    target = space.project(np.array([0.5, 0.2, 0.2, 0.1]))[0]     # the projection minimises a distance
    np.testing.assert_allclose(constrained.weights, target, atol=1e-3)
    assert constrained.predicted <= topk.predicted


def test_max_shift_keeps_the_result_near_the_prior():
    space = tight_space()
    found = search(space, quadratic_to([0.0, 0.9, 0.1, 0.0]), "constrained", seed=0, candidates=2000,
                   max_shift=0.1)
    assert 0.5 * np.abs(found.weights - space.natural).sum() <= 0.1 + 1e-4
    with pytest.raises(InputError, match="max_shift"):
        search(space, quadratic_to(space.natural), "constrained", max_shift=1.5)


def test_trust_region_keeps_the_result_near_a_supporting_run():
    space = tight_space()
    support = space.sample(5, np.random.default_rng(1))
    found = search(space, quadratic_to([0.0, 0.9, 0.1, 0.0]), "constrained", seed=0, candidates=2000,
                   support=support, radius=0.05)
    distances = 0.5 * np.abs(support - found.weights).sum(axis=1)
    assert distances.min() <= 0.05 + 1e-4
    assert space.contains(found.weights).all()


def test_objective_weights_combine_several_evaluation_sets():
    space = MixtureSpace(["a", "b", "c"], [1e9, 1e9, 1e9])
    first, second = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.2, 0.7])

    def predict(X):
        return np.stack([quadratic_to(first)(X), quadratic_to(second)(X)], axis=1)

    only_second = search(space, predict, "constrained", seed=0, candidates=1000, objective=[0.0, 1.0])
    np.testing.assert_allclose(only_second.weights, second, atol=1e-3)


def noise_only_runs(K=7, n=8, seed=0):
    space = MixtureSpace([f"d{j}" for j in range(K)], np.full(K, 2e5), target_tokens=2e6, max_epochs=4)
    rng = np.random.default_rng(seed)
    X = np.vstack([space.natural, space.sample(n - 1, rng)])
    Y = 2.7 + 0.02 * rng.standard_normal((n, K))        # losses that do not depend on the mixture
    return space, X, Y


def test_no_skill_keeps_the_prior_and_claims_no_gain():
    space, X, Y = noise_only_runs()
    study = Study(space, budget=len(X), rounds=1, seed=0)
    study.tell(X, Y)
    result = study.recommend()
    assert result.skill < 0.5
    np.testing.assert_array_equal(result.weights, space.natural)
    assert not result.gain.significant and result.gain.low <= 0.0 <= result.gain.high
    # the search's candidate stayed next to the prior and next to a run
    assert 0.5 * np.abs(result.gain.candidate - space.natural).sum() <= result.trust_radius + 1e-4
    assert 0.5 * np.abs(X - result.gain.candidate).sum(axis=1).min() <= result.trust_radius + 1e-4


def flat_plus_noise_study(K, seed, budget=40):
    """A study whose true objective does not depend on the mixture: every run's losses are a fixed
    level per domain plus seed noise (a part common to the run, a part per domain)."""
    rng = np.random.default_rng([K, seed])
    space = MixtureSpace([f"d{j}" for j in range(K)], 10 ** rng.uniform(6.5, 7.5, K), target_tokens=5e7 * K / 9,
                         max_epochs=4)
    level = 2.6 + 0.3 * rng.standard_normal(K)

    def evaluate(X):
        return level + 0.013 * rng.standard_normal((len(X), 1)) + 0.026 * rng.standard_normal((len(X), K))

    return space, mixopt.optimize(space, evaluate, budget=budget, rounds=2, seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_flat_objective_reports_no_significant_gain_and_keeps_the_prior(seed):
    space, result = flat_plus_noise_study(K=9, seed=seed)
    assert not result.gain.significant
    assert result.gain.low <= 0.0 <= result.gain.high
    np.testing.assert_array_equal(result.weights, result.prior)
    np.testing.assert_array_equal(result.prior, space.natural)


def test_the_recommendation_stays_inside_the_range_the_runs_cover():
    space = MixtureSpace(["a", "b", "c", "d"], [1e9] * 4)
    rng = np.random.default_rng(0)
    X = np.vstack([space.natural, 0.8 * space.sample(23, rng) + 0.2 * space.natural])   # every share >= 0.05
    optimum = np.array([0.0, 0.0, 0.3, 0.7])         # far outside what the runs cover
    Y = 2.0 + ((X - optimum) ** 2).sum(axis=1, keepdims=True)
    study = Study(space, budget=len(X), rounds=1, seed=0)
    study.tell(X, Y)
    result = study.recommend()
    assert result.gain.significant
    assert np.all(result.weights >= X.min(axis=0) - 1e-6) and np.all(result.weights <= X.max(axis=0) + 1e-6)


def test_a_share_only_one_run_reached_is_not_recommended():
    space = MixtureSpace(["a", "b", "c", "d"], [1e9] * 4)
    rng = np.random.default_rng(1)
    X = np.vstack([space.natural, 0.6 * space.sample(29, rng) + 0.4 * space.natural])   # every share <= 0.7
    X[1] = [0.9, 0.04, 0.03, 0.03]                   # one lucky run far out on `a`
    optimum = np.array([1.0, 0.0, 0.0, 0.0])
    Y = 2.0 + ((X - optimum) ** 2).sum(axis=1, keepdims=True)
    study = Study(space, budget=len(X), rounds=1, seed=0)
    study.tell(X, Y)
    result = study.recommend()
    assert box_runs(len(X)) == 3
    third_largest = np.sort(X[:, 0])[-3]
    assert result.gain.significant
    assert result.weights[0] <= third_largest + 1e-6 < X[1, 0]


def test_calibration_slope_is_the_share_of_a_predicted_difference_that_was_observed():
    rng = np.random.default_rng(0)
    observed = rng.standard_normal(200)
    assert calibration_slope(observed, observed.copy()) == pytest.approx(1.0)
    assert calibration_slope(observed, 2.0 * observed + 1.0) == pytest.approx(0.5)     # overconfident 2x
    assert calibration_slope(observed, rng.standard_normal(200)) < 0.25                # unrelated
    assert calibration_slope(observed, -observed) == 0.0
    assert calibration_slope(observed, None) == 0.0


@pytest.mark.parametrize("method", ["constrained", "topk"])
def test_without_trust_the_recommendation_is_never_predicted_worse_than_the_best_feasible_run(method):
    space, X, Y = noise_only_runs(K=5, n=12, seed=3)
    study = Study(space, budget=len(X), rounds=1, seed=0, search=method, risk=3.0, trust=False)
    study.tell(X, Y)
    result = study.recommend()
    assert space.contains(result.weights).all()
    assert np.allclose(result.best_observed, X[np.argmin(Y.mean(axis=1))])
    assert result.predicted <= result.predict_objective(result.best_observed)[0] + 1e-9


def test_strong_evidence_lets_the_search_leave_the_runs():
    space = MixtureSpace(["a", "b", "c", "d"], [1e9] * 4)
    optimum = np.array([0.4, 0.3, 0.2, 0.1])

    def evaluate(X):
        return (2.0 + ((X - optimum) ** 2).sum(axis=1))[:, None]

    result = mixopt.optimize(space, evaluate, budget=32, seed=0)
    assert result.skill > 0.9 and result.trust_radius > 0.5
    assert np.abs(result.weights - optimum).sum() < 0.1
    assert TRUST_MIN < result.trust_radius <= 1.0
    # a significant gain over the prior, whose interval holds the true one
    true_gain = float(evaluate(result.weights[None, :])[0, 0] - evaluate(result.prior[None, :])[0, 0])
    assert result.gain.significant and result.gain.high < 0
    assert result.gain.low <= true_gain <= result.gain.high
