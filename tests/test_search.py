import numpy as np
import pytest

import mixopt
from mixopt import InputError, MixtureSpace, Study
from mixopt.search import search
from mixopt.study import TRUST_MIN


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


def test_no_skill_keeps_the_recommendation_among_the_runs_and_no_worse_than_the_best():
    space, X, Y = noise_only_runs()
    study = Study(space, budget=len(X), rounds=1, seed=0)
    study.tell(X, Y)
    result = study.recommend()
    assert result.skill < 0.5
    assert 0.5 * np.abs(X - result.weights).sum(axis=1).min() <= result.trust_radius + 1e-4
    best = X[np.argmin(Y.mean(axis=1))]
    assert result.predicted <= result.predict_objective(best)[0] + 1e-9
    # the prediction does not run off far below what was ever measured
    assert result.predicted >= Y.mean(axis=1).min() - 3 * Y.mean(axis=1).std()


@pytest.mark.parametrize("method", ["constrained", "topk"])
def test_recommendation_is_never_predicted_worse_than_the_best_feasible_run(method):
    space, X, Y = noise_only_runs(K=5, n=12, seed=3)
    study = Study(space, budget=len(X), rounds=1, seed=0, search=method, risk=3.0)
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
