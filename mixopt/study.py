"""Ask/tell studies over a MixtureSpace, and `optimize`, the loop that drives one to a recommendation.

A study spends a budget of proxy runs over one or more rounds. `ask()` returns the mixtures of the
next round, `tell(X, Y)` records their losses, `recommend()` fits a surrogate from mixture to losses
and searches the space with it. Everything here sees arrays only: whoever evaluates the mixtures
(Ray proxy training, a simulator, a plain function) lives outside.

Round one is a space-filling design: the natural mixture and draws of the space's sampler (every
one inside the bounds and caps). Later rounds are sequential design: the surrogate fitted on what
has been told proposes its current recommendation and, among many feasible mixtures, those with the
lowest lower confidence bound (predicted objective minus `exploration` times the bootstrap spread
of the ensemble), kept apart from each other and from runs already made: proxies go where the
surrogate is promising or unsure.

The recommendation moves away from the prior (the natural mixture unless one is given) only as far
as the evidence supports, because the worst answer a mixture optimizer can give is a confident,
harmful one: the best of many noisy runs looks better than it is (the winner's curse).
  * Skill is measured out of sample: the cross-validated R^2 of the objective, with the stacking
    weights of the ensemble cross-fitted too, so that noise alone gives about zero.
  * The constrained search stays within a trust region whose radius grows with that skill: within
    `trust_radius(skill)` (total variation) of the prior and of a run, and inside the range of
    shares that at least three runs reached (one in a study of under 12 runs): no domain is
    driven to zero or to its cap on the word of one lucky run. It minimises the prediction plus
    `risk` times the surrogate's uncertainty.
  * The search's best mixture (the candidate) is recommended only when its predicted gain over the
    prior, shrunk by the surrogate's out-of-fold calibration, is significant: the whole 95% interval
    lies below zero and the skill is positive. Otherwise the prior is recommended, with the
    candidate and its interval reported beside it ("no significant gain: keep the prior").
    The measures live in mixopt.trust; benchmarks/trust.py checks them on simulators and flat
    objectives.

By default the surrogate is fitted to every loss column (one law per evaluation set, as in Data
Mixing Laws) and the search minimises the objective-weighted sum of the columns; fit="objective"
fits the weighted objective alone.

Asking is deterministic given the seed and what has been told, so a study that is replayed against
a store of finished runs asks for the same mixtures and resumes where it stopped.

(One concept, the ask/tell study, in one module of about 450 lines: Study's methods share its
state, and splitting them would only scatter it.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mixopt import surrogate as surrogates
from mixopt.errors import InputError, StudyError
from mixopt.search import SearchResult, diverse_best, search
from mixopt.space import MixtureSpace
from mixopt.trust import (
    Gain,
    box_runs,
    calibration_slope,
    gain_interval,
    objective_out_of_fold,
    objective_skill,
    trust_radius,
)

Evaluate = Callable[[np.ndarray], np.ndarray]


def objective_weights(objective, n_columns: int, names: Sequence[str] | None = None) -> np.ndarray:
    """Normalised (E,) weights over loss columns from None (equal), a sequence or {name: weight}."""
    if objective is None:
        return np.full(n_columns, 1.0 / n_columns)
    if isinstance(objective, dict):
        if names is None:
            raise InputError("objective given by name needs named loss columns")
        unknown = sorted(set(objective) - set(names))
        if unknown:
            raise InputError(f"objective names unknown evaluation domains {unknown} (known: {list(names)})")
        objective = [float(objective.get(name, 0.0)) for name in names]
    weights = np.asarray(objective, dtype=np.float64).reshape(-1)
    if len(weights) != n_columns:
        raise InputError(f"objective has {len(weights)} weights for {n_columns} loss columns")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise InputError(f"objective weights must be non-negative, finite and not all zero, got {weights.tolist()}")
    return weights / weights.sum()


AUTO_ROUNDS = 3
MIN_LATER_ROUND = 4


def auto_rounds(budget: int) -> int:
    """Rounds for rounds=None: 3 when every later round gets at least 4 runs, fewer otherwise."""
    for rounds in range(AUTO_ROUNDS, 1, -1):
        if (budget - budget // 2) // (rounds - 1) >= MIN_LATER_ROUND:
            return rounds
    return 1


def split_budget(budget: int, rounds: int, first_share: float = 0.5) -> list[int]:
    """Round sizes: `first_share` of the budget in the first round (a space-filling design), the
    rest evenly."""
    if rounds <= 1 or budget < 2 * rounds:
        return [budget]
    first = min(max(int(budget * first_share), 1), budget - (rounds - 1))
    rest = budget - first
    later = [rest // (rounds - 1) + (1 if r < rest % (rounds - 1) else 0) for r in range(rounds - 1)]
    return [first] + later


@dataclass(frozen=True)
class Fidelity:
    """Multi-fidelity studies: `runs` short proxies, trained on `fraction` of the tokens, come
    first (a space-filling round); the full-length rounds then begin by promoting the short runs'
    most promising mixtures to full length (successive halving, retrained at full length). Short
    runs count beside the budget of full-length runs, at `fraction` of a run's compute each."""

    runs: int
    fraction: float = 0.25

    def __post_init__(self) -> None:
        if isinstance(self.runs, bool) or not isinstance(self.runs, (int, np.integer)) or self.runs < 2:
            raise InputError(f"fidelity runs must be an integer of at least 2, got {self.runs!r}")
        if isinstance(self.fraction, bool) or not 0 < float(self.fraction) < 1:
            raise InputError(f"fidelity fraction must lie in (0, 1), got {self.fraction!r}")


MIN_PAIRS_FOR_SLOPE = 4


def fidelity_map(short: np.ndarray, full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per loss column, the linear map full = intercept + slope * short fitted on mixtures run at
    both lengths ((m, E) each, same rows): least squares (the expected full-length loss given the
    short one, so a noisy short loss is shrunk toward the mean), slope clipped to [0, 3]; with fewer
    than 4 pairs, or short losses that do not vary, slope 1 and the mean shift."""
    short, full = np.atleast_2d(short), np.atleast_2d(full)
    slope = np.ones(short.shape[1])
    if len(short) >= MIN_PAIRS_FOR_SLOPE:
        centred = short - short.mean(axis=0)
        variance = np.sum(centred**2, axis=0)
        varies = variance > 1e-12
        slope[varies] = np.clip(np.sum(centred * (full - full.mean(axis=0)), axis=0)[varies] / variance[varies],
                                0.0, 3.0)
    intercept = full.mean(axis=0) - slope * short.mean(axis=0)
    return intercept, slope


@dataclass
class Result:
    """What a study recommends, with the evidence behind it."""

    weights: np.ndarray                 # (K,) recommended mixture
    predicted: float                    # surrogate's objective at `weights`
    natural: np.ndarray                 # (K,) token-proportional mixture, in bounds
    natural_predicted: float            # surrogate's objective at `natural`
    surrogate: surrogates.Surrogate
    search: SearchResult
    X: np.ndarray                       # (n, K) every mixture evaluated
    Y: np.ndarray                       # (n, E) their losses (NaN rows: failed runs)
    objective: np.ndarray               # (E,) normalised objective weights
    cv_scores: dict = field(default_factory=dict)
    predicted_std: float = float("nan")  # the surrogate's uncertainty at `weights` (see objective_spread)
    rounds: int = 1                      # rounds the budget was spent over
    columns: np.ndarray | None = None    # loss columns the surrogate predicts (None: the objective itself)
    skill: float = float("nan")          # cross-validated R^2 of the objective (0: no better than the mean)
    trust_radius: float | None = None    # the search stayed within this total variation of a run (None: anywhere)
    best_observed: np.ndarray | None = None   # (K,) the feasible run with the lowest observed objective
    prior: np.ndarray | None = None           # (K,) where the recommendation starts from (default: natural)
    gain: Gain | None = None                  # the search's best mixture against the prior (trust only)
    cv_predicted: np.ndarray | None = None    # (m,) out-of-fold objective of the m finished runs (None: < 4 runs)
    cv_observed: np.ndarray | None = None     # (m,) their observed objective
    cv_rows: np.ndarray | None = None         # (m,) those runs' rows in the study's told order
    short_runs: int = 0                       # short runs the surrogate also learned from (Fidelity)

    def predict_objective(self, X) -> np.ndarray:
        """(n,) the surrogate's objective at mixtures X."""
        return self.surrogate.objective(self._surrogate_weights())(np.atleast_2d(X))

    def objective_spread(self, X) -> np.ndarray:
        """(n,) the surrogate's uncertainty about the objective at mixtures X (bootstrap spread
        and, for ensembles, the disagreement of plausible members)."""
        return self.surrogate.objective_spread(np.atleast_2d(X), self._surrogate_weights())

    def _surrogate_weights(self) -> np.ndarray | None:
        return None if self.columns is None else self.objective[self.columns]

    @property
    def observed(self) -> np.ndarray:
        """(n,) objective of every evaluated mixture (NaN for failed runs)."""
        return self.Y @ self.objective

    @property
    def n_runs(self) -> int:
        return len(self.X)


@dataclass
class SurrogateFit:
    """A surrogate fitted on a study's finished runs (Study.fit_surrogate)."""

    model: surrogates.Surrogate
    model_objective: np.ndarray | None   # objective weights over `columns` (None: it predicts the objective)
    columns: np.ndarray | None           # loss columns the model predicts (None: the objective itself)
    X: np.ndarray                        # (n, K) the mixtures it was fitted on
    Y: np.ndarray                        # (n, E) their losses (short runs mapped to full length)
    top: np.ndarray                      # (n,) bool: a full-length run (False: a mapped short run)
    rows: np.ndarray                     # (n,) each fitted run's row in the study's told order
    cv_predicted: np.ndarray | None      # (top.sum(),) out-of-fold objective of the full-length runs (None: < 4)
    skill: float                         # cross-validated R^2 of the objective, clipped to [0, 1]


DESIGNS = ("lcb", "mixed", "local", "random")
FITS = ("columns", "objective")


class Study:
    """An ask/tell study (see the module docstring).

    rounds: how many rounds the budget is spent over (the first gets half, the rest share the
    other half); None (the default): 3, fewer when the later rounds would get under 4 runs each.
    design: how later rounds choose mixtures: "lcb" (lower confidence bound, the default), "local"
    (around the search's best mixture) or "random" (the sampler again). fidelity: a Fidelity
    (short runs first, then the budget's full-length runs, see `Fidelity`), or None: every run at
    full length.
    exploration: the LCB's multiple of the bootstrap spread. fit: "columns" (a surrogate per loss
    column, combined by the objective) or "objective" (one surrogate of the weighted objective).
    risk: the recommendation minimises the prediction plus `risk` times the surrogate's uncertainty
    (bootstrap spread and disagreement between plausible models), so that it does not land where
    the surrogate extrapolates from no data (0: the prediction alone). trust: keep the constrained
    search within a trust region around the runs, its radius set by the surrogate's cross-validated
    skill on the objective (see `trust_radius`), and recommend the search's best mixture only when its
    gain over `prior` is significant (see the module docstring); without trust, the recommendation is
    the search's best mixture, never predicted worse than the best observed feasible run. prior:
    where the recommendation starts from and falls back to (default: the natural mixture)."""

    def __init__(
        self,
        space: MixtureSpace,
        budget: int = 128,
        objective=None,
        seed: int = 0,
        rounds: int | None = None,
        surrogate: str = "auto",
        search: str = "constrained",
        search_options: dict | None = None,
        loss_names: Sequence[str] | None = None,
        design: str = "lcb",
        exploration: float = 1.0,
        fit: str = "columns",
        risk: float = 1.0,
        first_share: float = 0.5,
        trust: bool = True,
        prior=None,
        fidelity: Fidelity | None = None,
    ):
        if not isinstance(space, MixtureSpace):
            raise InputError(f"space must be a MixtureSpace, got {type(space).__name__}")
        if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget < 1:
            raise InputError(f"budget must be a positive integer, got {budget!r}")
        if rounds is None:
            rounds = auto_rounds(int(budget))
        if not isinstance(rounds, (int, np.integer)) or isinstance(rounds, bool) or rounds < 1:
            raise InputError(f"rounds must be a positive integer or None, got {rounds!r}")
        if not isinstance(surrogate, str) or surrogate not in surrogates.KINDS:
            raise InputError(f"unknown surrogate {surrogate!r}; choose one of {sorted(surrogates.KINDS)}")
        if design not in DESIGNS:
            raise InputError(f"unknown design {design!r}; choose one of {list(DESIGNS)}")
        if fit not in FITS:
            raise InputError(f"fit must be one of {list(FITS)}, got {fit!r}")
        for name, value in (("exploration", exploration), ("risk", risk)):
            if not isinstance(value, (int, float, np.number)) or not np.isfinite(value) or value < 0:
                raise InputError(f"{name} must be a non-negative number, got {value!r}")
        self.space = space
        self.budget = int(budget)
        self.objective_spec = objective
        self.seed = int(seed)
        if not 0 < first_share <= 1:
            raise InputError(f"first_share must lie in (0, 1], got {first_share!r}")
        if fidelity is not None and not isinstance(fidelity, Fidelity):
            raise InputError(f"fidelity must be a Fidelity or None, got {type(fidelity).__name__}")
        self.fidelity = fidelity
        self.round_sizes = split_budget(self.budget, int(rounds), first_share)
        self.round_fractions = [1.0] * len(self.round_sizes)
        if fidelity is not None:
            self.round_sizes = [int(fidelity.runs)] + self.round_sizes
            self.round_fractions = [float(fidelity.fraction)] + self.round_fractions
        self.surrogate_kind = surrogate
        self.search_method = search
        self.search_options = dict(search_options or {})
        self.loss_names = list(loss_names) if loss_names is not None else None
        self.design = design
        self.exploration = float(exploration)
        self.risk = float(risk)
        self.fit_target = fit
        self.trust = bool(trust)
        self.prior = space.natural if prior is None else space.project(space.validate(prior, "prior"))[0]
        self.X = np.empty((0, space.K))
        self.Y: np.ndarray | None = None
        self.fractions = np.empty(0)        # (n,) each told run's share of the full tokens
        self.rounds_told = 0
        self._asked: tuple[int, np.ndarray] | None = None
        self._recommended: tuple[int, Result] | None = None

    # -- the protocol -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.rounds_told >= len(self.round_sizes)

    @property
    def remaining(self) -> int:
        """Runs still to ask, short ones included."""
        return sum(self.round_sizes) - len(self.X)

    @property
    def round_fraction(self) -> float:
        """The share of the full tokens that the next round's runs train on (1.0: full length)."""
        return self.round_fractions[self.rounds_told] if not self.done else 1.0

    def ask(self) -> np.ndarray:
        """Mixtures for the next round; the same ones again until that round is told."""
        if self.done:
            raise StudyError(f"the study has spent its budget of {self.budget} runs")
        if self._asked is not None and self._asked[0] == self.rounds_told:
            return self._asked[1].copy()
        size = self.round_sizes[self.rounds_told]
        rng = np.random.default_rng([self.seed, self.rounds_told])
        if self.rounds_told == 0 or self._finished().sum() < 2:
            design = np.vstack([self.space.natural[None, :], self.space.sample(max(size - 1, 0), rng)])[:size]
        elif self.fidelity is not None and self.rounds_told == 1:
            design = self._promote(size, rng)
        else:
            design = self._ask_sequential(size, rng)
        self._asked = (self.rounds_told, design)
        return design.copy()

    def _ask_sequential(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """Later rounds: the current recommendation, then the lowest lower confidence bounds."""
        current = self.recommend()
        # later rounds explore around the search's best mixture, recommended or not
        current = current if current.gain is None else dataclasses.replace(current, weights=current.gain.candidate)
        if self.design == "random":
            return self.space.sample(size, rng)
        if self.design == "local":
            near = self.space.sample(size - 1, rng, centre=current.weights, prior_share=1.0)
            return np.vstack([current.weights[None, :], near])
        if self.design == "mixed":
            local = (size - 1) // 2
            near = self.space.sample(local, rng, centre=current.weights, prior_share=1.0)
            chosen = self._lcb_batch(current, size - local, rng, extra=near)
            return np.vstack([chosen[:1], near, chosen[1:]])[:size]
        return self._lcb_batch(current, size, rng)

    def _promote(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """The first full-length round of a multi-fidelity study: the natural mixture, then the short
        runs' mixtures with the lowest lower confidence bound under the surrogate fitted on them,
        kept apart (successive halving: the promising and the uncertain go on). Each promoted
        mixture, run at both lengths, also teaches the map from short to full-length losses."""
        current = self.recommend()
        natural = self.space.natural
        short = self.X[self._finished()]
        short = short[np.abs(short - natural).sum(axis=1) > 1e-9]
        chosen = [natural]
        if len(short):
            bound = current.predict_objective(short) - self.exploration * current.objective_spread(short)
            chosen.extend(short[diverse_best(short, bound, size - 1, 0.02)])
        if len(chosen) < size:
            extra = self._lcb_batch(current, size - len(chosen) + 1, rng)[1:]
            chosen.extend(extra)
        return np.asarray(chosen[:size])

    def _lcb_batch(self, current: "Result", size: int, rng: np.random.Generator, extra=None) -> np.ndarray:
        pool = np.vstack([
            self.space.sample(4000, rng),
            self.space.sample(4000, rng, centre=current.weights, prior_share=1.0),
        ])
        mean = current.predict_objective(pool)
        spread = current.objective_spread(pool)
        bound = mean - self.exploration * spread
        observed = self.X[self._finished()]
        if extra is not None and len(extra):
            observed = np.vstack([observed, extra])
        chosen = [current.weights]
        distance = 0.05
        while len(chosen) < size and distance > 1e-4:
            taken = np.vstack([observed, np.asarray(chosen)])
            far = np.min(np.abs(pool[:, None, :] - taken[None, :, :]).sum(axis=2), axis=1) >= distance
            if not far.any():
                distance /= 2
                continue
            picks = np.flatnonzero(far)[diverse_best(pool[far], bound[far], size - len(chosen), distance)]
            chosen.extend(pool[picks])
            distance /= 2
        if len(chosen) < size:
            chosen.extend(self.space.sample(size - len(chosen), rng))
        return np.asarray(chosen[:size])

    def tell(self, X, Y) -> None:
        """Record a round: X (n, K) mixtures and Y (n, E) losses, NaN rows for failed runs."""
        X = self.space.validate(X, "X")
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        if Y.ndim != 2 or len(Y) != len(X):
            raise InputError(f"losses must have shape ({len(X)}, E), got {np.shape(Y)}")
        if self.Y is not None and Y.shape[1] != self.Y.shape[1]:
            raise InputError(f"losses have {Y.shape[1]} columns, earlier rounds had {self.Y.shape[1]}")
        if len(self.X) + len(X) > sum(self.round_sizes):
            raise StudyError(f"telling {len(X)} more runs would exceed the budget of {self.budget}")
        self.fractions = np.concatenate([self.fractions, np.full(len(X), self.round_fraction)])
        self.X = np.vstack([self.X, X])
        self.Y = Y if self.Y is None else np.vstack([self.Y, Y])
        self.rounds_told += 1
        self._asked = None

    @property
    def objective(self) -> np.ndarray:
        if self.Y is None:
            raise StudyError("no losses told yet")
        return objective_weights(self.objective_spec, self.Y.shape[1], self.loss_names)

    def _finished(self) -> np.ndarray:
        if self.Y is None:
            return np.zeros(0, dtype=bool)
        return np.all(np.isfinite(self.Y), axis=1)

    def fit_surrogate(self) -> SurrogateFit:
        """The surrogate fitted on every finished run so far (short runs mapped to full length,
        kept only when the full-length runs rank better out of fold with them), with its out-of-fold
        objective on the full-length runs: what `recommend` searches with and `mixopt fit` saves."""
        if self.Y is None:
            raise StudyError("nothing to fit: no runs told yet")
        weights = self.objective
        finished = self._finished()
        if finished.sum() < 2:
            raise StudyError(f"only {int(finished.sum())} of {len(self.Y)} proxy runs succeeded; need at least 2")
        X, Y, top, rows = self.fitted_runs(finished)
        fit = self._fit(X, Y, top, rows, weights)
        if not top.all() and top.sum() >= 4:
            # the short runs earn their place out of fold: without them, do the full-length runs
            # rank better? (a short run's law may differ from the full length's beyond the map)
            alone = self._fit(X[top], Y[top], top[top], rows[top], weights)
            if alone.skill > fit.skill:
                fit = alone
        return fit

    def recommend(self) -> Result:
        """Fit the surrogate on every successful run so far and search the space with it."""
        if self.Y is None:
            raise StudyError("nothing to recommend from: no runs told yet")
        if self._recommended is not None and self._recommended[0] == len(self.X):
            return self._recommended[1]
        weights = self.objective
        fit = self.fit_surrogate()
        X, Y, top, model, model_objective = fit.X, fit.Y, fit.top, fit.model, fit.model_objective
        columns, cv_predicted, skill = fit.columns, fit.cv_predicted, fit.skill
        options = {"seed": self.seed, **self.search_options}
        observed = Y @ weights
        feasible = self.space.contains(X)
        ranked = np.flatnonzero(feasible)[np.argsort(observed[feasible], kind="stable")]
        radius = None
        space = self.space
        if self.search_method == "constrained":
            options.setdefault("smooth", bool(getattr(model, "smooth", False)))
            if self.trust:
                radius = trust_radius(skill)
                space = self._observed_box(X)
                options.setdefault("prior", self.prior)
                options.setdefault("max_shift", radius)
                if len(ranked):
                    options.setdefault("support", X[ranked])
                    options.setdefault("radius", radius)
            else:
                options.setdefault("extra_starts", X[np.argsort(observed, kind="stable")[:4]])
        mean = model.objective(model_objective)
        target = mean
        if self.risk > 0:
            def target(points):      # pessimistic: the prediction plus `risk` times its uncertainty
                return mean(points) + self.risk * model.objective_spread(points, model_objective)
        found = search(space, target, self.search_method, **options)
        chosen = found.weights
        ranked_top = ranked[top[ranked]]       # a run at full length, not a mapped short one
        best_observed = X[ranked_top[0]] if len(ranked_top) else None
        gain = None
        if self.trust:
            gain = gain_interval(model, model_objective, chosen, self.prior, skill, mean,
                                 calibration=calibration_slope(observed[top], cv_predicted))
            if not gain.significant:
                chosen = self.prior.copy()
        elif best_observed is not None:
            chosen = self._no_worse_than(chosen, best_observed, mean, target)
        natural = self.space.natural
        told = self.fractions == self.fractions.max()
        result = Result(
            weights=chosen,
            predicted=float(mean(chosen[None, :])[0]),
            natural=natural,
            natural_predicted=float("nan"),
            surrogate=model,
            search=found,
            X=self.X[told].copy(),
            Y=self.Y[told].copy(),
            objective=weights,
            cv_scores=dict(getattr(model, "cv_scores_", {})),
            rounds=len(self.round_sizes),
            columns=columns,
            skill=skill,
            trust_radius=radius,
            best_observed=None if best_observed is None else best_observed.copy(),
            prior=self.prior.copy(),
            gain=gain,
            cv_predicted=cv_predicted,
            cv_observed=observed[top],
            cv_rows=fit.rows[top] if cv_predicted is not None else None,
            short_runs=int(np.sum(~top)),
        )
        result.natural_predicted = float(result.predict_objective(natural)[0])
        result.predicted_std = float(result.objective_spread(chosen)[0])
        self._recommended = (len(self.X), result)
        return result

    def _fit(self, X: np.ndarray, Y: np.ndarray, top: np.ndarray, rows: np.ndarray,
             weights: np.ndarray) -> SurrogateFit:
        """The surrogate fitted on X, Y, judged out of fold on the full-length runs only (mapped short
        runs are fitted, not scored)."""
        if self.fit_target == "columns":
            columns = np.flatnonzero(weights > 0)
            model = surrogates.fit(X, Y[:, columns], seed=self.seed, kind=self.surrogate_kind)
            model_objective = weights[columns]
            fitted = Y[:, columns]
        else:
            columns, model_objective = None, None
            model = surrogates.fit(X, Y @ weights, seed=self.seed, kind=self.surrogate_kind)
            fitted = (Y @ weights)[:, None]
        cv_predicted = objective_out_of_fold(model, X, fitted, model_objective, self.seed)
        if cv_predicted is not None and not top.all():
            cv_predicted = cv_predicted[top] if top.sum() >= 4 else None
        skill = objective_skill((Y @ weights)[top], cv_predicted)
        return SurrogateFit(model, model_objective, columns, X, Y, top, rows, cv_predicted, skill)

    def fitted_runs(self, finished: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The finished runs the surrogate is fitted on: (X, Y, top, rows), top marking the runs at
        the longest length told, rows their positions in the study's told order. Without short
        runs, every finished run (top all true). With both lengths, the full-length runs, then the
        short runs of mixtures not run at full length with their losses mapped to full length
        (`fidelity_map`, fitted on the mixtures run at both)."""
        X, Y, fractions = self.X[finished], self.Y[finished], self.fractions[finished]
        rows = np.flatnonzero(finished)
        top = fractions == fractions.max()
        if top.all():
            return X, Y, top, rows
        full_X, full_Y, short_X, short_Y = X[top], Y[top], X[~top], Y[~top]
        distance = np.abs(short_X[:, None, :] - full_X[None, :, :]).sum(axis=2)     # (short, full)
        twin, paired = distance.argmin(axis=1), distance.min(axis=1) < 1e-9
        if paired.any():
            intercept, slope = fidelity_map(short_Y[paired], full_Y[twin[paired]])
        else:  # no mixture at both lengths (cannot happen after promotion): keep the short losses
            intercept, slope = np.zeros(Y.shape[1]), np.ones(Y.shape[1])
        mapped = intercept + slope * short_Y[~paired]
        X = np.vstack([full_X, short_X[~paired]])
        Y = np.vstack([full_Y, mapped])
        rows = np.concatenate([rows[top], rows[~top][~paired]])
        return X, Y, np.arange(len(X)) < len(full_X), rows

    def _observed_box(self, X: np.ndarray) -> MixtureSpace:
        """The space cut to the range of each domain's weight that several runs reached (and the
        prior): from the k-th smallest to the k-th largest share over the runs, k = box_runs (3 in a
        study of 12 runs or more). The search never recommends a share that only one lucky run
        trained on, so a domain is driven to zero or to its cap only where runs went there."""
        order = np.sort(X, axis=0)
        k = box_runs(len(X)) - 1
        lower = np.maximum(self.space.lower, np.minimum(order[k], self.prior))
        upper = np.minimum(self.space.upper, np.maximum(order[len(X) - 1 - k], self.prior))
        space = self.space
        return MixtureSpace(space.domains, space.tokens, target_tokens=space.target_tokens,
                            max_epochs=space.max_epochs, min_weights=lower, max_weights=upper)

    @staticmethod
    def _no_worse_than(chosen: np.ndarray, incumbent: np.ndarray, mean, target) -> np.ndarray:
        """`chosen` if its predicted objective is no worse than the incumbent's (the best observed
        feasible run); otherwise the point of the segment between them with the best `target`
        among those predicted no worse than the incumbent (the incumbent itself at worst)."""
        incumbent_mean = float(mean(incumbent[None, :])[0])
        if float(mean(chosen[None, :])[0]) <= incumbent_mean + 1e-12:
            return chosen
        steps = np.linspace(0.0, 1.0, 21)[:, None]
        segment = (1.0 - steps) * chosen[None, :] + steps * incumbent[None, :]
        segment[-1] = incumbent
        means, targets = mean(segment), target(segment)
        ok = np.flatnonzero(means <= incumbent_mean + 1e-12)
        return segment[ok[np.argmin(targets[ok])]].copy() if len(ok) else incumbent.copy()


def optimize(
    space: MixtureSpace,
    evaluate: Evaluate,
    budget: int = 128,
    objective=None,
    seed: int = 0,
    **study_options,
) -> Result:
    """Run a whole study: ask, evaluate, tell until the budget is spent, then recommend.

    evaluate maps (n, K) mixtures to (n, E) losses (lower is better); it may be called several
    times (rounds) and never sees more than `budget` rows in all."""
    if not callable(evaluate):
        raise InputError("evaluate must be callable: (n, K) mixtures -> (n, E) losses")
    study = Study(space, budget=budget, objective=objective, seed=seed, **study_options)
    while not study.done:
        X = study.ask()
        study.tell(X, evaluate(X.copy()))
    return study.recommend()
