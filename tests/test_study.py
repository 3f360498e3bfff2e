import numpy as np
import pytest

import mixopt
from mixopt import InputError, MixtureSpace, Study, StudyError
from mixopt.study import Fidelity, fidelity_map, objective_weights, split_budget


def space():
    return MixtureSpace(["web", "code", "books", "math"], [4e9, 1e9, 5e8, 2e8], target_tokens=1e10, max_epochs=4)


OPTIMUM = np.array([0.35, 0.3, 0.2, 0.15])


def quadratic(X):
    distance = ((X - OPTIMUM) ** 2).sum(axis=1)
    return np.stack([1 + distance, 1 + 3 * distance], axis=1)


def test_optimize_respects_budget_and_constraints():
    calls = []

    def evaluate(X):
        calls.append(len(X))
        return quadratic(X)

    result = mixopt.optimize(space(), evaluate, budget=40, seed=0, rounds=3)
    assert sum(calls) == 40 and len(calls) == 3
    assert space().contains(result.weights).all()
    assert result.weights.shape == (4,)
    assert np.isfinite(result.predicted)


def test_optimize_moves_from_natural_toward_the_optimum():
    s = space()
    result = mixopt.optimize(s, quadratic, budget=64, seed=0)
    natural_distance = np.abs(s.natural - OPTIMUM).sum()
    assert np.abs(result.weights - OPTIMUM).sum() < 0.5 * natural_distance
    assert result.predicted < result.natural_predicted


def test_study_is_deterministic_and_replayable():
    first, second = Study(space(), budget=20, seed=5, rounds=2), Study(space(), budget=20, seed=5, rounds=2)
    while not first.done:
        X1, X2 = first.ask(), second.ask()
        np.testing.assert_array_equal(X1, X2)
        np.testing.assert_array_equal(first.ask(), X1)  # asking again before telling repeats
        first.tell(X1, quadratic(X1))
        second.tell(X2, quadratic(X2))
    np.testing.assert_array_equal(first.recommend().weights, second.recommend().weights)


def test_failed_runs_are_skipped_when_fitting():
    study = Study(space(), budget=12, seed=0)
    X = study.ask()
    Y = quadratic(X)
    Y[:3] = np.nan
    study.tell(X, Y)
    result = study.recommend()
    assert np.isnan(result.observed[:3]).all() and np.isfinite(result.predicted)


def test_all_failed_runs_raise_study_error():
    study = Study(space(), budget=4, seed=0)
    X = study.ask()
    study.tell(X, np.full((4, 2), np.nan))
    with pytest.raises(StudyError, match="succeeded"):
        study.recommend()


def test_objective_weights_select_loss_columns():
    s = MixtureSpace(["web", "code", "books", "math"], [4e9, 1e9, 5e8, 2e8])
    # a loss that only column 1 cares about: the weights must pull toward its optimum
    other = np.array([0.1, 0.6, 0.2, 0.1])

    def evaluate(X):
        return np.stack([((X - OPTIMUM) ** 2).sum(1), ((X - other) ** 2).sum(1)], axis=1)

    result = mixopt.optimize(s, evaluate, budget=48, objective=[0.0, 1.0], seed=0)
    assert np.abs(result.weights - other).sum() < np.abs(result.weights - OPTIMUM).sum()


def test_budget_and_objective_errors():
    with pytest.raises(InputError, match="budget"):
        Study(space(), budget=0)
    with pytest.raises(InputError, match="objective"):
        objective_weights([1.0, -1.0], 2)
    with pytest.raises(InputError, match="3 weights for 2"):
        objective_weights([1, 1, 1], 2)
    study = Study(space(), budget=4)
    with pytest.raises(StudyError, match="budget"):
        study.tell(np.tile(space().natural, (5, 1)), np.ones((5, 1)))


def test_split_budget_sums_to_budget():
    for budget in (1, 7, 64, 129):
        for rounds in (1, 2, 3, 5):
            sizes = split_budget(budget, rounds)
            assert sum(sizes) == budget and min(sizes) >= 1


# -- multi-fidelity ----------------------------------------------------------------------------------
def short_and_full(fraction_of):
    """Losses whose short runs are the full-length ones stretched (x1.5) and shifted (+0.8): the map
    between lengths is linear and the short runs rank mixtures as the long ones do."""
    def evaluate(X, fraction):
        full = quadratic(X)
        return full if fraction >= 1 else 0.8 + 1.5 * full
    return evaluate


def run_study(study, evaluate):
    while not study.done:
        fraction = study.round_fraction
        X = study.ask()
        study.tell(X, evaluate(X, fraction))
    return study.recommend()


def test_fidelity_map_recovers_a_linear_map_and_falls_back_to_a_shift():
    rng = np.random.default_rng(0)
    short = rng.normal(3.0, 0.2, size=(12, 2))
    intercept, slope = fidelity_map(short, 0.5 + np.array([0.6, 1.2]) * short)
    np.testing.assert_allclose(slope, [0.6, 1.2], atol=1e-9)
    np.testing.assert_allclose(intercept, [0.5, 0.5], atol=1e-9)
    intercept, slope = fidelity_map(short[:3], short[:3] - 0.3)        # too few pairs for a slope
    np.testing.assert_allclose(slope, [1.0, 1.0])
    np.testing.assert_allclose(intercept, [-0.3, -0.3], atol=1e-12)


def test_fidelity_study_runs_short_first_then_promotes_short_mixtures_to_full_length():
    study = Study(space(), budget=12, seed=0, rounds=2, fidelity=Fidelity(runs=24, fraction=0.25))
    assert study.round_sizes == [24, 6, 6] and study.round_fractions == [0.25, 1.0, 1.0]
    evaluate = short_and_full(None)
    short = study.ask()
    study.tell(short, evaluate(short, study.round_fraction))
    assert study.round_fraction == 1.0
    promoted = study.ask()
    np.testing.assert_allclose(promoted[0], space().natural)
    # every promoted mixture is a short run's: it continues at full length
    assert all(np.abs(short - m).sum(axis=1).min() < 1e-9 for m in promoted)
    study.tell(promoted, evaluate(promoted, 1.0))
    result = run_study(study, evaluate)
    assert result.n_runs == 12 and result.short_runs == 24 - 6
    # the short runs were mapped to full length: the surrogate predicts full-length losses
    X = space().sample(50, np.random.default_rng(1))
    np.testing.assert_allclose(result.predict_objective(X), quadratic(X).mean(axis=1), atol=0.02)
    assert len(result.cv_observed) == 12        # scored on the full-length runs only


def test_fidelity_reaches_the_full_study_with_less_compute():
    evaluate = short_and_full(None)
    full = run_study(Study(space(), budget=40, seed=0, rounds=2), evaluate)
    mixed = run_study(Study(space(), budget=16, seed=0, rounds=2, fidelity=Fidelity(runs=32, fraction=0.25)), evaluate)
    # 16 + 32 / 4 = 24 full-length runs of compute against 40
    full_regret = quadratic(full.weights[None, :]).mean() - 1
    mixed_regret = quadratic(mixed.weights[None, :]).mean() - 1
    natural_regret = quadratic(space().natural[None, :]).mean() - 1
    assert mixed_regret < 0.25 * natural_regret
    assert mixed_regret <= full_regret + 0.1 * natural_regret


def test_fidelity_is_validated():
    with pytest.raises(InputError, match="fraction"):
        Fidelity(runs=8, fraction=1.0)
    with pytest.raises(InputError, match="runs"):
        Fidelity(runs=1)
    with pytest.raises(InputError, match="fidelity"):
        Study(space(), budget=8, fidelity={"runs": 8})


def test_short_runs_that_mislead_are_left_out_of_the_fit():
    def misleading(X, fraction):             # short runs rank mixtures in reverse, beyond any linear map
        full = quadratic(X)
        noise = np.random.default_rng(len(X)).normal(0.0, 0.05, size=full.shape)
        return full if fraction >= 1 else 3.0 - full + noise
    study = Study(space(), budget=16, seed=0, rounds=2, fidelity=Fidelity(runs=32, fraction=0.25))
    result = run_study(study, misleading)
    assert result.short_runs == 0
    assert quadratic(result.weights[None, :]).mean() < quadratic(space().natural[None, :]).mean()
