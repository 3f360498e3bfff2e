"""Surrogates: regressors from mixture to loss behind one fit/predict interface."""

from __future__ import annotations

import numpy as np

from mixopt.errors import InputError
from mixopt.surrogate.base import Surrogate, check_X, check_Xy
from mixopt.surrogate.lightgbm_model import LightGBMSurrogate
from mixopt.surrogate.linear import LinearSurrogate
from mixopt.surrogate.selection import cross_val_predict, cross_val_rmse

SURROGATES = {
    "lightgbm": lambda seed: LightGBMSurrogate(seed=seed),
    "regmix-lightgbm": lambda seed: LightGBMSurrogate(seed=seed, regmix=True),
    "linear": lambda seed: LinearSurrogate(seed=seed),
}
AUTO_CANDIDATES = ("lightgbm", "linear")


def make_surrogate(kind: str, seed: int = 0) -> Surrogate:
    if kind not in SURROGATES:
        raise InputError(f"unknown surrogate {kind!r}; choose one of {sorted(SURROGATES) + ['auto']}")
    return SURROGATES[kind](seed)


def fit(X, y, seed: int = 0, kind: str = "auto") -> Surrogate:
    """Fit a surrogate from mixtures X (n, K) to losses y (n,) or (n, E).

    kind="auto" chooses among AUTO_CANDIDATES by 5-fold cross-validated RMSE on these runs; the
    chosen model is refitted on all of them and carries `cv_scores_` (kind -> RMSE)."""
    X, y_checked = check_Xy(X, y)
    if kind != "auto":
        return make_surrogate(kind, seed).fit(X, y)
    if len(X) < 4:
        return make_surrogate("linear", seed).fit(X, y)
    scores = {name: cross_val_rmse(lambda name=name: make_surrogate(name, seed), X, y_checked, seed=seed)
              for name in AUTO_CANDIDATES}
    best = min(scores, key=scores.get)
    model = make_surrogate(best, seed).fit(X, y)
    model.cv_scores_ = scores
    return model


__all__ = [
    "Surrogate", "LightGBMSurrogate", "LinearSurrogate", "fit", "make_surrogate", "SURROGATES",
    "cross_val_predict", "cross_val_rmse", "check_X", "check_Xy",
]
