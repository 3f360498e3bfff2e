import numpy as np
import pytest

from mixopt import InputError, MixtureSpace
from mixopt.space import map_simplex_to_bounds, project_to_bounds


def tiny_domain_space(**kwargs):
    return MixtureSpace(["web", "code", "books", "math"], [8e9, 1e9, 2e8, 1e6], **kwargs)


def test_epoch_caps_follow_tokens_and_target():
    space = tiny_domain_space(target_tokens=2e10, max_epochs=4.0)
    np.testing.assert_allclose(space.upper, [1.0, 0.2, 0.04, 2e-4])
    assert MixtureSpace(["a", "b"], [1, 1]).upper.tolist() == [1.0, 1.0]


def test_samples_are_feasible_without_rejection_under_tight_bounds():
    space = tiny_domain_space(target_tokens=2e10, max_epochs=4.0, min_weights={"math": 1e-4, "books": 0.03})
    samples = space.sample(20_000, rng=0)
    assert samples.shape == (20_000, 4)
    assert space.contains(samples).all()
    # lower bounds are met exactly, and the tiny domain really varies between its bounds
    assert samples[:, 3].min() >= 1e-4 - 1e-12
    assert samples[:, 3].std() > 1e-5


def test_tiny_domains_get_weight_often():
    # RegMix-style Dirichlet around the token prior gives a 1e-4-share domain ~0 almost always
    space = MixtureSpace(["big", "mid", "tiny"], [1e9, 1e8, 1e5])
    samples = space.sample(5000, rng=1)
    assert (samples[:, 2] > 0.01).mean() > 0.2


def test_sampling_is_deterministic_for_a_seed():
    space = tiny_domain_space()
    np.testing.assert_array_equal(space.sample(100, rng=7), space.sample(100, rng=7))
    assert not np.array_equal(space.sample(100, rng=7), space.sample(100, rng=8))


def test_projection_is_nearest_feasible_point():
    lower, upper = np.array([0.1, 0.0, 0.0]), np.array([1.0, 0.3, 0.5])
    projected = project_to_bounds(np.array([[0.0, 0.9, 0.6]]), lower, upper)[0]
    np.testing.assert_allclose(projected.sum(), 1.0)
    assert np.all(projected >= lower - 1e-12) and np.all(projected <= upper + 1e-12)
    # KKT: the free coordinates move by the same shift
    np.testing.assert_allclose(projected, [0.2, 0.3, 0.5], atol=1e-9)


def test_mapping_into_bounds_preserves_feasible_points_order():
    lower, upper = np.zeros(3), np.array([0.5, 0.5, 0.5])
    mapped = map_simplex_to_bounds(np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]]), lower, upper)
    np.testing.assert_allclose(mapped.sum(axis=1), 1.0)
    assert np.all(mapped <= 0.5 + 1e-12)
    np.testing.assert_allclose(mapped[1], [0.2, 0.3, 0.5])


def test_natural_mixture_is_token_proportional_inside_caps():
    space = MixtureSpace(["a", "b"], [3e9, 1e9])
    np.testing.assert_allclose(space.natural, [0.75, 0.25])
    # with one max_epochs for all, natural meets every cap whenever any mixture does
    capped = MixtureSpace(["a", "b"], [3e9, 1e9], target_tokens=4e9, max_epochs=1.0)
    np.testing.assert_allclose(capped.natural, [0.75, 0.25])
    bounded = MixtureSpace(["a", "b", "c"], [6e9, 3e9, 1e9], max_weights={"a": 0.5})
    np.testing.assert_allclose(bounded.natural, [0.5, 0.375, 0.125])
    assert bounded.contains(bounded.natural).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(domains=["a"], tokens=[1]), "at least 2"),
        (dict(domains=["a", "a"], tokens=[1, 1]), "unique"),
        (dict(domains=["a", "b"], tokens=[1, -1]), "positive"),
        (dict(domains=["a", "b"], tokens=[1, float("nan")]), "finite"),
        (dict(domains=["a", "b"], tokens=[1, 1], target_tokens=-5), "target_tokens"),
        (dict(domains=["a", "b"], tokens=[1, 1], min_weights={"c": 0.1}), "unknown domains"),
        (dict(domains=["a", "b"], tokens=[1, 1], min_weights=[0.6, 0.6]), "sum"),
        (dict(domains=["a", "b"], tokens=[1e6, 1e6], target_tokens=1e8, max_epochs=4), "no mixture is feasible"),
    ],
)
def test_bad_space_arguments_raise_input_error(kwargs, message):
    with pytest.raises(InputError, match=message):
        MixtureSpace(**kwargs)


def test_natural_pins_bounded_domains_and_keeps_the_rest_proportional():
    space = MixtureSpace(["a", "b", "c", "d"], [7e9, 2e9, 9e8, 1e8], min_weights={"d": 0.05}, max_weights={"a": 0.6})
    natural = space.natural
    assert space.contains(natural).all()
    np.testing.assert_allclose(natural[[0, 3]], [0.6, 0.05])
    np.testing.assert_allclose(natural[1] / natural[2], 2e9 / 9e8)
