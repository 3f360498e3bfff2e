"""Ask/tell studies over a MixtureSpace, and `optimize`, the loop that drives one to a recommendation.

A study spends a budget of proxy runs over one or more rounds. `ask()` returns the mixtures of the
next round, `tell(X, Y)` records their losses, `recommend()` fits a surrogate from mixture to
objective and searches the space with it. Everything here sees arrays only: whoever evaluates the
mixtures (Ray proxy training, a simulator, a plain function) lives outside.

Asking is deterministic given the seed and what has been told, so a study that is replayed against
a store of finished runs asks for the same mixtures and resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mixopt import surrogate as surrogates
from mixopt.errors import InputError, StudyError
from mixopt.search import SearchResult, search
from mixopt.space import MixtureSpace

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


def split_budget(budget: int, rounds: int) -> list[int]:
    """Round sizes: half the budget in the first round (a space-filling design), the rest evenly."""
    if rounds <= 1 or budget < 2 * rounds:
        return [budget]
    first = budget // 2
    rest = budget - first
    later = [rest // (rounds - 1) + (1 if r < rest % (rounds - 1) else 0) for r in range(rounds - 1)]
    return [first] + later


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

    @property
    def observed(self) -> np.ndarray:
        """(n,) objective of every evaluated mixture (NaN for failed runs)."""
        return self.Y @ self.objective

    @property
    def n_runs(self) -> int:
        return len(self.X)


class Study:
    """An ask/tell study (see the module docstring)."""

    def __init__(
        self,
        space: MixtureSpace,
        budget: int = 128,
        objective=None,
        seed: int = 0,
        rounds: int = 1,
        surrogate: str = "auto",
        search: str = "topk",
        search_options: dict | None = None,
        loss_names: Sequence[str] | None = None,
    ):
        if not isinstance(space, MixtureSpace):
            raise InputError(f"space must be a MixtureSpace, got {type(space).__name__}")
        if not isinstance(budget, (int, np.integer)) or budget < 1:
            raise InputError(f"budget must be a positive integer, got {budget!r}")
        if not isinstance(rounds, (int, np.integer)) or rounds < 1:
            raise InputError(f"rounds must be a positive integer, got {rounds!r}")
        self.space = space
        self.budget = int(budget)
        self.objective_spec = objective
        self.seed = int(seed)
        self.round_sizes = split_budget(self.budget, int(rounds))
        self.surrogate_kind = surrogate
        self.search_method = search
        self.search_options = dict(search_options or {})
        self.loss_names = list(loss_names) if loss_names is not None else None
        self.X = np.empty((0, space.K))
        self.Y: np.ndarray | None = None
        self.rounds_told = 0

    # -- the protocol -------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.rounds_told >= len(self.round_sizes)

    @property
    def remaining(self) -> int:
        return self.budget - len(self.X)

    def ask(self) -> np.ndarray:
        """Mixtures for the next round; the same ones again until that round is told."""
        if self.done:
            raise StudyError(f"the study has spent its budget of {self.budget} runs")
        size = self.round_sizes[self.rounds_told]
        rng = np.random.default_rng([self.seed, self.rounds_told])
        if self.rounds_told == 0:
            design = np.vstack([self.space.natural[None, :], self.space.sample(size - 1, rng)])
            return design[:size]
        return self._ask_sequential(size, rng)

    def _ask_sequential(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """Later rounds: half around the current recommendation, half exploring the space."""
        current = self.recommend().weights
        near = self.space.sample(max(size - size // 2, 0), rng, centre=current, prior_share=1.0)
        far = self.space.sample(size // 2, rng)
        return np.vstack([near, far])

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
        if len(self.X) + len(X) > self.budget:
            raise StudyError(f"telling {len(X)} more runs would exceed the budget of {self.budget}")
        self.X = np.vstack([self.X, X])
        self.Y = Y if self.Y is None else np.vstack([self.Y, Y])
        self.rounds_told += 1

    @property
    def objective(self) -> np.ndarray:
        if self.Y is None:
            raise StudyError("no losses told yet")
        return objective_weights(self.objective_spec, self.Y.shape[1], self.loss_names)

    def recommend(self) -> Result:
        """Fit the surrogate on every successful run so far and search the space with it."""
        if self.Y is None:
            raise StudyError("nothing to recommend from: no runs told yet")
        weights = self.objective
        finished = np.all(np.isfinite(self.Y), axis=1)
        if finished.sum() < 2:
            raise StudyError(f"only {int(finished.sum())} of {len(self.Y)} proxy runs succeeded; need at least 2")
        X, y = self.X[finished], self.Y[finished] @ weights
        model = surrogates.fit(X, y, seed=self.seed, kind=self.surrogate_kind)
        options = {"seed": self.seed, **self.search_options}
        found = search(self.space, model.predict, self.search_method, **options)
        natural = self.space.natural
        return Result(
            weights=found.weights,
            predicted=found.predicted,
            natural=natural,
            natural_predicted=float(model.predict(natural[None, :])[0]),
            surrogate=model,
            search=found,
            X=self.X.copy(),
            Y=self.Y.copy(),
            objective=weights,
            cv_scores=dict(getattr(model, "cv_scores_", {})),
        )


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
