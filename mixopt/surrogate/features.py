"""Feature maps of mixtures that the smooth surrogates regress on.

    "w"      the weights themselves (the Data Mixing Laws exponent is linear in them)
    "wlog"   the weights and log(w + eps): diminishing returns of a domain's own data, steep near
             zero weight (a power law in w + eps when the coefficient sits in an exponent)

Columns are standardised by `Standardizer`, fitted on the mixtures only (never on losses), so a
penalty on coefficients treats every feature alike.
"""

from __future__ import annotations

import numpy as np

from mixopt.errors import InputError

LOG_EPS = 1e-3
FEATURES = ("w", "wlog", "quad", "wlogquad")


def pair_indices(K: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(K, k=1)


def featurize(X: np.ndarray, kind: str, eps: float = LOG_EPS) -> np.ndarray:
    if kind == "w":
        return X
    if kind == "wlog":
        return np.hstack([X, np.log(np.clip(X, 0.0, None) + eps)])
    if kind == "quad":      # Scheffe's quadratic mixture model: w and every product w_j w_l
        first, second = pair_indices(X.shape[1])
        return np.hstack([X, X[:, first] * X[:, second]])
    if kind == "wlogquad":  # w, log(w + eps) and every product w_j w_l
        first, second = pair_indices(X.shape[1])
        return np.hstack([X, np.log(np.clip(X, 0.0, None) + eps), X[:, first] * X[:, second]])
    raise InputError(f"unknown features {kind!r}; choose one of {FEATURES}")


BATCH_ROWS = 65_536


class LinearMap:
    """X -> standardizer(featurize(X, kind)) @ coef.T for coef (E, p), with the standardisation
    folded into the coefficients once: no standardised feature matrix is ever built, rows go in
    cache-sized batches (a million mixtures score in a fraction of a second), and a single
    mixture costs a handful of small products (the search calls it thousands of times)."""

    def __init__(self, kind: str, standardizer: "Standardizer", coef: np.ndarray):
        if kind not in FEATURES:
            raise InputError(f"unknown features {kind!r}; choose one of {FEATURES}")
        coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
        scaled = coef / standardizer.scale[None, :]                 # (E, p)
        self.kind = kind
        self.offset = scaled @ standardizer.mean                     # (E,)
        p = len(standardizer.mean)
        K = {"w": p, "wlog": p // 2,
             "quad": int(round((np.sqrt(8 * p + 1) - 1) / 2)),            # p = K + K(K-1)/2
             "wlogquad": int(round((np.sqrt(8 * p + 9) - 3) / 2))}[kind]  # p = 2K + K(K-1)/2
        self.K = K
        self.linear = np.ascontiguousarray(scaled[:, :K].T)          # (K, E)
        self.log = np.ascontiguousarray(scaled[:, K:2 * K].T) if kind in ("wlog", "wlogquad") else None
        if kind in ("quad", "wlogquad"):
            first, second = pair_indices(K)
            self.Q = np.zeros((len(coef), K, K))
            self.Q[:, first, second] = scaled[:, K + (K if kind == "wlogquad" else 0):]

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if len(X) <= BATCH_ROWS:
            return self._rows(X)
        out = np.empty((len(X), len(self.offset)))
        for start in range(0, len(X), BATCH_ROWS):
            out[start:start + BATCH_ROWS] = self._rows(X[start:start + BATCH_ROWS])
        return out

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        value = rows @ self.linear
        if self.log is not None:
            value += np.log(np.maximum(rows, 0.0) + LOG_EPS) @ self.log
        if self.kind in ("quad", "wlogquad"):   # sum_{j<l} q_jl w_j w_l as w . (Q w): no product features
            value += np.einsum("nj,ejl,nl->ne", rows, self.Q, rows, optimize=True)
        value -= self.offset
        return value


def standardized_product(X: np.ndarray, kind: str, standardizer: "Standardizer", coef: np.ndarray) -> np.ndarray:
    """standardizer(featurize(X, kind)) @ coef.T (see LinearMap, which keeps the folding)."""
    return LinearMap(kind, standardizer, coef)(X)


class Standardizer:
    """Centre and scale feature columns (constant columns keep scale 1)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)

    @classmethod
    def fit(cls, F: np.ndarray) -> "Standardizer":
        scale = F.std(axis=0)
        return cls(F.mean(axis=0), np.where(scale > 1e-12, scale, 1.0))

    def __call__(self, F: np.ndarray) -> np.ndarray:
        return (F - self.mean) / self.scale

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_json(cls, payload: dict) -> "Standardizer":
        return cls(payload["mean"], payload["scale"])
