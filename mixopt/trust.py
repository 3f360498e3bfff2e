"""How far the evidence lets a study move from its prior, and what gain it may claim.

A study picks the best of many noisy runs, so its surrogate's optimum leans toward the luckiest of
them (the winner's curse). These functions keep the recommendation honest: skill measured out of
sample (`objective_skill`, noise alone gives about 0), a trust radius that grows with it
(`trust_radius`), the share of a predicted difference that the runs' own cross-validation showed
to be real (`calibration_slope`), and the predicted gain of the search's best mixture over the prior
with its interval (`gain_interval`, `Gain`). Arrays in, numbers out; mixopt.study applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixopt import surrogate as surrogates

BOX_RUNS = 3           # a share counts as observed when this many runs reached it ...
BOX_MIN_STUDY = 12     # ... in a study of at least this many runs (a smaller one: one run)


def box_runs(n_runs: int) -> int:
    """How many runs must reach a share for the search to recommend it: BOX_RUNS in a study of
    BOX_MIN_STUDY runs or more; one in a smaller study, whose few runs must each count."""
    return BOX_RUNS if n_runs >= BOX_MIN_STUDY else 1
TRUST_MIN = 0.05       # trust radius (total variation from the prior and a run) when the surrogate has no skill
TRUST_FULL_SKILL = 0.9  # cross-validated R^2 from which the search may go anywhere in the space


def trust_radius(skill: float) -> float:
    """How far (total variation) the search may go from the prior and from the runs the surrogate
    was fitted on, from the surrogate's cross-validated R^2 on the objective: TRUST_MIN when it
    explains nothing, growing linearly to the whole space (1) at TRUST_FULL_SKILL. Weak evidence
    keeps the recommendation next to the prior; strong evidence lets it go far."""
    if not np.isfinite(skill) or skill <= 0:
        return TRUST_MIN
    return float(min(1.0, TRUST_MIN + (1.0 - TRUST_MIN) * skill / TRUST_FULL_SKILL))


def objective_out_of_fold(model, X: np.ndarray, Y: np.ndarray, weights: np.ndarray | None,
                          seed: int = 0) -> np.ndarray | None:
    """(n,) out-of-fold predictions of the objective Y @ weights (Y's one column when weights is
    None): the ensemble's, with cross-fitted stacking weights (`honest_oof_`: each run predicted by
    members and stacking weights that never saw it), or a k-fold refit of `model`; None under 4 runs."""
    if getattr(model, "honest_oof_", None) is None and getattr(model, "oof_", None) is None and len(X) < 4:
        return None
    oof = surrogates.out_of_fold(model, Y, X=X, seed=seed)
    return oof[:, 0] if weights is None else oof @ weights


def objective_skill(observed: np.ndarray, predicted: np.ndarray | None) -> float:
    """Cross-validated R^2 of the objective, clipped to [0, 1]: 0 when out-of-fold predictions do
    no better than the mean (noise alone scores about 0 with cross-fitted stacking)."""
    variance = float(np.var(observed))
    if predicted is None or variance <= 0:
        return 0.0
    return float(np.clip(1.0 - np.mean((predicted - observed) ** 2) / variance, 0.0, 1.0))


def calibration_slope(observed: np.ndarray, predicted: np.ndarray | None) -> float:
    """The slope of the observed objective on its out-of-fold prediction, clipped to [0, 1]: how much
    of a predicted difference between runs shows up in what they measured. 1 for a calibrated model;
    below 1 where the prediction spreads wider than what it explains (noise the fit mistook for
    signal), which is the share of a predicted gain to expect back (the winner's curse)."""
    if predicted is None or len(observed) < 3:
        return 0.0
    spread = float(np.var(predicted))
    if spread <= 0:
        return 0.0
    slope = float(np.mean((predicted - predicted.mean()) * (observed - observed.mean()))) / spread
    return float(np.clip(slope, 0.0, 1.0))


GAIN_LEVEL = 0.95


@dataclass(frozen=True)
class Gain:
    """The predicted gain of the search's best mixture over the prior: f(candidate) - f(prior) of the
    surrogate's objective (negative: the candidate is predicted better), with a `level` interval
    that accounts for the search having picked the candidate among many (see gain_interval).
    `significant`: the whole interval lies below zero and the surrogate has skill, so the candidate
    is recommended; otherwise the prior is."""

    estimate: float
    low: float
    high: float
    level: float
    significant: bool
    candidate: np.ndarray
    candidate_predicted: float
    calibration: float = 1.0     # the share of the predicted difference kept (calibration_slope)

    def to_json(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level,
                "significant": self.significant, "candidate": self.candidate.tolist(),
                "candidate_predicted": self.candidate_predicted, "calibration": self.calibration}


def difference_spread(model, a: np.ndarray, b: np.ndarray, weights: np.ndarray | None) -> tuple[float, float]:
    """The surrogate's uncertainty about d = f(a) - f(b) of its objective, in two parts:
    (sampling, form). sampling: the spread of d over the surrogate's bootstrap replicas (what the
    runs' noise leaves uncertain, and what a search can exploit). form: for ensembles, the spread of
    the members' own d around the stacked d, each member counted by its stacking weight (model
    forms that fit the runs alike but extrapolate differently); 0 for a single model."""
    points = np.vstack([a, b])
    v = None if weights is None else np.asarray(weights, dtype=np.float64)

    def objective(values):          # (..., 2, E) -> (..., 2)
        return values[..., 0] if v is None else values @ v

    sampling = form = 0.0
    replicas = model.predict_replicas(points)
    if replicas is not None:
        d = objective(replicas)
        sampling = float(np.std(d[:, 0] - d[:, 1]))
    stacking = getattr(model, "weights_", None)
    if stacking is not None and hasattr(model, "member_predictions"):
        share = stacking @ (np.ones(stacking.shape[1]) / stacking.shape[1] if v is None else v)   # (M,)
        used = np.flatnonzero(share > 0)
        members = objective(model.member_predictions(points, used)[used])
        d_members = members[:, 0] - members[:, 1]
        d_stacked = float(share[used] @ d_members / share[used].sum())
        form = float(np.sqrt(share[used] @ (d_members - d_stacked) ** 2 / share[used].sum()))
    return sampling, form


def gain_interval(model, model_objective, candidate: np.ndarray, prior: np.ndarray, skill: float,
                  mean, level: float = GAIN_LEVEL, calibration: float = 1.0) -> Gain:
    """The Gain of `candidate` over `prior` under the fitted surrogate: the predicted difference,
    shrunk by the surrogate's out-of-fold `calibration` slope, with a normal interval from the
    difference's sampling and model-form spread (difference_spread).

    The search picked the candidate for its predicted gain, so the raw difference leans optimistic
    (the winner's curse), the more so the weaker the signal. Three things keep the interval honest:
    the search moves only as far from the prior as the out-of-sample skill allows (trust_radius),
    the estimate keeps only the share of a predicted difference that the runs' own out-of-fold
    predictions showed to be real (calibration_slope), and the gain counts only where the skill is
    positive. A bootstrap estimate of the optimism, taken off the estimate, proved far too
    pessimistic (resampled runs extrapolate more wildly than the runs themselves);
    benchmarks/trust.py measures coverage and harm on simulators from negligible noise to twice the
    spread between mixtures."""
    from scipy.stats import norm

    predicted = float(mean(candidate[None, :])[0])
    estimate = calibration * (predicted - float(mean(prior[None, :])[0]))
    sampling, form = difference_spread(model, candidate, prior, model_objective)
    half = float(norm.ppf(0.5 + level / 2) * np.hypot(sampling, form))
    low, high = estimate - half, estimate + half
    significant = bool(high < 0 and skill > 0)
    return Gain(estimate=estimate, low=low, high=high, level=level, significant=significant,
                candidate=candidate.copy(), candidate_predicted=predicted, calibration=float(calibration))
