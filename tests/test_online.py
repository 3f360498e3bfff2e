"""Online mixers: protocol, invariants, resumability, Aioli's schedule and arithmetic, behaviour."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixopt.errors import InputError, StoreError
from mixopt.online import METHODS, Phase, Schedule, create, load, training_options, upweight
from mixopt.online import simulate as S
from mixopt.online.auto import PRESETS, SIMULATOR, TRAINING, WITH_JACOBIAN, AutoSettings, Evaluation
from mixopt.online.base import project
from mixopt.online.jacobian import estimate_jacobian


def finish(mixer, sim, trajectory: list, stop_after: int | None = None) -> list:
    """Drive `mixer` on `sim` to the end (or until `stop_after` segments), appending (proportions,
    steps) of every round to `trajectory`."""
    while not mixer.done:
        if stop_after is not None and len(trajectory) >= stop_after:
            break
        p = mixer.ask()
        n = mixer.next_steps
        trajectory.append((p.copy(), n))
        sim.train(p, n)
        mixer.tell(sim.observe())
    return trajectory


def _sim(family="powerlaw", K=4, steps=3000, seed=0, noise=0.005):
    return S.make_simulator(family, K, steps, seed, noise)


def _options(method, sim):
    if method == "doremi":
        return {"reference_losses": np.full(sim.K, 2.0)}
    if method in ("static", "stratified"):
        return {"round_steps": 300}
    return {}


def _drive(mixer, sim, noise_seed=0, stop_after=None):
    """The generic training loop; returns [(proportions, steps)] per segment."""
    sim.reset(noise_seed)
    return finish(mixer, sim, [], stop_after)


# ------------------------------------------------------------------ protocol and invariants


@pytest.mark.parametrize("method", METHODS)
def test_protocol_shapes_simplex_bounds_and_budget(method):
    sim = _sim(K=4, steps=2400)
    low = np.array([0.05, 0.0, 0.1, 0.0])
    high = np.array([0.6, 0.5, 0.6, 0.3])
    prior = np.array([0.3, 0.2, 0.3, 0.2])
    mixer = create(method, ["a", "b", "c", "d"], 2400, prior=prior, seed=1, min_weights=low,
                   max_weights=high, **_options(method, sim))
    trajectory = _drive(mixer, sim)
    assert mixer.done and mixer.step == 2400
    assert sum(n for _, n in trajectory) == 2400
    for p, n in trajectory:
        assert p.shape == (4,) and np.all(np.isfinite(p))
        assert abs(p.sum() - 1) < 1e-9
        assert np.all(p >= low - 1e-9) and np.all(p <= high + 1e-9)
        assert n >= 0
    assert mixer.ask().shape == (4,) and mixer.next_steps == 0     # a finished mixer asks for nothing


def test_ask_is_stable_until_tell():
    mixer = create("auto", 3, 900, seed=0)
    losses, trained = np.full(3, 3.0), 0
    for _ in range(4):                       # an evaluation (0 steps), then training segments
        first, steps, before = mixer.ask(), mixer.next_steps, mixer.step
        for _ in range(3):                   # asking again, before the tell, changes nothing
            assert np.array_equal(mixer.ask(), first) and mixer.next_steps == steps
        mixer.tell(losses)
        assert mixer.step == before + steps  # the tell takes exactly the steps that were asked for
        losses, trained = losses - 0.01, trained + steps
    assert trained > 0


def test_static_holds_the_prior_and_stratified_is_uniform():
    sim = _sim(K=3, steps=1000)
    prior = np.array([0.5, 0.3, 0.2])
    static = create("static", 3, 1000, prior=prior, round_steps=100)
    for p, _ in _drive(static, sim):
        np.testing.assert_allclose(p, prior)
    stratified = create("stratified", 3, 1000, prior=prior, round_steps=250)
    segments = _drive(stratified, sim)
    assert len(segments) == 4
    for p, _ in segments:
        np.testing.assert_allclose(p, np.full(3, 1 / 3))
    bounded = create("stratified", 3, 1000, max_weights=[0.2, 1.0, 1.0])
    np.testing.assert_allclose(bounded.ask(), [0.2, 0.4, 0.4])


@pytest.mark.parametrize("method", ["aioli", "auto", "doremi"])
def test_same_seed_same_run_and_nan_losses_are_tolerated(method):
    sim = _sim(K=3, steps=2000)
    runs = [_drive(create(method, 3, 2000, seed=7, **_options(method, sim)), sim, noise_seed=3) for _ in range(2)]
    assert len(runs[0]) == len(runs[1])
    for (p, n), (q, m) in zip(*runs):
        assert n == m and np.array_equal(p, q)
    mixer = create(method, 3, 2000, seed=7, **_options(method, sim))
    sim.reset(0)
    while not mixer.done:
        p = mixer.ask()
        sim.train(p, mixer.next_steps)
        losses = sim.observe()
        losses[1] = np.nan                              # domain 1 never evaluated
        mixer.tell(losses)
        assert np.all(np.isfinite(mixer.ask())) and abs(mixer.ask().sum() - 1) < 1e-9


# ------------------------------------------------------------------ state: save, load, resume


def _variant(variant, sim):
    """(method, options) of a METHODS entry, or of "auto+jacobian" (auto given a proxy's Jacobian)."""
    if variant == "auto+jacobian":
        return "auto", {"jacobian": S.proxy_jacobian(sim, np.full(sim.K, 1 / sim.K))}
    return variant, _options(variant, sim)


# a prior given as counts: normalised once it sums to 1 - 1e-16, so normalising it again would move it
# in the last bit, and a mixer rebuilt from its saved state must still get the very same prior back
_COUNTS = np.array([12.0, 59.0, 97.0])
_PRIOR = _COUNTS / _COUNTS.sum()


@pytest.mark.parametrize("variant", [*METHODS, "auto+jacobian"])
def test_resume_from_saved_state_continues_identically(variant, tmp_path):
    assert not np.array_equal(_PRIOR / _PRIOR.sum(), _PRIOR)          # the case the test is about
    sim = _sim(K=3, steps=2400, seed=2)
    method, options = _variant(variant, sim)
    options = {"prior": _COUNTS, **options}
    reference = _drive(create(method, 3, 2400, seed=5, **options), sim, noise_seed=9)
    rng = np.random.default_rng(0)
    for _ in range(3):
        cut = int(rng.integers(1, len(reference)))
        mixer = create(method, 3, 2400, seed=5, **options)
        sim.reset(9)
        trajectory = []
        for index in range(cut):
            p = mixer.ask()
            n = mixer.next_steps
            trajectory.append((p.copy(), n))
            sim.train(p, n)
            mixer.tell(sim.observe())
        if index % 2:
            mixer.ask()                                   # also interrupt between ask and tell
        path = tmp_path / f"{method}.json"
        mixer.save(path)
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
        snapshot = sim.snapshot()
        resumed = load(path)
        sim.restore(snapshot)
        finish(resumed, sim, trajectory)
        assert len(trajectory) == len(reference)
        for (p, n), (q, m) in zip(trajectory, reference):
            assert n == m and np.array_equal(p, q)


def test_state_dict_is_strict_json_and_load_accepts_the_dict():
    mixer = create("auto", ["x", "y"], 1000, seed=1)
    sim = _sim(K=2, steps=1000)
    _drive(mixer, sim, stop_after=6)
    state = json.loads(json.dumps(mixer.state_dict(), allow_nan=False))
    again = load(state)
    assert np.array_equal(again.ask(), mixer.ask()) and again.step == mixer.step


def test_load_rejects_foreign_or_mismatched_state(tmp_path):
    with pytest.raises(InputError, match="state"):
        load({"format": "something-else"})
    mixer = create("auto", 3, 900)
    other = create("auto", 3, 1000)
    with pytest.raises(InputError, match="state"):
        other.load_state_dict(mixer.state_dict())
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(StoreError):
        load(broken)



class _Wiggly:
    """Deterministic losses of each domain's cumulative exposure (with some transfer), plus a fixed
    wiggle so that the noise estimates are not zero."""

    def __init__(self):
        self.exposure = np.zeros(2)
        self.round = 0

    def losses(self, p, n):
        self.exposure += p * n
        wiggle = 2e-3 * np.sin(1.7 * self.round * (np.arange(2) + 1))
        self.round += 1
        return 2.0 + np.array([3.0, 1.0]) / np.sqrt(1.0 + self.exposure + 0.3 * self.exposure[::-1]) + wiggle


def _run(mixer, world, rounds=None) -> list:
    trajectory = []
    while not mixer.done and (rounds is None or len(trajectory) < rounds):
        p = mixer.ask()
        n = mixer.next_steps
        trajectory.append((p.copy(), n))
        mixer.tell(world.losses(p, n))
    return trajectory


# The state of an auto mixer saved by the single-module `auto` (before its settings, estimate and
# control were split) after 12 rounds of _Wiggly, between ask and tell, with four pair middles
# waiting: create("auto", ["web", "code"], 160, prior=[0.7, 0.3], seed=3, rounds=16).
_SAVED_AUTO_STATE = (
    '{"format":"mixopt.online","version":1,"method":"auto","domains":["web","code"],"steps":160,"prior":[0.7,'
    '0.3],"seed":3,"min_weights":null,"max_weights":null,"objective":[0.5,0.5],"options":{"rounds":16,"round_'
    'steps":10,"perturb":1.0,"eta":0.3,"forget":0.8,"window":10,"own_rate_scale":0.3,"own_scale":0.15,"transf'
    'er_scale":0.3,"leak":0.03,"max_step":0.5,"outlier":4.0,"guard":4.0,"max_tilt":1.3862943611198906,"taper"'
    ':0.15,"sensitivity":null,"jacobian":null,"jacobian_weight":1.0},"step":110,"round":12,"pending":{"p":[0.'
    '235324833833803,0.764675166166197],"n":10},"mixture":[0.6945579878907099,0.30544201210929006],"rng":{"bi'
    't_generator":"PCG64","state":{"state":141982968615397084200763440782085584892,"inc":22200306317187426142'
    '7395693950637096479},"has_uint32":1,"uinteger":3441447623},"state":{"theta":[-0.36447962439037423,-1.185'
    '9953314501468],"tilt":[1.0,-1.0],"noise":[1.2801506360155401e-05,1.0461078617394882e-06],"own_P":[0.0,0.'
    '0],"own_q":[0.0,0.0],"gain_P":[[0.0,0.0,0.0],[0.0,0.0,0.0],[0.0,0.0,0.0]],"gain_q":[0.0,0.0,0.0],"own_ra'
    'te":[0.0,0.0],"transfer":[0.0,0.0],"rho":[-0.02578215332743104,0.06015835776400617],"rate":[0.0014360436'
    '994189198,0.0006697389098575702],"lowest":[2.3468557270409556,2.1323474999033913],"started":true,"phase"'
    ':1,"pairs":1,"spikes":0,"own_share":1.0,"cleans":[[10,[3.0075856143518913,2.4043770828854045]],[20,[2.73'
    '1413972507346,2.2997953790358756]],[40,[2.538969841160243,2.210670282272282]],[60,[2.4438764295932747,2.'
    '1719861308471287]],[80,[2.390025402396873,2.1487040722316713]],[100,[2.3468557270409556,2.13234749990339'
    '13]]],"middles":[[50,[2.503158466463812,2.1770376622013847],[-4.600041276283266,4.600041276283266],[0.7,'
    '0.3]],[70,[2.422720888321449,2.1506835486090656],[-4.600041276283266,4.600041276283266],[0.7,0.3]],[90,['
    '2.374718124419545,2.133837420848308],[-4.600041276283266,4.600041276283266],[0.7,0.3]],[110,[2.327827301'
    '2616686,2.1270211557859438],[2.492694911124318,-2.4926949111243175],[0.6945579878907099,0.30544201210929'
    '006]]]}}'
)


def test_an_auto_state_saved_before_the_split_loads_and_continues_as_an_uninterrupted_run():
    world = _Wiggly()
    uninterrupted = create("auto", ["web", "code"], 160, prior=[0.7, 0.3], seed=3, rounds=16)
    _run(uninterrupted, world, rounds=12)
    saved = load(json.loads(_SAVED_AUTO_STATE))
    assert saved.step == uninterrupted.step and len(saved.estimator.middles) == 4
    twin = _Wiggly()
    twin.exposure, twin.round = world.exposure.copy(), world.round
    expected, resumed = _run(uninterrupted, world), _run(saved, twin)
    assert len(resumed) == len(expected) > 3
    for (p, n), (q, m) in zip(resumed, expected):
        assert n == m
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ aioli: faithful to the released code


def test_aioli_defaults_are_the_full_slimpajama_recipe():
    o = create("aioli", 7, 40_000, seed=0).options
    assert (o["lp_rounds"], o["lp_steps"], o["update_steps"], o["eta"], o["ema"], o["one_hot_factor"]) == \
        (2, 10, 200, 1.0, 0.1, 0.75)
    # fewer steps or more domains: the same 70% probing share of a round
    o = create("aioli", 20, 10_000, seed=0).options
    assert o["update_steps"] == int(np.ceil(2 * 10 * 20 / 0.7))


@pytest.mark.parametrize("K, steps, prior", [(10, 200, None), (10, 100, None), (8, 300, "given")])
def test_aioli_fits_the_longest_probes_that_leave_room_in_a_short_run(K, steps, prior):
    prior = None if prior is None else np.full(K, 1.0 / K)
    mixer = create("aioli", K, steps, prior=prior, seed=0)
    o = mixer.options
    assert 1 <= o["lp_steps"] < 10
    def room(lp):
        duration = o["lp_rounds"] * lp * K
        update = max(steps // 200, int(np.ceil(duration / 0.7)))
        first = update if prior is not None else 0
        return duration < update and steps - first > duration
    assert room(o["lp_steps"]) and not room(o["lp_steps"] + 1)
    probe_steps = 0
    while not mixer.done:
        probing, n = mixer.probing, mixer.next_steps
        mixer.ask()
        probe_steps += n if probing else 0
        mixer.tell(np.linspace(3.0, 2.0, K) - 1e-3 * mixer.step)
    assert probe_steps >= o["lp_rounds"] * o["lp_steps"] * K       # at least one full sweep was run


def test_aioli_round_schedule_matches_the_arxiv_stackexchange_recipe():
    # the README / scripts/arxiv_stackexchange recipe: 2 groups, 5000 steps, 250 per round,
    # 4 sweeps x 4 steps per group = 32 probe steps per round (12.8%), one-hot factor 0.625
    mixer = create("aioli", ["arxiv", "stackexchange"], 5000, seed=0, lp_rounds=4, lp_steps=4,
                   eta=0.2, one_hot_factor=0.625, update_steps=250)
    sim = _sim(K=2, steps=5000)
    trajectory = _drive(mixer, sim)
    assert trajectory[0][1] == 0                        # the evaluation before the first sweep
    rounds = []
    segment = []
    for p, n in trajectory[1:]:
        segment.append((p, n))
        if n not in (4,):                               # a training segment closes a round
            rounds.append(segment)
            segment = []
    assert len(rounds) == 20
    for segments in rounds:
        probes, (_mixture, rest) = segments[:-1], segments[-1]
        assert len(probes) == 8 and all(n == 4 for _, n in probes)
        assert sum(n for _, n in probes) + rest == 250
        probed = [int(np.argmax(p)) for p, _ in probes]
        assert sorted(probed[:2]) == [0, 1] and sorted(probed[2:4]) == [0, 1]   # each sweep: a permutation
        for p, _ in probes:
            np.testing.assert_allclose(sorted(p), [0.375, 0.625])


def test_aioli_full_slimpajama_recipe_probes_70_percent_of_each_round():
    mixer = create("aioli", 7, 40_000, lp_rounds=2, lp_steps=10, update_steps=200, eta=1.0,
                   one_hot_factor=0.75)
    assert mixer.lp_duration == 140 and mixer.lp_duration / mixer.options["update_steps"] == pytest.approx(0.7)
    # a K that would not fit: the round grows until probes take at most 70% of it
    big = create("aioli", 20, 5000)
    assert big.lp_duration == 400 and big.lp_duration / big.options["update_steps"] <= 0.7


def test_aioli_recovers_the_interaction_matrix_and_applies_the_released_update():
    """Losses that follow Aioli's own linear dynamic mixing law: training probe mixture w for
    lp_steps lowers loss i by sum_l A[i, l] w[l]. De-smoothing must recover A exactly, and the
    mixture must be the released code's softmax(eta * colsum(normalised A))."""
    K = 3
    A = np.array([[0.30, 0.05, 0.00], [0.10, 0.20, -0.02], [0.00, 0.08, 0.40]])
    mixer = create("aioli", K, 3000, seed=0, ema=None, eta=0.2)
    losses = np.full(K, 5.0)
    mixer.ask()
    mixer.tell(losses)                                  # the step-0 evaluation
    while mixer.probing:
        w = mixer.ask()
        losses = losses - A @ w
        mixer.tell(losses)
    np.testing.assert_allclose(mixer.last_A, A, atol=1e-12)
    normalised = A - A.min()
    normalised /= normalised.sum()
    expected = np.exp(0.2 * normalised.sum(axis=0))
    np.testing.assert_allclose(mixer.ask(), expected / expected.sum(), rtol=1e-12)


def test_aioli_restricted_setting_trains_the_prior_first():
    prior = np.array([0.6, 0.3, 0.1])
    mixer = create("aioli", 3, 3000, prior=prior)
    assert mixer.options["prior_steps"] == mixer.options["update_steps"]
    np.testing.assert_allclose(mixer.ask(), prior)
    assert mixer.next_steps == mixer.options["prior_steps"]


# ------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize("call, name", [
    (lambda: create("best", 3, 100), "method"),
    (lambda: create("auto", ["a", "a"], 100), "domains"),
    (lambda: create("auto", 3, 0), "steps"),
    (lambda: create("auto", 3, 100, prior=[0.5, 0.5]), "prior"),
    (lambda: create("auto", 3, 100, prior=[0.5, -0.1, 0.6]), "prior"),
    (lambda: create("auto", 3, 100, prior=[0.8, 0.1, 0.1], max_weights=0.5), "prior"),
    (lambda: create("auto", 3, 100, seed=-1), "seed"),
    (lambda: create("auto", 3, 100, min_weights=0.5), "min_weights"),
    (lambda: create("auto", 3, 100, max_weights=0.2), "max_weights"),
    (lambda: create("auto", 3, 100, objective=[1, 1]), "objective"),
    (lambda: create("auto", 3, 100, learning_rate=1.0), "learning_rate"),
    (lambda: create("auto", 3, 100, eta=-1), "eta"),
    (lambda: create("auto", 3, 100, guard=-1), "guard"),
    (lambda: create("auto", 3, 100, max_tilt="wide"), "max_tilt"),
    (lambda: create("aioli", 2, 5000, one_hot_factor=0.5), "one_hot_factor"),
    (lambda: create("aioli", 3, 5000, update_steps=40), "update_steps"),
    (lambda: create("aioli", 10, 100, lp_steps=10), "steps"),
    (lambda: create("aioli", 10, 20), "steps"),
    (lambda: create("doremi", 3, 100), "reference_losses"),
    (lambda: create("auto", 3, 100, sensitivity=[1.0, 2.0]), "sensitivity"),
    (lambda: create("auto", 3, 100, jacobian=np.ones((3, 2))), "jacobian"),
    (lambda: create("auto", 3, 100, jacobian=[[1.0, 0, 0], [0, np.nan, 0], [0, 0, 1.0]]), "jacobian"),
    (lambda: create("auto", 3, 100, jacobian="abc"), "jacobian"),
    (lambda: create("auto", 3, 100, jacobian=-np.eye(3), jacobian_weight=1.5), "jacobian_weight"),
    (lambda: load(42), "state"),
])
def test_bad_arguments_raise_input_error_naming_them(call, name):
    with pytest.raises(InputError, match=name):
        call()



# ------------------------------------------------------------------ auto's settings: one home, named presets

_CONTROL = ("leak", "max_tilt", "guard")      # the control the presets differ in


def _differing(a: AutoSettings, b: AutoSettings) -> set[str]:
    return {f.name for f in dataclasses.fields(AutoSettings) if getattr(a, f.name) != getattr(b, f.name)}


def test_every_auto_option_is_a_settings_field_with_a_unit_and_a_meaning():
    names = {f.name for f in dataclasses.fields(AutoSettings)}
    assert set(create("auto", 3, 600).options) == names                # what a saved state holds
    for f in dataclasses.fields(AutoSettings):
        assert f.metadata["unit"] and f.metadata["meaning"], f.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        SIMULATOR.leak = 0.0


def test_auto_presets_hold_what_they_claim():
    """SIMULATOR: the defaults. WITH_JACOBIAN: only the control narrower (more leak, a smaller tilt
    cap, no guard). TRAINING: that narrow control with gentler tilt pairs."""
    assert SIMULATOR == AutoSettings()
    assert _differing(SIMULATOR, WITH_JACOBIAN) == set(_CONTROL)
    assert WITH_JACOBIAN.leak > SIMULATOR.leak and WITH_JACOBIAN.max_tilt < SIMULATOR.max_tilt
    assert WITH_JACOBIAN.guard == 0 < SIMULATOR.guard
    assert _differing(WITH_JACOBIAN, TRAINING) == {"perturb"} and TRAINING.perturb < SIMULATOR.perturb
    assert PRESETS == {"simulator": SIMULATOR, "with_jacobian": WITH_JACOBIAN, "training": TRAINING}


def test_auto_starts_from_its_preset_and_the_callers_options_win():
    K, T = 3, 600
    assert create("auto", K, T).settings == SIMULATOR.checked(K, T)
    assert SIMULATOR.checked(K, T).round_steps == T // SIMULATOR.rounds
    given = create("auto", K, T, jacobian=-np.eye(K)).settings
    assert all(getattr(given, name) == getattr(WITH_JACOBIAN, name) for name in _CONTROL)
    assert create("auto", K, T, jacobian=-np.eye(K), leak=0.01).settings.leak == 0.01
    assert training_options("auto") == TRAINING.as_options()
    assert create("auto", K, T, **training_options("auto")).settings == TRAINING.checked(K, T)
    mine = training_options("auto", {"perturb": 0.8, "rounds": 7})
    assert mine == {**TRAINING.as_options(), "perturb": 0.8, "rounds": 7}
    assert training_options("aioli", {"lp_rounds": 2}) == {"lp_rounds": 2}
    with pytest.raises(InputError, match="max_tilts"):
        create("auto", K, T, **training_options("auto", {"max_tilts": 1.0}))


@pytest.mark.parametrize("losses", [[1.0, 2.0], [1.0, np.inf, 2.0], "abc", [[1.0, 2.0, 3.0]]])
def test_bad_losses_raise_input_error(losses):
    mixer = create("auto", 3, 100)
    mixer.ask()
    with pytest.raises(InputError, match="losses"):
        mixer.tell(losses)


def _drive_on_interval(mixer, sim, interval: int) -> list:
    """A trainer that evaluates every `interval` steps whatever `next_steps` says; returns the
    steps it told."""
    told = []
    while not mixer.done:
        p = mixer.ask()
        n = min(interval, mixer.remaining)
        sim.train(p, n)
        mixer.tell(sim.observe(), steps=n)
        told.append(n)
    return told


@pytest.mark.parametrize("method", ["auto", "static", "stratified", "doremi"])
def test_a_trainer_on_its_own_interval_tells_the_steps_it_trained(method):
    sim = _sim(K=3, steps=2000)
    sim.reset(0)
    mixer = create(method, 3, 2000, seed=0, **_options(method, sim))
    told = _drive_on_interval(mixer, sim, 70)
    assert sum(told) == 2000 and mixer.step == 2000 and mixer.done
    assert told[-1] == 2000 % 70 and len(told) == 2000 // 70 + 1


def test_auto_learns_from_a_trainer_on_its_own_interval():
    """47-step segments where auto asks for 50: it must still find the better mixture."""
    sim = S.make_simulator("powerlaw", 3, 5000, seed=0, noise=0.003)
    stratified = S.static_objective(sim, np.full(3, 1 / 3))
    _, best = S.best_static(sim)
    finals = []
    for seed in range(2):
        mixer = create("auto", 3, 5000, seed=seed)
        assert mixer.options["round_steps"] == 50
        sim.reset(seed)
        _drive_on_interval(mixer, sim, 47)
        finals.append(sim.objective())
    assert (stratified - np.mean(finals)) / (stratified - best) > 0.3


def test_told_steps_are_checked():
    mixer = create("auto", 3, 100)
    mixer.ask()
    for bad in (-1, 1.5, "3"):
        with pytest.raises(InputError, match="steps"):
            mixer.tell([3.0, 3.0, 3.0], steps=bad)
    with pytest.raises(InputError, match="steps .101. exceed the 100 steps left"):
        mixer.tell([3.0, 3.0, 3.0], steps=101)
    assert mixer.step == 0 and mixer.round == 0                       # nothing told
    aioli = create("aioli", 3, 3000)
    aioli.ask()
    assert aioli.next_steps == 0                                        # the evaluation before the probes
    with pytest.raises(InputError, match="exactly next_steps"):
        aioli.tell([3.0, 3.0, 3.0], steps=10)
    aioli.tell([3.0, 3.0, 3.0], steps=0)
    aioli.ask()
    assert aioli.probing
    with pytest.raises(InputError, match="exactly next_steps"):
        aioli.tell([3.0, 3.0, 3.0], steps=aioli.next_steps + 1)
    aioli.tell([2.9, 3.0, 3.0], steps=aioli.next_steps)
    schedule = Schedule(3, 1000, [Phase(until=0.5, method="stratified"), Phase(until=1.0, method="auto")])
    schedule.ask()
    with pytest.raises(InputError, match="next phase"):
        schedule.tell([3.0, 3.0, 3.0], steps=501)
    schedule.tell([3.0, 3.0, 3.0], steps=500)
    assert schedule.phase == 1 and schedule.step == 500


def test_tell_without_ask_is_refused():
    with pytest.raises(InputError, match="losses"):
        create("stratified", 3, 100).tell([1.0, 1.0, 1.0])


# ------------------------------------------------------------------ simplex projection


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=2, max_size=12), st.data())
def test_projection_lands_on_the_bounded_simplex(weights, data):
    K = len(weights)
    low = np.array(data.draw(st.lists(st.floats(0.0, 0.9 / K), min_size=K, max_size=K)))
    high = np.maximum(low, np.array(data.draw(st.lists(st.floats(1.2 / K, 1.0), min_size=K, max_size=K))))
    p = project(np.array(weights), low, high)
    assert abs(p.sum() - 1) < 1e-9 and np.all(p >= low - 1e-12) and np.all(p <= high + 1e-12)


# ------------------------------------------------------------------ simulators


def test_simulator_static_objective_matches_a_run_and_best_static_beats_uniform():
    for family in S.FAMILIES:
        sim = _sim(family, K=4, steps=2000, seed=1)
        prior = np.array([0.4, 0.3, 0.2, 0.1])
        ran = S.run(create("static", 4, 2000, prior=prior, round_steps=300), sim).objective
        assert ran == pytest.approx(S.static_objective(sim, prior), rel=1e-9), family
        best_p, best = S.best_static(sim, restarts=4)
        uniform = S.static_objective(sim, np.full(4, 0.25))
        assert best <= uniform + 1e-12
        others = np.random.default_rng(0).dirichlet(np.ones(4), size=200)
        assert best <= S.static_objective(sim, others).min() + 1e-9, family


def test_simulator_noise_is_seeded_and_snapshot_restores():
    sim = _sim(K=3, steps=1000, noise=0.01)
    sim.reset(4)
    sim.train(np.full(3, 1 / 3), 100)
    snap = sim.snapshot()
    first = sim.observe()
    sim.restore(snap)
    assert np.array_equal(first, sim.observe())
    assert not np.array_equal(sim.observe(), sim.observe())


def test_simulator_true_gains_are_the_objectives_fall_per_step_of_each_domain():
    sim = _sim("powerlaw", K=4, steps=4000, seed=2)
    sim.train(np.array([0.4, 0.3, 0.2, 0.1]), 1000)
    gains = S.true_gains(sim)
    before, snap = sim.objective(), sim.snapshot()
    for i in range(4):
        sim.restore(snap)
        sim.train(np.eye(4)[i], 2)                      # two more steps of domain i only
        assert (before - sim.objective()) / 2 == pytest.approx(gains[i], rel=0.01), i
    assert gains.max() > 1.5 * gains.min() > 0          # the domains differ: a constant would not pass


def test_simulator_transfer_kind_replaces_only_the_familys_transfer():
    own = S.make_model("targeted", 6, 3000, seed=2)
    dense = S.make_model("targeted", 6, 3000, seed=2, transfer="dense")
    for name in ("E", "B", "alpha", "scale", "weights"):
        np.testing.assert_array_equal(getattr(own, name), getattr(dense, name), err_msg=name)
    off = ~np.eye(6, dtype=bool)
    assert np.all(np.diag(dense.transfer) == 1.0)
    assert np.all((dense.transfer[off] >= 0.1) & (dense.transfer[off] <= 0.6))
    assert (own.transfer[off] < 0.1).any()                 # the family's own (low-rank) transfer is not dense
    cases = S.suite(quick=True, transfer="dense")
    assert all(case.name.endswith("/dense") for case in cases)
    assert all(np.all(case.simulator().model.transfer[~np.eye(case.K, dtype=bool)] >= 0.1) for case in cases)
    with pytest.raises(InputError, match="transfer must be one of"):
        S.make_model("powerlaw", 3, 1000, transfer="everything")



def test_quick_suite_takes_one_of_the_given_settings_per_family():
    """--quick with fewer than three --sizes: every family still gets one case, of a given size."""
    cases = S.suite(quick=True, settings=[(3, 600, 0.0), (4, 800, 0.0)])
    assert [case.family for case in cases] == list(S.FAMILIES)
    assert {(case.K, case.steps) for case in cases} == {(3, 600), (4, 800)}


def test_simulator_noise_scale_scales_the_observation_errors():
    model = _sim(K=3, steps=1000, noise=0.01).model
    errors = {}
    for factor in (1.0, 0.5, 0.0):
        sim = S.Simulator(S.with_noise_scale(model, factor))
        sim.reset(4)
        sim.train(np.full(3, 1 / 3), 100)
        errors[factor] = sim.observe() - sim.losses()
    np.testing.assert_allclose(errors[0.5], 0.5 * errors[1.0])   # same seed: the same draws, half as large
    assert np.all(errors[0.0] == 0) and np.any(errors[1.0] != 0)
    with pytest.raises(InputError, match="noise scale"):
        S.with_noise_scale(model, -1.0)


# ------------------------------------------------------------------ schedules


def test_schedule_runs_phases_with_their_own_mixers_and_resumes(tmp_path):
    domains = ["web", "code", "books"]
    final = upweight([0.5, 0.3, 0.2], {"books": 2.0}, domains)
    np.testing.assert_allclose(final, np.array([0.5, 0.3, 0.4]) / 1.2)
    schedule = Schedule(domains, 2000, [
        Phase(until=0.5, method="stratified", options={"round_steps": 250}),
        Phase(until=0.85, method="auto"),
        Phase(until=1.0, method="static", prior=final),
    ], seed=3)
    sim = _sim(K=3, steps=2000)
    trajectory = _drive(schedule, sim)
    steps = np.cumsum([n for _, n in trajectory])
    assert schedule.done and steps[-1] == 2000
    first = [p for (p, n), s in zip(trajectory, steps) if s <= 1000]
    assert all(np.allclose(p, 1 / 3) for p in first)
    last = [p for (p, n), s in zip(trajectory, steps) if s > 1700]
    assert last and all(np.allclose(p, final) for p in last)
    # resume mid-way through the auto phase
    again = Schedule(domains, 2000, schedule.phases, seed=3)
    partial = _drive(again, sim, stop_after=9)
    path = tmp_path / "schedule.json"
    again.save(path)
    snapshot = sim.snapshot()
    resumed = load(path)
    sim.restore(snapshot)
    finish(resumed, sim, partial)
    assert len(partial) == len(trajectory)
    assert all(n == m and np.array_equal(p, q) for (p, n), (q, m) in zip(partial, trajectory))


def test_schedule_rejects_bad_phases():
    with pytest.raises(InputError, match="until"):
        Schedule(3, 100, [Phase(until=0.5)])
    with pytest.raises(InputError, match="method"):
        Schedule(3, 100, [Phase(until=1.0, method="magic")])
    with pytest.raises(InputError, match="factors"):
        upweight([0.5, 0.5], {"zzz": 2.0}, ["a", "b"])


# ------------------------------------------------------------------ behaviour


def test_auto_beats_stratified_on_a_simulator():
    """A behaviour test: a power-law simulator with sparse transfer where the best static mixture
    is far from uniform; auto must end below stratified and close a good part of the gap."""
    sim = S.make_simulator("powerlaw", 3, 5000, seed=0, noise=0.003)
    stratified = S.static_objective(sim, np.full(3, 1 / 3))
    _, best = S.best_static(sim)
    finals = [S.run(create("auto", 3, 5000, seed=seed), sim, seed=seed).objective for seed in range(2)]
    assert max(finals) < stratified
    assert (stratified - np.mean(finals)) / (stratified - best) > 0.3


def test_auto_stays_at_the_prior_without_evidence():
    """Losses that ignore the mixture carry no evidence: the mixture must stay at the prior."""
    prior = np.array([0.5, 0.3, 0.2])
    mixer = create("auto", 3, 4000, prior=prior, seed=0)
    rng = np.random.default_rng(0)
    t = 0
    while not mixer.done:
        mixer.ask()
        t += mixer.next_steps
        mixer.tell(2.0 + 3.0 / math.sqrt(1 + t) + 1e-4 * rng.standard_normal(3))
        assert np.abs(np.log(mixer.mixture / prior)).max() < 0.35


def test_auto_reads_each_domains_rate_from_its_recent_losses():
    """The local rate fit: on losses L_j(t) = 2 + B_j t^-1/2 the rate is B_j t^-3/2 / 2 per step;
    a domain that is never evaluated gets rate 0, not NaN."""
    mixer = create("auto", 3, 100_000, seed=0)
    B = np.array([1.0, 3.0, 0.5])
    for t in range(2000, 2000 + 12 * 500, 500):
        losses = 2.0 + B * t ** -0.5
        losses[2] = np.nan
        mixer.estimator.cleans.append(Evaluation(t, losses))
    t = mixer.estimator.cleans[-1].step
    rate = mixer.estimator.rates(t)
    np.testing.assert_allclose(rate[:2], 0.5 * B[:2] * t ** -1.5, rtol=0.05)   # quadratic vs power law: ~2%
    assert rate[2] == 0.0


class _Spiky(S.Simulator):
    """Every 25th evaluation reads 0.5 nats too high on every domain (a loss spike)."""

    def observe(self):
        self.evaluations = getattr(self, "evaluations", 0) + 1
        return super().observe() + (0.5 if self.evaluations % 25 == 0 else 0.0)


def test_auto_drops_loss_spikes():
    """Spikes must be counted and dropped; unscreened, they corrupt the tilt pairs' regressions
    (measured with perturb 1: large tilts, whose corrections move the mixture most)."""
    model = S.make_model("powerlaw", 3, 5000, seed=0, noise=0.003)
    sim = S.Simulator(model)
    stratified = S.static_objective(sim, np.full(3, 1 / 3))
    _, best = S.best_static(sim)
    closed = {"screened": [], "raw": []}
    for seed in range(3):
        mixer = create("auto", 3, 5000, seed=seed, perturb=1.0)
        closed["screened"].append(stratified - S.run(mixer, _Spiky(model), seed=seed).objective)
        assert mixer.estimator.spikes >= 3
        raw = S.run(create("auto", 3, 5000, seed=seed, perturb=1.0, outlier=0), _Spiky(model), seed=seed)
        closed["raw"].append(stratified - raw.objective)
    gap = stratified - best
    assert np.mean(closed["screened"]) / gap > 0.9
    assert np.mean(closed["screened"]) / gap > np.mean(closed["raw"]) / gap + 0.03


def _three_domains(name, T, noise, transfer, B=(1.0, 1.0, 1.0)):
    """A power-law LossModel of three domains with the given transfer matrix (A[i, j]: domain i's data for j)."""
    K = 3
    return S.LossModel(name=name, steps=T, E=np.full(K, 2.0), B=np.asarray(B, dtype=np.float64), alpha=np.full(K, 0.5),
                       scale=np.full(K, 0.01 * T), exponential=np.zeros(K, dtype=bool), transfer=transfer,
                       epoch_steps=np.full(K, np.inf), noise=np.full(K, noise))


def _victim(T, noise, hurt=0.4):
    """Three domains; domains 1 and 2's data raises domain 0's loss (transfer -hurt), so that cutting
    domain 0 lets them push its transfer-weighted exposure to 0, where its loss sits at its ceiling."""
    transfer = np.eye(3)
    transfer[1:, 0] = -hurt
    return _three_domains("victim", T, noise, transfer, B=(0.5, 1.0, 1.0))


def test_auto_does_not_cut_a_domain_whose_loss_climbs():
    """Domain 0's loss falls slowly (the others' data hurts it), so the own-data model cuts it; its
    loss then climbs, which reads as "its own data hurts it", and without the guard it is cut until its
    loss reaches its ceiling. With the guard (the default) a climbing domain keeps its share: no run
    ends at the ceiling, and on average the runs end below stratified."""
    K, T = 3, 5000
    sim = S.Simulator(_victim(T, 0.003))
    stratified = S.static_objective(sim, np.full(K, 1 / K))
    ceiling = sim.model.E[0] + sim.model.B[0]
    guarded = [S.run(create("auto", K, T, seed=seed), sim, seed=seed) for seed in range(3)]
    unguarded = [S.run(create("auto", K, T, seed=seed, guard=0), sim, seed=seed) for seed in range(3)]
    assert any(run.losses[0] > ceiling - 1e-6 for run in unguarded)          # the cliff is there
    assert all(run.losses[0] < ceiling - 0.2 for run in guarded)
    assert np.mean([run.objective for run in guarded]) < stratified


def _teacher(T, noise):
    """Three domains; domain 0's data lowers every domain's loss (transfer 0.8), the others' only their own."""
    transfer = np.eye(3)
    transfer[0, 1:] = 0.8
    return _three_domains("teacher", T, noise, transfer)


def test_auto_learns_that_a_domain_teaches_the_others():
    """Domain 0's data lowers every domain's loss (transfer 0.8), which the own-data model cannot
    see: it credits domains 1 and 2 with progress that domain 0 bought. The tilt pairs must find
    it (domains 1 and 2's own data buys less than their rates show, domain 0 has the largest
    transfer correction), and the mixer must then give domain 0 more than the own-data model
    alone does and end with a lower objective."""
    K, T = 3, 5000
    sim = S.Simulator(_teacher(T, 1e-4))
    learnt = create("auto", K, T, seed=0)
    with_pairs = S.run(learnt, sim, seed=0)
    own_only = S.run(create("auto", K, T, seed=0, own_rate_scale=1e-6, transfer_scale=1e-6), sim, seed=0)
    own_rate = learnt.estimator.own_rate
    assert own_rate[1] < -0.3 and own_rate[2] < -0.3 and abs(own_rate[0]) < 0.2
    assert np.argmax(learnt.estimator.transfer) == 0
    assert with_pairs.mean_mixture[0] > own_only.mean_mixture[0] + 0.1
    assert with_pairs.objective < own_only.objective


def test_proxy_jacobian_holds_the_transfer_and_each_domains_rate():
    """J[i, j] = dL_j / dp_i of a 10x shorter run: zero where domain i teaches j nothing, and
    p . J[:, j] is how the proxy's loss j moves with its length (all of p scaled together)."""
    sim = S.Simulator(_teacher(5000, 0.0))
    p = np.array([0.2, 0.5, 0.3])
    J = S.proxy_jacobian(sim, p)
    assert np.all(J[0] < 0) and J[1, 2] == 0 and J[2, 1] == 0 and J[1, 0] == 0
    proxy = dataclasses.replace(sim.model, steps=500)
    h = 1e-4
    along = (S.static_losses(proxy, (1 + h) * p) - S.static_losses(proxy, p))[0] / h
    np.testing.assert_allclose(p @ J, along, rtol=1e-3)


@pytest.mark.parametrize("jacobian, weight", [
    (-np.diag([0.5, 1.0, 2.0, 0.1]), 1.0),                   # no transfer: what the own-data model assumes
    (-np.eye(4) - 0.4 * np.ones((4, 4)), 0.0),                # transfer, weighted 0
])
def test_auto_with_a_jacobian_that_says_no_transfer_is_the_own_data_model(jacobian, weight):
    sim = _sim(K=4, steps=3000, seed=1)
    # the same control (with a Jacobian auto moves less by default): only the transfer model differs
    narrow = {name: getattr(WITH_JACOBIAN, name) for name in _CONTROL}
    plain = S.run(create("auto", 4, 3000, seed=0, **narrow), sim, seed=0, record=True)
    given = S.run(create("auto", 4, 3000, seed=0, jacobian=jacobian, jacobian_weight=weight), sim, seed=0,
                  record=True)
    assert len(given.trajectory) == len(plain.trajectory)
    for (t, p, n), (u, q, m) in zip(plain.trajectory, given.trajectory):
        assert t == u and n == m
        np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("proxies", [0, 256, 24])
def test_auto_sees_transfer_through_a_proxys_jacobian(proxies):
    """With eval noise that drowns the tilt pairs, only a proxy's Jacobian (exact, or estimated
    from 256 or 24 noisy proxies) tells auto that domain 0 teaches the others: given it, auto must
    give domain 0 more and end lower than without."""
    sim = S.Simulator(_teacher(5000, 0.02))
    uniform = np.full(3, 1 / 3)
    jacobian = S.study_jacobian(sim, uniform, runs=proxies) if proxies else S.proxy_jacobian(sim, uniform)
    without = [S.run(create("auto", 3, 5000, seed=seed), sim, seed=seed) for seed in range(2)]
    given = [S.run(create("auto", 3, 5000, seed=seed, jacobian=jacobian), sim, seed=seed) for seed in range(2)]
    for plain, informed in zip(without, given):
        assert informed.mean_mixture[0] > plain.mean_mixture[0] + 0.1
        assert informed.objective < plain.objective


def test_study_jacobian_estimates_the_proxys_jacobian_from_noisy_proxies():
    """Without noise the study's linear fit over the simplex comes close to the exact Jacobian
    (entries 0.2-0.55: domain 0 teaches 1 and 2), its columns' rates along the length too; with
    noise, more proxies estimate it better."""
    sim = S.Simulator(_teacher(5000, 0.0))
    p = np.full(3, 1 / 3)
    exact = S.proxy_jacobian(sim, p)
    clean = S.study_jacobian(sim, p, runs=256)
    np.testing.assert_allclose(clean, exact, atol=0.1)
    np.testing.assert_allclose(p @ clean, p @ exact, rtol=0.2)
    noisy = S.Simulator(_teacher(5000, 0.02))
    errors = {runs: np.mean([np.abs(S.study_jacobian(noisy, p, runs=runs, seed=seed) - clean).mean()
                             for seed in range(4)]) for runs in (32, 512)}
    assert errors[512] < 0.6 * errors[32]


def _linear_study(J, p, runs, noise, seed):
    """Proxies of a world whose final losses are linear in the mixture: L = 2 + X J + noise."""
    rng = np.random.default_rng(seed)
    X = rng.dirichlet(np.ones(len(p)), size=runs)
    return X, 2.0 + X @ J + noise * rng.standard_normal((runs, len(p)))


def test_estimate_jacobian_finds_the_transfer_that_clean_proxies_show():
    """Domain 0 teaches domains 1 and 2: many noise-free proxies give the Jacobian itself, and the
    rate along the length fixes each column's constant (p . J[:, j] = along_j)."""
    p = np.array([0.2, 0.5, 0.3])
    J = -np.array([[2.0, 0.8, 0.8], [0.0, 1.0, 0.0], [0.0, 0.0, 1.5]])
    X, losses = _linear_study(J, p, runs=200, noise=0.0, seed=0)
    estimate = estimate_jacobian(X, losses, p, p @ J)
    np.testing.assert_allclose(estimate, J, atol=1e-3)


def test_estimate_jacobian_stays_with_the_own_data_model_where_noisy_proxies_show_nothing_more():
    """In a world without transfer, 20 noisy proxies' least-squares fit invents some; the
    shrunk estimate stays at least twice as close to the own-data model (what auto assumes
    without a Jacobian)."""
    p = np.full(5, 0.2)
    along = -np.linspace(0.5, 1.5, 5)
    own = np.diag(along / p)
    shrunk, fitted = [], []
    for seed in range(10):
        X, losses = _linear_study(own, p, runs=20, noise=0.05, seed=seed)
        shrunk.append(np.abs(estimate_jacobian(X, losses, p, along) - own).mean())
        b = np.linalg.lstsq(X, losses, rcond=None)[0]
        fitted.append(np.abs(b + (along - p @ b) - own).mean())
    assert np.mean(shrunk) < 0.5 * np.mean(fitted)


@pytest.mark.parametrize("change, named", [
    (lambda a: {**a, "mixtures": a["mixtures"][:2], "losses": a["losses"][:2]}, "3 proxies"),
    (lambda a: {**a, "losses": a["losses"][:, :2]}, "losses"),
    (lambda a: {**a, "mixtures": 2 * a["mixtures"]}, "mixtures"),
    (lambda a: {**a, "prior": np.array([0.5, 0.5, 0.0])}, "prior"),
    (lambda a: {**a, "along": np.array([-1.0, np.nan, -1.0])}, "along"),
    (lambda a: {**a, "along": np.ones(4)}, "along"),
])
def test_estimate_jacobian_names_bad_input(change, named):
    p = np.full(3, 1 / 3)
    X, losses = _linear_study(-np.eye(3), p, runs=10, noise=0.01, seed=0)
    arguments = change({"mixtures": X, "losses": losses, "prior": p, "along": -np.ones(3)})
    with pytest.raises(InputError, match=named):
        estimate_jacobian(**arguments)
