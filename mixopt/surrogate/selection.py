"""Choosing and combining surrogates by cross-validation on the runs at hand."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import nnls

from mixopt.errors import InputError
from mixopt.stats import spearman, top1_regret
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


WELL_SEEN_RUNS = 8   # recombined_mixtures: a domain that this many runs gave weight keeps the weights they gave it


def recombined_mixtures(X, size: int, seed: int = 0) -> np.ndarray:
    """(size, K) mixtures recombined from the runs X: what unseen runs of the same swarm may look
    like, for judging how a model behaves at mixtures no run tried. Each domain is non-zero as
    often as in the runs (its support rate), independently of the others, so supports combine as
    no run combined them. A non-zero domain that m runs gave weight takes one of those m weights,
    except, with probability 1 - m / WELL_SEEN_RUNS, a non-zero weight of any domain: a domain
    that many runs gave weight keeps its own range, one seen in a handful may get the weights
    other domains got (what a sampler that treats domains alike will give it), which is where a
    model fitted on the handful extrapolates. Then each mixture is normalised."""
    X = np.maximum(np.asarray(X, dtype=np.float64), 0.0)
    n, K = X.shape
    rng = np.random.default_rng([seed, 6007])
    nonzero_runs = (X > 0).sum(axis=0)
    pooled = X[X > 0]
    if len(pooled) == 0:
        return np.full((size, K), 1.0 / K)
    support = rng.random((size, K)) < (nonzero_runs / n)[None, :]
    own = np.zeros((size, K))
    for j in np.flatnonzero(nonzero_runs):
        values = X[X[:, j] > 0, j]
        own[:, j] = values[rng.integers(0, len(values), size=size)]
    keep_own = rng.random((size, K)) < np.minimum(nonzero_runs / WELL_SEEN_RUNS, 1.0)[None, :]
    weights = np.where(keep_own, own, pooled[rng.integers(0, len(pooled), size=(size, K))])
    pool = np.where(support, weights, 0.0)
    empty = pool.sum(axis=1) <= 0
    pool[empty] = X[rng.integers(0, n, size=int(empty.sum()))]
    return pool / pool.sum(axis=1, keepdims=True)


def stacking_weights(oof: np.ndarray, y: np.ndarray, instability: np.ndarray | None = None) -> np.ndarray:
    """Non-negative weights summing to one that best combine out-of-fold predictions oof (n, M)
    into y (n,) (Breiman's stacked regression): min ||oof w - y||^2 + n (instability . w)^2 over
    the probability simplex, solved as non-negative least squares with the sum-to-one condition as
    a heavily weighted extra row. instability (M,): each member's standard deviation at unseen
    mixtures (in y's units; see EnsembleSurrogate), so the penalty is the variance the combination
    adds where no run was (members treated as fully correlated: the larger, cautious value). A
    member that does not generalise, or swings away from the runs, gets little or no weight; with
    a constant member among them, the combination shrinks toward the mean when the others predict
    worse than it. Falls back to the single best member."""
    oof = np.asarray(oof, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    scale = max(float(np.std(y)), 1e-12)
    centre = float(np.mean(y))
    A = (oof - centre) / scale
    b = (y - centre) / scale
    rows, targets = [A], [b]
    if instability is not None:
        rows.append(np.sqrt(len(y)) * np.asarray(instability, dtype=np.float64)[None, :] / scale)
        targets.append([0.0])
    big = 1e3 * np.sqrt(len(y))
    rows.append(np.full((1, oof.shape[1]), big))
    targets.append([big])
    weights, _ = nnls(np.vstack(rows), np.concatenate(targets))
    if weights.sum() <= 0 or not np.all(np.isfinite(weights)):
        weights = np.zeros(oof.shape[1])
        weights[np.argmin(np.mean((oof - y[:, None]) ** 2, axis=0))] = 1.0
    weights[weights < 1e-6] = 0.0
    return weights / weights.sum()


def out_of_fold(model_or_oof, Y, X=None, folds: int = 5, seed: int = 0) -> np.ndarray:
    """(n, E) out-of-fold predictions of the columns Y (n,) or (n, E): those a fitted surrogate kept
    (the ensemble's `honest_oof_`, with cross-fitted stacking weights, else its `oof_`), the array
    itself when given one, or a k-fold refit of the surrogate's clone on X."""
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    if isinstance(model_or_oof, Surrogate):
        oof = getattr(model_or_oof, "honest_oof_", None)
        if oof is None:
            oof = getattr(model_or_oof, "oof_", None)
        if oof is None:
            if X is None:
                raise InputError(f"{model_or_oof.name} surrogate kept no out-of-fold predictions: "
                                 "pass X to cross-validate it")
            oof = cross_val_predict(model_or_oof.clone, X, Y, folds=min(folds, len(Y)), seed=seed)
    else:
        oof = model_or_oof
    oof = np.asarray(oof, dtype=np.float64)
    oof = oof[:, None] if oof.ndim == 1 else oof
    if oof.shape != Y.shape:
        raise InputError(f"out-of-fold predictions have shape {oof.shape}, the losses {Y.shape}")
    return oof


def cv_summary(model_or_oof, y, weights=None, X=None, folds: int = 5, seed: int = 0) -> dict:
    """Whether the runs carry signal, from out-of-fold predictions: {"spearman": rank correlation
    of out-of-fold predicted and observed objective, "top1_regret": `top1_regret` of the run that
    the out-of-fold predictions rank first (0 = the best run, 1 = the worst), "runs": n}.

    model_or_oof: a fitted surrogate that kept its out-of-fold predictions (the ensemble of kind
    "auto": `honest_oof_`, with cross-fitted stacking weights, else `oof_`), an (n,) or (n, E)
    array of out-of-fold predictions, or a fitted surrogate without them, which is then
    cross-validated on X (its clone refitted on k folds). y: (n,) or
    (n, E) observed losses, the columns the model predicts. weights: (E,) objective weights over
    those columns (None: their mean). Spearman is NaN when it is undefined (fewer than two runs,
    or no spread)."""
    Y = np.asarray(y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    oof = out_of_fold(model_or_oof, Y, X=X, folds=folds, seed=seed)
    v = np.full(Y.shape[1], 1.0 / Y.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(v) != Y.shape[1]:
        raise InputError(f"objective has {len(v)} weights for {Y.shape[1]} loss columns")
    predicted, observed = oof @ v, Y @ v
    keep = np.isfinite(predicted) & np.isfinite(observed)
    predicted, observed = predicted[keep], observed[keep]
    if len(observed) == 0:
        return {"spearman": float("nan"), "top1_regret": float("nan"), "runs": 0}
    return {"spearman": spearman(predicted, observed), "top1_regret": top1_regret(predicted, observed),
            "runs": int(len(observed))}
