"""From a fitted surrogate to a mixture.

Two methods, both returning a feasible mixture (on the simplex, inside every per-domain bound and
repetition cap of the MixtureSpace):

  "constrained" (default)  score a pool of feasible mixtures, then optimise locally from the best
                           few of them (diverse starts) over {lower <= w <= upper, sum(w) = 1}:
                           SLSQP with finite-difference gradients for smooth surrogates, a
                           shrinking-step pattern search for piecewise-constant ones (trees).
                           Optionally stays within `max_shift` (total variation) of a prior,
                           and within a trust region: `radius` (total variation) of one of the
                           `support` mixtures (the runs; Study sets the radius from the
                           surrogate's cross-validated skill).
  "topk"                   RegMix's search: score many mixtures, average the top_k best. Ours
                           draws the candidates from the feasible space, so the average is
                           feasible too (the feasible set is convex).

`predict` maps (n, K) mixtures to (n,) objectives, or to (n, E) losses combined with `objective`
weights (E,): the search takes weights over several evaluation sets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from mixopt.errors import InputError
from mixopt.space import MixtureSpace

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SearchResult:
    weights: np.ndarray      # (K,) feasible mixture
    predicted: float         # the surrogate's objective at `weights`
    candidates: int          # how many mixtures were scored
    method: str
    details: dict = field(default_factory=dict)


def objective_function(predict: Predict, objective: np.ndarray | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """(n, K) -> (n,): the surrogate's losses combined by the objective weights."""
    weights = None if objective is None else np.asarray(objective, dtype=np.float64).reshape(-1)

    def score(X: np.ndarray) -> np.ndarray:
        out = np.asarray(predict(X), dtype=np.float64)
        if out.ndim == 1:
            return out
        if out.ndim != 2:
            raise InputError(f"the surrogate returned shape {out.shape}; expected (n,) or (n, E)")
        if weights is None:
            return out.mean(axis=1)
        if len(weights) != out.shape[1]:
            raise InputError(f"objective has {len(weights)} weights for {out.shape[1]} loss columns")
        return out @ weights

    return score


def _score_in_batches(score, sample, total: int, batch: int, keep: int):
    """Sample and score `total` mixtures in batches, keeping the `keep` best (scores, points)."""
    best_scores, best_points = np.empty(0), None
    remaining = total
    while remaining > 0:
        size = min(batch, remaining)
        points = sample(size)
        scores = score(points)
        if best_points is None:
            pool_scores, pool_points = scores, points
        else:
            pool_scores, pool_points = np.concatenate([best_scores, scores]), np.vstack([best_points, points])
        order = np.argsort(pool_scores, kind="stable")[:keep]
        best_scores, best_points = pool_scores[order], pool_points[order]
        remaining -= size
    return best_scores, best_points


def topk_average(
    space: MixtureSpace,
    predict: Predict,
    candidates: int = 100_000,
    top_k: int = 100,
    seed: int = 0,
    centre: np.ndarray | None = None,
    batch: int = 250_000,
    objective: np.ndarray | None = None,
    **_ignored,
) -> SearchResult:
    """RegMix's search: score `candidates` feasible mixtures, average the `top_k` best.

    The average of feasible mixtures is feasible (the feasible set is convex), so the projection
    only removes rounding. Candidates are scored in batches to bound memory."""
    if candidates < 1 or top_k < 1:
        raise InputError(f"candidates and top_k must be positive, got {candidates} and {top_k}")
    top_k = min(top_k, candidates)
    rng = np.random.default_rng(seed)
    score = objective_function(predict, objective)
    _, best_points = _score_in_batches(score, lambda size: space.sample(size, rng, centre=centre),
                                       candidates, batch, top_k)
    weights = space.project(best_points.mean(axis=0))[0]
    predicted = float(score(weights[None, :])[0])
    return SearchResult(weights=weights, predicted=predicted, candidates=candidates, method="topk")


def diverse_best(points: np.ndarray, scores: np.ndarray, count: int, min_distance: float) -> np.ndarray:
    """Indices of up to `count` best points, each at least `min_distance` (L1) from those chosen before."""
    chosen: list[int] = []
    for index in np.argsort(scores, kind="stable"):
        if all(np.abs(points[index] - points[c]).sum() >= min_distance for c in chosen):
            chosen.append(int(index))
            if len(chosen) == count:
                break
    return np.asarray(chosen, dtype=int)


def _finite_difference_gradient(score, w: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Central differences in one batched call; one-sided where w_j is within a step of 0."""
    K = len(w)
    plus = w[None, :] + step * np.eye(K)
    back = np.minimum(step, w)                       # never step below zero (log features)
    minus = w[None, :] - np.diag(back)
    values = score(np.vstack([plus, minus]))
    width = step + back
    return (values[:K] - values[K:]) / width


def _tv_ball_constraint(centre: np.ndarray, radius: float, smoothing: float = 1e-6) -> dict:
    """SLSQP inequality: total variation 0.5 * sum |w - centre| <= radius (|.| smoothed)."""
    def room(w):
        return 2.0 * radius - np.sum(np.sqrt((w - centre) ** 2 + smoothing**2) - smoothing)

    def jac(w):
        return -(w - centre) / np.sqrt((w - centre) ** 2 + smoothing**2)

    return {"type": "ineq", "fun": room, "jac": jac}


def total_variation(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(n, m) total-variation distances 0.5 * sum |p - c| between rows of points and centres."""
    points, centres = np.atleast_2d(points), np.atleast_2d(centres)
    out = np.empty((len(points), len(centres)))
    for start in range(0, len(centres), 256):
        block = centres[start:start + 256]
        out[:, start:start + len(block)] = 0.5 * np.abs(points[:, None, :] - block[None, :, :]).sum(axis=2)
    return out


def _slsqp(space, score, start, constraints_extra, max_iter):
    cache: dict[bytes, float] = {}

    def fun(w):
        key = w.tobytes()
        if key not in cache:
            cache[key] = float(score(np.clip(w, 0.0, None)[None, :])[0])
        return cache[key]

    def jac(w):
        return _finite_difference_gradient(score, np.clip(w, 0.0, None))

    constraints = [{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}]
    constraints.extend(constraints_extra)
    result = minimize(fun, start, jac=jac, method="SLSQP", bounds=list(zip(space.lower, space.upper)),
                      constraints=constraints, options={"maxiter": max_iter, "ftol": 1e-9})
    return result.x, result.nit


def _pattern_search(space, score, start, rng, max_iter, proposals=64, radius=0.2, min_radius=1e-4,
                    allowed=None):
    """Derivative-free local search for piecewise-constant surrogates: propose feasible mixtures
    around the incumbent (random directions that keep the sum, projected into the bounds), move to
    the best if it improves, otherwise halve the radius."""
    w, value = start.copy(), float(score(start[None, :])[0])
    K, evaluations = len(w), 0
    for _ in range(max_iter):
        directions = rng.standard_normal((proposals, K))
        directions -= directions.mean(axis=1, keepdims=True)
        directions /= np.abs(directions).sum(axis=1, keepdims=True)
        trial = space.project(w[None, :] + radius * rng.uniform(0.1, 1.0, (proposals, 1)) * directions)
        if allowed is not None:
            trial = trial[allowed(trial)]
            if len(trial) == 0:
                radius /= 2
                continue
        values = score(trial)
        evaluations += len(trial)
        best = int(np.argmin(values))
        if values[best] < value - 1e-15:
            w, value = trial[best], float(values[best])
        else:
            radius /= 2
            if radius < min_radius:
                break
    return w, evaluations


def constrained_search(
    space: MixtureSpace,
    predict: Predict,
    seed: int = 0,
    candidates: int = 20_000,
    starts: int = 8,
    objective: np.ndarray | None = None,
    smooth: bool = True,
    prior: np.ndarray | None = None,
    max_shift: float | None = None,
    extra_starts: np.ndarray | None = None,
    support: np.ndarray | None = None,
    radius: float | None = None,
    max_iter: int = 100,
    batch: int = 250_000,
    **_ignored,
) -> SearchResult:
    """Minimise the surrogate's objective over the feasible space (see the module docstring).

    candidates: feasible mixtures scored to choose the starting points (plus `extra_starts`, e.g.
    the best proxy runs, and the natural and uniform mixtures). starts: local optimisations, from
    the best candidates at least 0.1 apart (L1). prior / max_shift: keep the result within
    total-variation distance max_shift (0.5 * sum |w - prior|) of prior (default: natural).
    support / radius: a trust region, the result lies within total variation `radius` of one of the
    `support` mixtures (the runs the surrogate was fitted on), so that it never lands where the
    surrogate has no data to stand on; every local optimisation stays in the ball of the run
    nearest its start."""
    if candidates < 1 or starts < 1:
        raise InputError(f"candidates and starts must be positive, got {candidates} and {starts}")
    rng = np.random.default_rng(seed)
    score = objective_function(predict, objective)
    prior = space.natural if prior is None else space.validate(prior, "prior")[0]
    if max_shift is not None and not 0 < max_shift <= 1:
        raise InputError(f"max_shift must lie in (0, 1], got {max_shift}")
    anchors = None
    if support is not None and radius is not None and radius < 1.0:
        if radius < 0:
            raise InputError(f"radius must be non-negative, got {radius}")
        anchors = space.project(space.validate(support, "support"))
        if max_shift is not None:      # anchors the prior's ball cannot reach are of no use
            anchors = anchors[0.5 * np.abs(anchors - prior).sum(axis=1) <= max_shift + radius]
            if len(anchors) == 0:
                anchors = prior[None, :]
    tolerance = 1e-9

    def allowed(points):
        ok = np.ones(len(points), dtype=bool)
        if max_shift is not None:
            ok &= 0.5 * np.abs(points - prior[None, :]).sum(axis=1) <= max_shift + tolerance
        if anchors is not None:
            ok &= total_variation(points, anchors).min(axis=1) <= radius + 1e-4
        return ok

    restricted = max_shift is not None or anchors is not None

    def pull(points, centres, limit):
        distance = 0.5 * np.abs(points - centres).sum(axis=1)
        factor = np.minimum(1.0, limit / np.maximum(distance, 1e-12))[:, None]
        return centres + factor * (points - centres)

    def sample(size):
        if anchors is not None:
            # draws around the supporting runs, pulled into their balls (a convex combination of
            # two feasible mixtures is feasible)
            centres = anchors[rng.integers(0, len(anchors), size)]
            points = space.sample(size, rng)
            points = pull(points, centres, radius * rng.uniform(0.0, 1.0, (size,)) ** (1.0 / max(space.K - 1, 1)))
            if max_shift is not None:
                points = pull(points, np.broadcast_to(prior, points.shape), max_shift)
            return points
        if max_shift is not None:
            points = space.sample(size, rng, centre=prior, prior_share=1.0)
            return pull(points, np.broadcast_to(prior, points.shape), max_shift)
        return space.sample(size, rng)

    pool_scores, pool = _score_in_batches(score, sample, candidates, batch, max(64, 8 * starts))
    fixed = [space.natural[None, :], space.uniform[None, :], prior[None, :]]
    if extra_starts is not None and len(extra_starts):
        fixed.append(space.project(space.validate(extra_starts, "extra_starts")))
    if anchors is not None:
        fixed.append(anchors)
    fixed = np.vstack(fixed)
    if restricted:
        fixed = fixed[allowed(fixed)]
    if len(fixed):
        pool = np.vstack([pool, fixed])
        pool_scores = np.concatenate([pool_scores, score(fixed)])
    chosen = pool[diverse_best(pool, pool_scores, starts, min_distance=0.1)]
    best_w, best_value, iterations, evaluated = None, np.inf, 0, candidates + len(fixed)
    for start in chosen:
        constraints = []
        if max_shift is not None:
            constraints.append(_tv_ball_constraint(prior, max_shift))
        if anchors is not None:
            nearest = anchors[np.argmin(total_variation(start[None, :], anchors)[0])]
            constraints.append(_tv_ball_constraint(nearest, radius))
        if smooth:
            w, nit = _slsqp(space, score, start, constraints, max_iter)
            iterations += nit
        else:
            w, evaluations = _pattern_search(space, score, start, rng, max_iter,
                                             allowed=allowed if restricted else None)
            evaluated += evaluations
        w = space.project(w)[0]
        if anchors is not None and not allowed(w[None, :])[0]:     # a constraint met only loosely
            w = pull(w[None, :], nearest[None, :], radius)[0]
        if restricted and not allowed(w[None, :])[0]:
            w = start
        value = float(score(w[None, :])[0])
        if value < best_value:
            best_w, best_value = w, value
    return SearchResult(weights=best_w, predicted=best_value, candidates=evaluated, method="constrained",
                        details={"starts": len(chosen), "iterations": iterations, "smooth": smooth,
                                 "max_shift": max_shift, "radius": None if anchors is None else float(radius)})


SEARCHES = {"constrained": constrained_search, "topk": topk_average}


def search(space: MixtureSpace, predict: Predict, method: str = "constrained", **options) -> SearchResult:
    if method not in SEARCHES:
        raise InputError(f"unknown search method {method!r}; choose one of {sorted(SEARCHES)}")
    return SEARCHES[method](space, predict, **options)
