"""Choosing and combining surrogates by cross-validation on the runs at hand."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import nnls

from mixopt.surrogate.base import Surrogate, check_Xy


def kfold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(order[i::folds]) for i in range(folds)]


def fold_weights(n: int, folds: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(F, n) training masks, one per fold, and the held-out rows of each fold."""
    held = kfold_indices(n, folds, seed)
    W = np.ones((len(held), n))
    for f, rows in enumerate(held):
        W[f, rows] = 0.0
    return W, held


def cross_val_predict(make: Callable[[], Surrogate], X, y, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions (n, E): every row predicted by a model that never saw it."""
    X, y = check_Xy(X, y)
    folds = int(min(folds, len(X)))
    W, held = fold_weights(len(X), folds, seed)
    replicas = make().fit_replicas(X, y, W)
    predictions = np.empty_like(y)
    for f, rows in enumerate(held):
        predictions[rows] = replicas.predict(X[rows], f)
    return predictions


def cross_val_rmse(make: Callable[[], Surrogate], X, y, folds: int = 5, seed: int = 0) -> float:
    X, y = check_Xy(X, y)
    predictions = cross_val_predict(make, X, y, folds, seed)
    return float(np.sqrt(np.mean((predictions - y) ** 2)))


def stacking_weights(oof: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to one that best combine out-of-fold predictions oof (n, M)
    into y (n,) (Breiman's stacked regression): min ||oof w - y||^2 over the probability simplex,
    solved as non-negative least squares with the sum-to-one condition as a heavily weighted extra
    row. A member that does not generalise gets weight 0; with a constant member among them, the
    combination shrinks toward the mean when the others predict worse than it. Falls back to the
    single best member."""
    oof = np.asarray(oof, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    scale = max(float(np.std(y)), 1e-12)
    centre = float(np.mean(y))
    A = (oof - centre) / scale
    b = (y - centre) / scale
    big = 1e3 * np.sqrt(len(y))
    weights, _ = nnls(np.vstack([A, np.full((1, oof.shape[1]), big)]), np.concatenate([b, [big]]))
    if weights.sum() <= 0 or not np.all(np.isfinite(weights)):
        weights = np.zeros(oof.shape[1])
        weights[np.argmin(np.mean((oof - y[:, None]) ** 2, axis=0))] = 1.0
    weights[weights < 1e-6] = 0.0
    return weights / weights.sum()
