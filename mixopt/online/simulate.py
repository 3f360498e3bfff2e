"""Dynamic simulators of per-domain losses during one training run, for online mixers.

A simulator holds the state of a run: the cumulative exposure e_i (steps' worth of domain i seen
so far) and, for forgetting models, a leaky recent exposure m_i. Training n steps on proportions
p adds n * p to e (and relaxes m towards p * h). The per-domain losses are

    x_i  = repetition-adjusted exposure: e_i up to one epoch of domain i (N_i steps' worth), then
           N_i (1 + R (1 - exp(-(e_i / N_i - 1) / R)))            (Muennighoff et al. 2023)
    k_i  = (1 - phi_i) x_i + phi_i m_i,  dm_i/dt = p_i - m_i / h_i (phi = 0: no forgetting)
    z_j  = max(sum_i A_ij k_i, 0)                (transfer: A_jj = 1, A_ij >= 0 or even < 0)
    L_j  = E_j + B_j (1 + z_j / s_j)^(-alpha_j)   (power law), or E_j + B_j exp(-z_j / s_j)
           + c_j max(0, e_j / N_j - 4)^2            (over-repetition raises a small domain's loss)

with A drawn by kind: sparse, block (groups), lowrank (a few general teachers), negative
(interference) or dense (every domain teaches every other; TRANSFER_KINDS, `make_model(transfer=...)`),
and an observation adds noise sigma_j (sqrt(1 - rho) eps_j + sqrt(rho) eps_common) and, with
probability spike_rate, a loss spike of spike_size on every domain (`with_spikes`). The
objective is the objective-weighted mean of the final noise-free losses.

Use:
    sim = make_simulator("powerlaw", K=8, steps=5000, seed=3, noise=0.01)
    result = run(mixer, sim)                  # drives mixer.ask / next_steps / tell to the end
    p_best, l_best = best_static(sim)         # the best constant mixture in hindsight
    caps = repetition_caps(sim.model)         # max_weights that keep each domain within 4 epochs
    true_gains(sim)                           # -d objective / d exposure now (what mixers estimate)
    proxy_jacobian(sim, p)                    # d final losses / d p of a 10x shorter run (auto's `jacobian`)
    study_jacobian(sim, p, runs=512)          # the same, estimated from noisy proxies
    proxy_model(model)                        # the same loss model for a 10x shorter run (a proxy)
    static_objective(sim, p)                  # final objective of a constant mixture (exact)

Without forgetting the final losses depend only on the total exposure, so the best static
mixture in hindsight is also the best schedule; with forgetting recent data counts more and a
schedule can beat it. `suite()` lists the benchmark cases (several families, K from 3 to 20).

One module on purpose (about 470 lines): the loss model, its families and the benchmark suite
are one simulator, and each family's parameters are drawn beside the law that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import minimize

from mixopt.errors import InputError
from mixopt.online.base import project
from mixopt.online.jacobian import estimate_jacobian

FAMILIES = ("powerlaw", "saturating", "repetition", "interference", "forgetting", "targeted")
TRANSFER_KINDS = ("sparse", "lowrank", "block", "negative", "dense")


@dataclass(frozen=True)
class LossModel:
    """The parameters of a dynamic simulator (all per-domain arrays have length K)."""

    name: str
    steps: int
    E: np.ndarray
    B: np.ndarray
    alpha: np.ndarray
    scale: np.ndarray
    exponential: np.ndarray            # bool: exponential saturation instead of a power law
    transfer: np.ndarray               # (K, K): A[i, j] = value of domain i's data for domain j
    epoch_steps: np.ndarray            # steps of pure domain i that make one epoch (inf: unlimited)
    repeat_r: float = 5.0              # Muennighoff's R*: how fast repeated data loses value
    overfit: np.ndarray | None = None  # loss rise per (epochs - 4)^2
    forget: np.ndarray | None = None   # phi: the transient share of what is learned
    halflife: np.ndarray | None = None  # h: the time constant of the transient share, in steps
    noise: np.ndarray | None = None    # sigma per domain
    noise_corr: float = 0.3
    spike_rate: float = 0.0            # chance that an observation reads spike_size too high everywhere
    spike_size: float = 0.3
    weights: np.ndarray | None = None  # objective weights (sum to one)

    @property
    def K(self) -> int:
        return len(self.E)


class Simulator:
    """One run of a LossModel: `train(p, n)`, `observe()`, `losses()`; snapshot/restore."""

    def __init__(self, model: LossModel, seed: int = 0):
        self.model = model
        self.K = model.K
        self.steps = model.steps
        self.weights = (np.full(self.K, 1.0 / self.K) if model.weights is None else model.weights)
        self.reset(seed)

    def reset(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.exposure = np.zeros(self.K)
        self.recent = np.zeros(self.K)
        self.t = 0

    def snapshot(self) -> tuple:
        return (self.exposure.copy(), self.recent.copy(), self.t, self.rng.bit_generator.state)

    def restore(self, snap: tuple) -> None:
        self.exposure, self.recent, self.t = snap[0].copy(), snap[1].copy(), snap[2]
        self.rng.bit_generator.state = snap[3]

    def train(self, p, n: int) -> None:
        p = np.asarray(p, dtype=np.float64)
        if n <= 0:
            return
        self.exposure = self.exposure + n * p
        if self.model.forget is not None:
            decay = np.exp(-n / self.model.halflife)
            self.recent = self.recent * decay + p * self.model.halflife * (1 - decay)
        self.t += n

    def losses(self) -> np.ndarray:
        """The noise-free per-domain losses now."""
        return _losses(self.model, self.exposure[None, :], self.recent[None, :])[0]

    def observe(self) -> np.ndarray:
        """The per-domain eval losses a trainer would measure now (with noise)."""
        clean = self.losses()
        if self.model.noise is None:
            return clean
        own = self.rng.standard_normal(self.K)
        common = self.rng.standard_normal()
        rho = self.model.noise_corr
        observed = clean + self.model.noise * (np.sqrt(1 - rho) * own + np.sqrt(rho) * common)
        if self.model.spike_rate > 0 and self.rng.random() < self.model.spike_rate:
            observed = observed + self.model.spike_size     # a loss spike: every domain at once
        return observed

    def objective(self, losses=None) -> float:
        losses = self.losses() if losses is None else losses
        return float((self.weights * losses).sum())


def _losses(model: LossModel, exposure: np.ndarray, recent: np.ndarray) -> np.ndarray:
    """Per-domain losses for rows of exposures (n, K) -> (n, K)."""
    N = model.epoch_steps
    with np.errstate(divide="ignore", invalid="ignore"):
        epochs = np.where(np.isfinite(N), exposure / N, 0.0)
    R = model.repeat_r
    x = np.where(epochs <= 1, exposure, N * (1 + R * (1 - np.exp(-(epochs - 1) / R))))
    if model.forget is not None:
        x = (1 - model.forget) * x + model.forget * recent
    z = np.maximum((x[:, :, None] * model.transfer[None, :, :]).sum(axis=1), 0.0)   # x @ A, elementwise
    u = z / model.scale
    curve = np.where(model.exponential, np.exp(-u), (1 + u) ** (-model.alpha))
    loss = model.E + model.B * curve
    if model.overfit is not None:
        loss = loss + model.overfit * np.maximum(0.0, epochs - 4.0) ** 2
    return loss


def static_losses(model: LossModel, rows: np.ndarray) -> np.ndarray:
    """Exact final per-domain losses of whole runs of `model` on constant mixtures: (n, K) -> (n, K).
    Rows need not sum to one (a row's sum scales the run's length)."""
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    exposure = model.steps * rows
    if model.forget is not None:
        recent = rows * model.halflife * (1 - np.exp(-model.steps / model.halflife))
    else:
        recent = np.zeros_like(rows)
    return _losses(model, exposure, recent)


def static_objective(sim: Simulator, p) -> np.ndarray | float:
    """Exact final objective of training the whole run on constant mixture(s) p: (K,) or (n, K)."""
    p = np.asarray(p, dtype=np.float64)
    values = static_losses(sim.model, p) @ sim.weights
    return float(values[0]) if p.ndim == 1 else values


def proxy_model(model: LossModel, shrink: int = 10, min_steps: int = 10) -> LossModel:
    """The same loss model for a run `shrink` times shorter (at least `min_steps`): a proxy's."""
    return replace(model, steps=max(min_steps, model.steps // shrink))


def proxy_jacobian(sim: Simulator, p, shrink: int = 10, relative_step: float = 1e-4) -> np.ndarray:
    """J[i, j] = d L_j / d p_i: how the final per-domain losses of a run `shrink` times shorter on
    the constant mixture p move with more of domain i (forward differences, p not renormalised,
    so that p . J[:, j] is the proxy's own rate along its length). What a proxy study's smooth
    per-domain surrogate and its loss curves tell `auto` (option `jacobian`); exact here."""
    proxy = proxy_model(sim.model, shrink)
    p = np.asarray(p, dtype=np.float64)
    h = relative_step * max(float(p.max()), 1e-12)
    rows = np.vstack([p, p[None, :] + h * np.eye(sim.K)])
    values = static_losses(proxy, rows)
    return (values[1:] - values[0][None, :]) / h


def study_jacobian(sim: Simulator, p, runs: int = 512, shrink: int = 10, repeats: int = 3,
                   seed: int = 0) -> np.ndarray:
    """proxy_jacobian as a proxy study estimates it (mixopt.online.jacobian.estimate_jacobian),
    with the model's eval noise on every proxy's final losses: `runs` proxies `shrink` times
    shorter on Dirichlet(1) mixtures give the part along the simplex, shrunk towards the own-data
    model as far as their noise asks, and `repeats` proxies on p at that length and at half of it
    give each domain's rate along the length, p . J[:, j] (the difference of their mean losses
    over log 2)."""
    model = sim.model
    K = sim.K
    p = np.asarray(p, dtype=np.float64)
    rng = np.random.default_rng([seed, K, runs])
    sigma = np.zeros(K) if model.noise is None else model.noise
    proxy = proxy_model(model, shrink)
    half = proxy_model(model, 2 * shrink, min_steps=5)

    def observed(m, rows):
        return static_losses(m, rows) + sigma * rng.standard_normal((len(rows), K))

    X = rng.dirichlet(np.ones(K), size=runs)
    losses = observed(proxy, X)
    at_p = np.repeat(p[None, :], repeats, axis=0)
    along = (observed(proxy, at_p).mean(axis=0) - observed(half, at_p).mean(axis=0)) / np.log(2.0)
    return estimate_jacobian(X, losses, p, along)


def true_gains(sim: Simulator, relative_step: float = 1e-3) -> np.ndarray:
    """The true gain of one more step of each domain now: -d objective / d e_i at the simulator's
    current exposures (forward differences; the transient exposure is held). What an online mixer
    estimates; the benchmark's `oracle` steers on it."""
    model = sim.model
    h = relative_step * max(sim.t, 1)
    base = _losses(model, sim.exposure[None, :], sim.recent[None, :])[0] @ sim.weights
    moved = _losses(model, sim.exposure[None, :] + h * np.eye(sim.K), np.repeat(sim.recent[None, :], sim.K, axis=0))
    return -(moved @ sim.weights - base) / h


def repetition_caps(model: LossModel, max_epochs: float = 4.0) -> np.ndarray | None:
    """The most each domain's share may be so that the run reads it at most `max_epochs` times --
    what a user who knows each domain's size gives the mixers (max_weights), as mixopt's static
    search does. None when no domain is capped, or when the caps leave no mixture (sum < 1)."""
    caps = np.minimum(1.0, max_epochs * model.epoch_steps / model.steps)
    if np.all(caps >= 1.0) or caps.sum() < 1.0:
        return None
    return caps


def best_static(sim: Simulator, restarts: int = 8, seed: int = 0, lower=None, upper=None):
    """The best constant mixture in hindsight: multi-start SLSQP over the simplex (and bounds).

    Returns (p, objective)."""
    K = sim.K
    lo = np.zeros(K) if lower is None else np.asarray(lower, dtype=np.float64)
    hi = np.ones(K) if upper is None else np.asarray(upper, dtype=np.float64)
    rng = np.random.default_rng(seed)
    bounds = (None if lower is None else lo, None if upper is None else hi)
    uniform = project(np.ones(K), *bounds)
    starts = [uniform]
    # a greedy start: the best of the "mostly one domain" mixtures, then random Dirichlet draws
    tilted = 0.5 * np.eye(K) + 0.5 / K
    starts.append(tilted[int(np.argmin(static_objective(sim, tilted)))])
    for index in range(max(0, restarts - 2)):
        starts.append(rng.dirichlet(np.full(K, 1.0 if index % 2 else 0.3)))
    constraint = {"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(K)}
    best_p, best_value = uniform, static_objective(sim, uniform)

    def value(w):
        return static_objective(sim, np.clip(w, 0.0, None))

    def gradient(w, h=1e-6):
        w = np.clip(w, 0.0, None)
        points = np.clip(w[None, :] + h * np.eye(K), 0.0, None)
        return (static_objective(sim, points) - static_objective(sim, w)) / h

    for start in starts:
        start = project(np.clip(start, lo, hi), *bounds)
        result = minimize(value, start, jac=gradient, method="SLSQP", bounds=list(zip(lo, hi)),
                          constraints=[constraint], options={"maxiter": 300, "ftol": 1e-12})
        w = project(np.clip(result.x, lo, hi), *bounds)
        v = static_objective(sim, w)
        if v < best_value:
            best_p, best_value = w, v
    return best_p, float(best_value)


@dataclass
class RunResult:
    objective: float                   # final noise-free objective
    losses: np.ndarray                 # final noise-free per-domain losses
    mean_mixture: np.ndarray           # step-weighted average of the proportions trained
    segments: int                      # ask/tell rounds
    trajectory: list = field(default_factory=list)   # (step, proportions, steps) per segment


def run(mixer, sim: Simulator, seed: int = 0, record: bool = False) -> RunResult:
    """Drive `mixer` through a whole run of `sim` with the generic training loop:

        while not mixer.done: p = mixer.ask(); n = mixer.next_steps; train n steps; mixer.tell(eval)
    """
    if mixer.K != sim.K:
        raise InputError(f"mixer has {mixer.K} domains, simulator {sim.K}")
    if mixer.steps != sim.steps:
        raise InputError(f"mixer plans {mixer.steps} steps, simulator runs {sim.steps}")
    sim.reset(seed)
    total = np.zeros(sim.K)
    trajectory = []
    idle = 0
    segments = 0
    while not mixer.done:
        p = mixer.ask()
        n = mixer.next_steps
        if not (np.all(np.isfinite(p)) and abs(p.sum() - 1) < 1e-6 and np.all(p >= -1e-12)):
            raise AssertionError(f"mixer returned a mixture off the simplex: {p}")
        idle = idle + 1 if n == 0 else 0
        if idle > 3:
            raise AssertionError("mixer asked for several zero-step segments in a row")
        if record:
            trajectory.append((sim.t, p.copy(), n))
        sim.train(p, n)
        total += n * p
        mixer.tell(sim.observe())
        segments += 1
    return RunResult(objective=sim.objective(), losses=sim.losses(), mean_mixture=total / max(sim.t, 1),
                     segments=segments, trajectory=trajectory)


# ------------------------------------------------------------------ random families


def _transfer(rng, K: int, kind: str) -> np.ndarray:
    A = np.eye(K)
    off = ~np.eye(K, dtype=bool)
    if kind == "sparse":
        mask = rng.random((K, K)) < 0.35
        A[off & mask] = rng.uniform(0.05, 0.5, size=(K, K))[off & mask]
    elif kind == "lowrank":
        # a few "general" domains teach everyone (web text), the rest teach little
        teach = rng.uniform(0.0, 1.0, size=K) ** 2
        learn = rng.uniform(0.3, 1.0, size=K)
        A = np.eye(K) + 0.8 * np.outer(teach, learn) * off
    elif kind == "block":
        groups = rng.integers(0, max(2, K // 3), size=K)
        same = groups[:, None] == groups[None, :]
        A[off & same] = rng.uniform(0.3, 0.8, size=(K, K))[off & same]
        A[off & ~same] = rng.uniform(0.0, 0.1, size=(K, K))[off & ~same]
    elif kind == "dense":
        # every domain teaches every other (related text): the best mixture leans on a few teachers
        A = np.eye(K) + rng.uniform(0.1, 0.6, size=(K, K)) * off
    elif kind == "negative":
        mask = rng.random((K, K)) < 0.4
        values = rng.uniform(-0.3, 0.5, size=(K, K))
        A[off & mask] = values[off & mask]
    else:
        raise InputError(f"unknown transfer kind {kind!r}")
    return A


def make_model(family: str, K: int, steps: int, seed: int = 0, noise: float = 0.01,
               transfer: str | None = None) -> LossModel:
    """A random LossModel of one family. Families: powerlaw, saturating, repetition,
    interference, forgetting, targeted (see FAMILIES). `transfer` (one of TRANSFER_KINDS) replaces
    the family's own kind of cross-domain transfer (sparse, block, sparse, negative, sparse, lowrank)."""
    if family not in FAMILIES:
        raise InputError(f"family must be one of {FAMILIES}, got {family!r}")
    if transfer is not None and transfer not in TRANSFER_KINDS:
        raise InputError(f"transfer must be one of {TRANSFER_KINDS}, got {transfer!r}")
    rng = np.random.default_rng([seed, K, steps, FAMILIES.index(family)])
    E = rng.uniform(1.5, 3.5, size=K)
    B = np.exp(rng.uniform(np.log(0.4), np.log(3.0), size=K))
    alpha = rng.uniform(0.25, 0.7, size=K)
    scale = steps * 10 ** rng.uniform(-3.0, -1.3, size=K)
    exponential = np.zeros(K, dtype=bool)
    epoch_steps = np.full(K, np.inf)
    overfit = forget = halflife = weights = None
    transfer_kind = transfer or {"powerlaw": "sparse", "saturating": "block", "repetition": "sparse",
                                 "interference": "negative", "forgetting": "sparse", "targeted": "lowrank"}[family]
    if family == "saturating":
        exponential = rng.random(K) < 0.5
        scale = np.where(exponential, steps * 10 ** rng.uniform(-2.5, -0.8, size=K), scale)
    if family == "repetition":
        small = rng.random(K) < 0.4
        small[rng.integers(K)] = True
        epoch_steps = np.where(small, steps * rng.uniform(0.005, 0.04, size=K), np.inf)
        B = np.where(small, B * 1.5, B)                     # small domains: high quality, high value
        overfit = np.where(small, rng.uniform(0.005, 0.03, size=K), 0.0)
    if family == "forgetting":
        forget = rng.uniform(0.3, 0.7, size=K)
        halflife = steps * rng.uniform(0.05, 0.3, size=K)
    if family == "targeted":
        targets = rng.choice(K, size=max(1, K // 4), replace=False)
        weights = np.full(K, 0.3 / K)
        weights[targets] += 0.7 / len(targets)
        weights /= weights.sum()
    model = LossModel(
        name=f"{family}-K{K}-T{steps}-s{seed}" + (f"-{transfer}" if transfer else ""), steps=int(steps),
        E=E, B=B, alpha=alpha, scale=scale,
        exponential=exponential, transfer=_transfer(rng, K, transfer_kind), epoch_steps=epoch_steps,
        overfit=overfit, forget=forget, halflife=halflife,
        noise=None if noise <= 0 else np.full(K, float(noise)) * rng.uniform(0.5, 1.5, size=K),
        weights=weights,
    )
    return model


def make_simulator(family: str, K: int, steps: int, seed: int = 0, noise: float = 0.01,
                   transfer: str | None = None) -> Simulator:
    return Simulator(make_model(family, K, steps, seed, noise, transfer))


@dataclass(frozen=True)
class Case:
    family: str
    K: int
    steps: int
    noise: float
    seed: int
    transfer: str | None = None        # None: the family's own kind of transfer

    @property
    def name(self) -> str:
        return (f"{self.family}/K{self.K}/T{self.steps}/noise{self.noise:g}/s{self.seed}"
                + (f"/{self.transfer}" if self.transfer else ""))

    def simulator(self) -> Simulator:
        return make_simulator(self.family, self.K, self.steps, self.seed, self.noise, self.transfer)


_BEST: dict = {}


def best_static_cached(case: Case):
    """best_static of a case's simulator, computed once per process."""
    if case not in _BEST:
        _BEST[case] = best_static(case.simulator())
    return _BEST[case]


def relative_gap(sim: Simulator, best: float) -> float:
    """(L_stratified - L_best) / (L_stratified - floor): the share of the loss still reducible at
    the uniform mixture (floor: the objective-weighted asymptotes) that the best mixture removes."""
    strat = static_objective(sim, np.full(sim.K, 1.0 / sim.K))
    floor = float(sim.weights @ sim.model.E)
    return (strat - best) / max(strat - floor, 1e-12)


SUITE_SETTINGS = ((3, 5000, 0.003), (8, 10000, 0.01), (20, 20000, 0.02))   # (K, steps, eval noise)


def suite(quick: bool = False, seed: int = 0, min_gap: float = 0.01, settings=None,
          transfer: str | None = None) -> list[Case]:
    """The benchmark cases: every family at K = 3, 8 and 20 (T = 5k, 10k, 20k steps; eval noise
    0.003, 0.01, 0.02; or the (K, steps, noise) `settings` given), or one setting per family with
    `quick`; `transfer` gives every family that kind of transfer instead of its own. Only cases
    where the mixture matters: a draw whose best static mixture removes less than `min_gap` of
    the loss still reducible at the uniform mixture is redrawn (next seed; at most 20 tries),
    since there the gap that "gap closed" divides by is noise."""
    settings = list(SUITE_SETTINGS if settings is None else settings)
    cases = []
    for index, family in enumerate(FAMILIES):
        chosen = [settings[index % len(settings)]] if quick else settings
        for K, steps, noise in chosen:
            for attempt in range(20):
                case = Case(family, K, steps, noise, seed + attempt, transfer)
                if relative_gap(case.simulator(), best_static_cached(case)[1]) >= min_gap:
                    break
            cases.append(case)
    return cases


def with_spikes(model: LossModel, rate: float, size: float = 0.3) -> LossModel:
    """The same loss model whose observations spike (every domain + size) with probability rate."""
    return replace(model, spike_rate=float(rate), spike_size=float(size))


def with_noise_scale(model: LossModel, factor: float) -> LossModel:
    """The same loss model with its observation noise multiplied by `factor` (0: noise-free)."""
    if factor < 0:
        raise InputError(f"noise scale must be >= 0, got {factor}")
    if model.noise is None or factor == 0:
        return replace(model, noise=None)
    return replace(model, noise=model.noise * float(factor))
