"""The study's own seed-noise measurement (mixopt.pipeline.results.noise_report) on run stores
whose noise is known: runs drawn as objective(mixture) + shift(seed) + N(0, sigma)."""

import numpy as np
import pytest

from mixopt.pipeline.results import noise_report
from mixopt.pipeline.store import RunStore, run_key
from mixopt.space import MixtureSpace

DOMAINS = ["a", "b", "c"]


def make_store(tmp_path, mixtures: int, repeats: dict[int, int], sigma: float, shifts: dict[int, float],
               rng_seed: int = 0):
    """Main-seed (0) runs of `mixtures` mixtures whose objective spreads with sd ~0.1, and
    repeats[seed] of them again under each other seed."""
    rng = np.random.default_rng(rng_seed)
    space = MixtureSpace(DOMAINS, [1e6, 1e6, 1e6])
    X = rng.dirichlet(np.ones(3), size=mixtures)
    truth = 3.0 + 0.3 * X[:, 0]
    store = RunStore(tmp_path / "runs.parquet", DOMAINS)
    rows = []
    for seed, count in [(0, mixtures)] + list(repeats.items()):
        for w, value in zip(X[:count], truth[:count]):
            loss = value + shifts.get(seed, 0.0) + rng.normal(0.0, sigma)
            rows.append({"run_id": run_key(w, seed, "r"), "round": 0 if seed == 0 else -1, "seed": seed,
                         "status": "ok", "recipe": "r", **{f"w_{d}": float(x) for d, x in zip(DOMAINS, w)},
                         **{f"loss_{d}": float(loss) for d in DOMAINS}})
    store.append(rows)
    return store, space, truth


def test_noise_is_the_known_sigma_with_the_seed_shift_removed(tmp_path):
    store, space, truth = make_store(tmp_path, mixtures=400, repeats={1000: 400}, sigma=0.02, shifts={1000: 0.5})
    report = noise_report(store, space, np.full(3, 1 / 3), "loss", seed=0)
    assert report["repeats"] == 400 and report["degrees_of_freedom"] == 399
    assert report["seed_shift_mean"] == pytest.approx(0.5, abs=0.005)    # a shift, not noise
    assert report["seed_noise_std"] == pytest.approx(0.02, rel=0.1)
    assert report["seed_noise_std_low"] < 0.02 < report["seed_noise_std_high"]
    assert report["seed_noise_std_high"] / report["seed_noise_std_low"] < 1.2
    spread = float(np.std(truth, ddof=1))
    assert report["mixture_spread_std"] == pytest.approx(np.sqrt(spread**2 + 0.02**2), rel=0.1)
    assert report["signal_to_noise"] == pytest.approx(report["mixture_spread_std"] / report["seed_noise_std"])
    assert report["signal_to_noise_low"] < report["signal_to_noise"] < report["signal_to_noise_high"]


def test_the_interval_says_how_little_two_repeats_know(tmp_path):
    store, space, _ = make_store(tmp_path, mixtures=40, repeats={1000: 2}, sigma=0.02, shifts={})
    two = noise_report(store, space, np.full(3, 1 / 3), "loss", seed=0)
    assert two["degrees_of_freedom"] == 1
    assert two["seed_noise_std_high"] / two["seed_noise_std_low"] > 50
    store, space, _ = make_store(tmp_path / "ten", mixtures=40, repeats={1000: 10}, sigma=0.02, shifts={})
    ten = noise_report(store, space, np.full(3, 1 / 3), "loss", seed=0)
    assert ten["degrees_of_freedom"] == 9
    assert ten["seed_noise_std_high"] / ten["seed_noise_std_low"] < 3


def test_each_other_seed_has_its_own_shift(tmp_path):
    # two other seeds shifted in opposite directions: pooling their differences without removing
    # each seed's own shift would read the shifts as noise
    store, space, _ = make_store(tmp_path, mixtures=300, repeats={1000: 150, 2000: 150}, sigma=0.01,
                                 shifts={1000: 0.3, 2000: -0.3})
    report = noise_report(store, space, np.full(3, 1 / 3), "loss", seed=0)
    assert report["repeats"] == 300 and report["degrees_of_freedom"] == 298
    assert report["seed_noise_std"] == pytest.approx(0.01, rel=0.15)


def test_no_repeats_or_a_single_one_report_no_noise(tmp_path):
    store, space, _ = make_store(tmp_path, mixtures=10, repeats={}, sigma=0.02, shifts={})
    report = noise_report(store, space, np.full(3, 1 / 3), "loss", seed=0)
    assert report["repeats"] == 0 and "seed_noise_std" not in report
    store, space, _ = make_store(tmp_path / "one", mixtures=10, repeats={1000: 1}, sigma=0.02, shifts={})
    report = noise_report(store, space, np.full(3, 1 / 3), "loss", seed=0)
    assert report["degrees_of_freedom"] == 0 and np.isnan(report["seed_noise_std"])
    assert report["signal_to_noise"] is None
