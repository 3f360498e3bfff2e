"""Choosing a surrogate by cross-validation on the runs at hand."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mixopt.surrogate.base import Surrogate, check_Xy


def kfold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::folds] for i in range(folds)]


def cross_val_predict(make: Callable[[], Surrogate], X, y, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions (n, E): every row predicted by a model that never saw it."""
    X, y = check_Xy(X, y)
    folds = int(min(folds, len(X)))
    predictions = np.empty_like(y)
    for held_out in kfold_indices(len(X), folds, seed):
        train = np.setdiff1d(np.arange(len(X)), held_out)
        model = make().fit(X[train], y[train])
        predictions[held_out] = np.asarray(model.predict(X[held_out])).reshape(len(held_out), -1)
    return predictions


def cross_val_rmse(make: Callable[[], Surrogate], X, y, folds: int = 5, seed: int = 0) -> float:
    X, y = check_Xy(X, y)
    predictions = cross_val_predict(make, X, y, folds, seed)
    return float(np.sqrt(np.mean((predictions - y) ** 2)))
