"""From a fitted surrogate to a mixture: score many feasible candidates, keep the best."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mixopt.errors import InputError
from mixopt.space import MixtureSpace

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SearchResult:
    weights: np.ndarray      # (K,) feasible mixture
    predicted: float         # the surrogate's objective at `weights`
    candidates: int          # how many candidates were scored
    method: str


def topk_average(
    space: MixtureSpace,
    predict: Predict,
    candidates: int = 100_000,
    top_k: int = 100,
    seed: int = 0,
    centre: np.ndarray | None = None,
    batch: int = 250_000,
) -> SearchResult:
    """RegMix's search: score `candidates` feasible mixtures, average the `top_k` best.

    The average of feasible mixtures is feasible (the feasible set is convex), so no projection is
    needed. Candidates are scored in batches to bound memory."""
    if candidates < 1 or top_k < 1:
        raise InputError(f"candidates and top_k must be positive, got {candidates} and {top_k}")
    top_k = min(top_k, candidates)
    rng = np.random.default_rng(seed)
    best_scores = np.empty(0)
    best_points = np.empty((0, space.K))
    remaining = candidates
    while remaining > 0:
        size = min(batch, remaining)
        points = space.sample(size, rng, centre=centre)
        scores = np.asarray(predict(points), dtype=np.float64).reshape(-1)
        pool_scores = np.concatenate([best_scores, scores])
        pool_points = np.vstack([best_points, points])
        keep = np.argsort(pool_scores, kind="stable")[:top_k]
        best_scores, best_points = pool_scores[keep], pool_points[keep]
        remaining -= size
    weights = space.project(best_points.mean(axis=0))[0]
    predicted = float(np.asarray(predict(weights[None, :])).reshape(-1)[0])
    return SearchResult(weights=weights, predicted=predicted, candidates=candidates, method="topk")


SEARCHES = {"topk": topk_average}


def search(space: MixtureSpace, predict: Predict, method: str = "topk", **options) -> SearchResult:
    if method not in SEARCHES:
        raise InputError(f"unknown search method {method!r}; choose one of {sorted(SEARCHES)}")
    return SEARCHES[method](space, predict, **options)
