"""Ridge regression on mixture features, in closed form, one penalty per loss column.

    "linear"        y = b + w . beta, a fixed small penalty (the weights sum to one, so the
                    intercept is absorbed by the penalty; predictions stay defined everywhere)
    "linear-wlog"   y = b + (w, log(w + eps)) . beta: additive diminishing returns per domain, the
                    penalty chosen per column by generalised cross-validation (exact leave-one-out
                    for ridge, in closed form)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixopt.io import atomic_write_json
from mixopt.surrogate.base import Replicas, Surrogate, check_Xy
from mixopt.surrogate.features import LinearMap, Standardizer, featurize
from mixopt.surrogate.program import Program, linear_map_terms

GCV_GRID = np.logspace(-6, 1, 15)
PAIRWISE_FEATURES_PER_RUN = 4.0     # a pairwise model enters an ensemble with at most this many features per run


def ridge_fit(G: np.ndarray, Y: np.ndarray, penalties,
              sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge on standardised features G (n, p) for every column of Y (n, E).

    penalties: one value (fixed) or a grid, searched per column by GCV. Returns intercepts (E,),
    coefficients (E, p) and the chosen penalties (E,). The penalty is per row: lam * n."""
    n, p = G.shape
    if sample_weight is not None:
        root = np.sqrt(sample_weight)[:, None]
        total = sample_weight.sum()
        g_mean = (sample_weight[:, None] * G).sum(0) / total
        y_mean = (sample_weight[:, None] * Y).sum(0) / total
        Gc, Yc = (G - g_mean) * root, (Y - y_mean) * root
    else:
        g_mean, y_mean = G.mean(axis=0), Y.mean(axis=0)
        Gc, Yc = G - g_mean, Y - y_mean
    U, s, Vt = np.linalg.svd(Gc, full_matrices=False)
    keep = s > max(s.max(initial=0.0), 1e-300) * 1e-9                    # drop null directions (sum(w) = 1)
    U, s, Vt = U[:, keep], s[keep], Vt[keep]
    Uy = U.T @ Yc                                                          # (r, E)
    grid = np.atleast_1d(np.asarray(penalties, dtype=np.float64))
    best_score = np.full(Y.shape[1], np.inf)
    best_lam = np.full(Y.shape[1], grid[0])
    residual_outside = np.sum(Yc**2, axis=0) - np.sum(Uy**2, axis=0)       # part of y outside span(G)
    for lam in grid:
        shrink = s**2 / (s**2 + lam * n)
        fitted_norm = np.sum(((1.0 - shrink)[:, None] * Uy) ** 2, axis=0) + np.maximum(residual_outside, 0.0)
        dof = shrink.sum() + 1.0
        score = fitted_norm / n / max(1.0 - dof / n, 1e-3) ** 2
        better = score < best_score
        best_score[better], best_lam[better] = score[better], lam
    d = s[:, None] / (s[:, None] ** 2 + best_lam[None, :] * n)            # (r, E)
    coef = (Vt.T @ (d * Uy)).T                                             # (E, p)
    intercept = y_mean - coef @ g_mean
    return intercept, coef, best_lam


class LinearSurrogate(Surrogate):
    """Ridge regression on the weights (features="w") or on (w, log(w + eps)) ("wlog").

    ridge: a fixed penalty, or None to choose it per column by GCV."""

    smooth = True

    def __init__(self, seed: int = 0, ridge: float | None = 1e-4, features: str = "w"):
        super().__init__(seed)
        self.ridge = ridge
        self.features = features
        self.name = {"w": "linear", "quad": "quadratic",
                     "wlogquad": "quadratic-wlog"}.get(features, f"linear-{features}")

    def get_params(self) -> dict:
        return {"seed": self.seed, "ridge": self.ridge, "features": self.features}

    def min_runs(self, K: int) -> int:
        """Pairwise models (K(K-1)/2 interactions) need a run per PAIRWISE_FEATURES_PER_RUN
        features: GCV's penalty lets a ridge carry somewhat more features than runs, but not keep
        a two-thousand-feature quadratic from interpolating a hundred runs."""
        pairs = K * (K - 1) // 2
        features = {"quad": K + pairs, "wlogquad": 2 * K + pairs}.get(self.features)
        return 2 if features is None else int(np.ceil(features / PAIRWISE_FEATURES_PER_RUN))

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        F = featurize(X, self.features)
        self.standardizer_ = Standardizer.fit(F)
        grid = GCV_GRID if self.ridge is None else [self.ridge]
        self.intercept_, self.coef_, self.penalty_ = ridge_fit(self.standardizer_(F), Y, grid)
        self.map_ = LinearMap(self.features, self.standardizer_, self.coef_)

    def fit_replicas(self, X, Y, W) -> "LinearReplicas":
        X, Y = check_Xy(X, Y)
        F = featurize(X, self.features)
        standardizer = Standardizer.fit(F)
        G = standardizer(F)
        grid = GCV_GRID if self.ridge is None else [self.ridge]
        fits = [ridge_fit(G[w > 0], Y[w > 0], grid, w[w > 0]) for w in np.atleast_2d(W)]
        return LinearReplicas(self.features, standardizer, np.stack([f[0] for f in fits]),
                              np.stack([f[1] for f in fits]))

    def _predict(self, X: np.ndarray) -> np.ndarray:
        out = self.map_(X)
        out += self.intercept_
        return out

    def objective_program(self, weights):
        const, lin, Q = linear_map_terms(self.map_, self.intercept_, np.asarray(weights, dtype=np.float64))
        return Program(self.map_.K, const, lin, Q=Q)

    def to_json(self) -> dict:
        return {
            "kind": self.name, "features": self.features, "ridge": self.ridge,
            "penalty": self.penalty_.tolist(), "standardizer": self.standardizer_.to_json(),
            "intercept": self.intercept_.tolist(), "coefficients": self.coef_.tolist(),
            "model": "L = intercept + coefficients . standardize(phi(w))",
        }

    def save(self, directory) -> dict:
        path = atomic_write_json(Path(directory) / f"{self.name}.json", self.to_json())
        return {"kind": self.name, "files": [path.name]}


class LinearReplicas(Replicas):
    def __init__(self, features, standardizer, intercepts, coefs):
        self.features, self.standardizer = features, standardizer
        self.intercepts, self.coefs = intercepts, coefs                        # (R, E), (R, E, p)
        R, E, p = coefs.shape
        self.map = LinearMap(features, standardizer, coefs.reshape(R * E, p))

    def predict(self, X, replica=None):
        X = np.asarray(X, dtype=np.float64)
        if replica is not None:
            return (self.intercepts[replica][None, :]
                    + LinearMap(self.features, self.standardizer, self.coefs[replica])(X))
        R, E, p = self.coefs.shape
        out = self.map(X).reshape(len(X), R, E).transpose(1, 0, 2)
        return self.intercepts[:, None, :] + out

    def program(self, weights):
        v = np.asarray(weights, dtype=np.float64)
        R, E, p = self.coefs.shape
        K = self.map.K
        lin = np.zeros((2 * K, R))
        lin[:K] = self.map.linear.reshape(K, R, E) @ v
        if self.map.log is not None:
            lin[K:] = self.map.log.reshape(K, R, E) @ v
        Q = np.einsum("e,rejl->rjl", v, self.map.Q.reshape(R, E, K, K)) if hasattr(self.map, "Q") else None
        const = (self.intercepts - self.map.offset.reshape(R, E)) @ v
        return Program(K, const, lin, Q=Q)

    def __len__(self) -> int:
        return len(self.intercepts)


class ConstantSurrogate(Surrogate):
    """The mean loss of the runs, whatever the mixture: the model of "no evidence". In an ensemble
    it is the member that stacking leans on when the mixture models do not generalise (few or noisy
    runs), which shrinks predictions toward the runs' mean instead of extrapolating."""

    name = "constant"
    smooth = True

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        self.mean_ = Y.mean(axis=0)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.mean_, (len(X), len(self.mean_))).copy()

    def objective_program(self, weights):
        return Program(self.n_features_, float(self.mean_ @ np.asarray(weights, dtype=np.float64)))

    def fit_replicas(self, X, Y, W) -> "ConstantReplicas":
        X, Y = check_Xy(X, Y)
        W = np.atleast_2d(np.asarray(W, dtype=np.float64))
        return ConstantReplicas((W @ Y) / np.maximum(W.sum(axis=1, keepdims=True), 1e-300), X.shape[1])

    def to_json(self) -> dict:
        return {"kind": self.name, "mean": self.mean_.tolist(), "model": "L = mean"}

    def save(self, directory) -> dict:
        path = atomic_write_json(Path(directory) / f"{self.name}.json", self.to_json())
        return {"kind": self.name, "files": [path.name]}


class ConstantReplicas(Replicas):
    def __init__(self, means: np.ndarray, K: int):
        self.means = means                                                     # (R, E)
        self.K = K

    def program(self, weights):
        return Program(self.K, self.means @ np.asarray(weights, dtype=np.float64))

    def predict(self, X, replica=None):
        n = len(np.atleast_2d(X))
        if replica is not None:
            return np.repeat(self.means[replica][None, :], n, axis=0)
        return np.repeat(self.means[:, None, :], n, axis=1)

    def __len__(self) -> int:
        return len(self.means)
