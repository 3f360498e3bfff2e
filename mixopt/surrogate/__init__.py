"""Surrogates: regressors from mixture to loss behind one fit/predict interface.

    kind                  model
    "mixing-law"          Data Mixing Laws: L = c + exp(b + t . w), robust fit, one law per column
    "mixing-law-wlog"     the same law with log(w + eps) features beside w
    "linear"              ridge on w
    "linear-wlog"         ridge on (w, log(w + eps)), penalty by GCV
    "quadratic"           Scheffe's quadratic mixture model (w and all w_j w_l), ridge by GCV
    "quadratic-wlog"      ridge on (w, log(w + eps), all w_j w_l): pairwise interactions, penalty by GCV
    "gp"                  a Gaussian process on the simplex (Hellinger geometry), reverting to the
                          runs' mean far from them, its posterior spread growing there
    "lightgbm"            LightGBM, leaves sized to the number of runs
    "regmix-lightgbm"     LightGBM with RegMix's settings exactly
    "constant"            the runs' mean (the model of no evidence: stacking shrinks toward it)
    "ensemble"            the smooth models above (both mixing laws, linear, linear-wlog,
                          quadratic-wlog, gp, constant), each admitted when the runs can carry
                          it, stacked by cross-validation with a penalty on members that swing
                          away from the runs; bootstrap, disagreement and coverage spread
    "ensemble-lightgbm"   the same with LightGBM as a further member (slow to score)
    "auto"                the default: "ensemble" (the cross-validated choice and combination of
                          its members), a mixing law when there are too few runs to cross-validate

Every model predicts through a loss floor (never below zero, nor more than a standard deviation of
the runs below the best run; see surrogate.base.loss_floor). `cv_summary` says from out-of-fold
predictions whether a study's runs carry signal (Spearman and top-1 regret).
"""

from __future__ import annotations

from mixopt.errors import InputError
from mixopt.surrogate.base import Replicas, Surrogate, check_X, check_Xy
from mixopt.surrogate.ensemble import DEFAULT_MEMBERS, MIN_RUNS_FOR_CV, EnsembleSurrogate
from mixopt.surrogate.gp import GaussianProcessSurrogate
from mixopt.surrogate.lightgbm_model import LightGBMSurrogate
from mixopt.surrogate.linear import ConstantSurrogate, LinearSurrogate
from mixopt.surrogate.mixing_law import MixingLawSurrogate
from mixopt.surrogate.registry import SURROGATES, make_surrogate
from mixopt.surrogate.selection import (
    cross_val_predict,
    cross_val_rmse,
    cv_summary,
    out_of_fold,
    recombined_mixtures,
    stacking_weights,
)

SURROGATES["ensemble"] = lambda seed: EnsembleSurrogate(seed=seed)
SURROGATES["ensemble-lightgbm"] = lambda seed: EnsembleSurrogate(seed=seed, members=DEFAULT_MEMBERS + ("lightgbm",))
KINDS = tuple(SURROGATES) + ("auto",)


def fit(X, y, seed: int = 0, kind: str = "auto") -> Surrogate:
    """Fit a surrogate from mixtures X (n, K) to losses y (n,) or (n, E).

    kind="auto" fits the cross-validated ensemble (see surrogate.ensemble); the fitted model
    carries `cv_scores_` (member kind -> cross-validated RMSE, and "ensemble" -> its own),
    `weights_` (members x loss columns), `admitted_` (which members the runs could carry),
    `instability_` (member kind -> its spread at unseen mixtures, in sd of the runs) and
    `honest_oof_` (out-of-fold predictions with cross-fitted stacking; see cv_summary). Fewer than
    8 runs get a mixing law alone (or ridge on w, with fewer runs than domains + 2)."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise InputError(f"unknown surrogate {kind!r}; choose one of {sorted(KINDS)}")
    X, Y = check_Xy(X, y)
    if kind != "auto":
        return make_surrogate(kind, seed).fit(X, y)
    if len(X) < MIN_RUNS_FOR_CV:
        return make_surrogate("mixing-law" if len(X) >= X.shape[1] + 2 else "linear", seed).fit(X, y)
    return make_surrogate("ensemble", seed).fit(X, y)


__all__ = [
    "Surrogate", "Replicas", "ConstantSurrogate", "LightGBMSurrogate", "LinearSurrogate", "MixingLawSurrogate",
    "EnsembleSurrogate", "GaussianProcessSurrogate", "fit", "make_surrogate", "SURROGATES", "KINDS", "DEFAULT_MEMBERS",
    "cross_val_predict", "cross_val_rmse", "cv_summary", "out_of_fold", "recombined_mixtures",
    "stacking_weights", "check_X", "check_Xy",
]
