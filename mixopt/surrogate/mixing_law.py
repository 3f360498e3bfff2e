"""The log-linear mixing law of Data Mixing Laws (Ye et al., 2024), fitted robustly.

    L(w) = c + exp(b + t . phi(w))

phi(w) = w is the paper's law (one per validation domain: several loss columns get one law each);
phi(w) = (w, log(w + eps)) adds diminishing returns near zero weight. The law is monotone in the
exponent, so it extrapolates in rank to mixtures the proxies never tried far more gracefully than
trees; on RegMix's public runs it carries rank from 1M-parameter proxies to 1B models.

Fitting is a damped Gauss-Newton (Levenberg-Marquardt) on a soft-L1 loss (iteratively reweighted:
a few bad proxy runs cannot drag the law), with a ridge penalty on t, vectorised over many problems
at once: every loss column, every cross-validation fold, every bootstrap replica and every starting
point are solved together as one batch of small least-squares problems. Row weights select each
problem's rows (0 = held out), so folds and bootstraps are just weight matrices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixopt.io import atomic_write_json
from mixopt.surrogate.base import Replicas, Surrogate, check_Xy
from mixopt.surrogate.features import LinearMap, Standardizer, featurize
from mixopt.surrogate.program import Program, law_columns

EXPONENT_CLIP = 30.0
INIT_OFFSETS = (0.05, 0.4, 2.0)   # c starts this many loss spreads below the lowest loss
ROBUST_SCALE = 0.1                # soft-L1 switches from squared to absolute at 0.1 standardised units


def _soft_l1(z: np.ndarray) -> np.ndarray:
    return 2.0 * (np.sqrt(1.0 + z * z) - 1.0)


def fit_laws(G: np.ndarray, Y: np.ndarray, A: np.ndarray, l2: np.ndarray, iterations: int = 60,
             robust_scale: float = ROBUST_SCALE, tolerance: float = 1e-6,
             start: np.ndarray | None = None) -> np.ndarray:
    """Fit B laws at once. G (n, p) standardised features; Y (n, B) standardised targets; A (n, B)
    row weights; l2 (B,) ridge penalties on t (scaled by each problem's total row weight).
    Returns parameters (B, p + 2) as [c, b, t...]. start (B, p + 2): warm start (bootstrap
    replicas start from the fit on all runs; cross-validation folds never do).

    Each problem starts from the best (by the robust objective) of len(INIT_OFFSETS) log-linear
    fits. The design d = (1, G) is shared by all problems, so the Gauss-Newton matrices of all of
    them come from three matrix products with the stacked outer products d d^T (no per-problem
    Jacobians): H = [[sum w, (w e) D], [., (w e^2) (d d^T)]]."""
    n, p = G.shape
    B = Y.shape[1]
    P = p + 2
    A = np.asarray(A, dtype=np.float64)
    l2 = np.broadcast_to(np.asarray(l2, dtype=np.float64), (B,))
    penalty = l2 * A.sum(axis=0)                                             # (B,)
    D = np.hstack([np.ones((n, 1)), G])                                      # (n, p + 1)
    outer = (D[:, :, None] * D[:, None, :]).reshape(n, (p + 1) ** 2)          # (n, (p+1)^2)

    def evaluate(q, cols):
        exponent = np.clip(q[:, 1][None, :] + G @ q[:, 2:].T, -EXPONENT_CLIP, EXPONENT_CLIP)
        e = np.exp(exponent)
        r = q[:, 0][None, :] + e - Y[:, cols]
        z = r / robust_scale
        value = (A[:, cols] * _soft_l1(z)).sum(axis=0) * robust_scale**2 + penalty[cols] * (q[:, 2:] ** 2).sum(axis=1)
        return value, r, e

    # the best of the starting points, per problem
    candidates = _initial(G, Y, A, l2) if start is None else np.asarray(start, dtype=np.float64)[None]
    all_cols = np.arange(B)
    values = np.stack([evaluate(c, all_cols)[0] for c in candidates])
    q = candidates[np.argmin(values, axis=0), all_cols].copy()
    value, r, e = evaluate(q, all_cols)
    damping = np.full(B, 1e-3)
    active = np.ones(B, dtype=bool)
    ridge_mask = np.zeros(P)
    ridge_mask[2:] = 1.0
    for _ in range(iterations):
        idx = np.flatnonzero(active)
        if len(idx) == 0:
            break
        qa, ra, ea = q[idx], r[:, idx], e[:, idx]
        omega = A[:, idx] / np.sqrt(1.0 + (ra / robust_scale) ** 2)        # IRLS weights (n, s)
        we, wr = omega * ea, omega * ra
        H = np.empty((len(idx), P, P))
        H[:, 0, 0] = omega.sum(axis=0)
        H[:, 0, 1:] = we.T @ D
        H[:, 1:, 0] = H[:, 0, 1:]
        H[:, 1:, 1:] = ((we * ea).T @ outer).reshape(len(idx), p + 1, p + 1)
        g = np.empty((len(idx), P))
        g[:, 0] = wr.sum(axis=0)
        g[:, 1:] = (we * ra).T @ D
        H[:, 2:, 2:] += penalty[idx, None, None] * np.eye(p)[None]
        g += penalty[idx, None] * ridge_mask[None, :] * qa
        diag = np.einsum("spp->sp", H)
        system = H + (damping[idx, None] * (diag + 1e-9))[:, :, None] * np.eye(P)[None]
        step = np.linalg.solve(system, -g[:, :, None])[:, :, 0]
        trial = qa + step
        trial_value, trial_r, trial_e = evaluate(trial, idx)
        better = trial_value < value[idx]
        improvement = (value[idx] - trial_value) / np.maximum(np.abs(value[idx]), 1e-300)
        accepted = idx[better]
        q[accepted] = trial[better]
        r[:, accepted], e[:, accepted] = trial_r[:, better], trial_e[:, better]
        value[accepted] = trial_value[better]
        damping[accepted] = np.maximum(damping[accepted] / 3.0, 1e-9)
        damping[idx[~better]] *= 4.0
        converged = (better & (improvement < tolerance)) | (damping[idx] > 1e8)
        active[idx[converged]] = False
    return q


def _initial(G: np.ndarray, Y: np.ndarray, A: np.ndarray, l2: np.ndarray) -> np.ndarray:
    """Starting points (starts, B, p + 2): for each offset d, c = min(y) - d * spread(y) and (b, t)
    from a weighted ridge regression of log(y - c) on the features."""
    n, p = G.shape
    B = Y.shape[1]
    used = A > 0
    low = np.where(used, Y, np.inf).min(axis=0)
    high = np.where(used, Y, -np.inf).max(axis=0)
    spread = np.maximum(high - low, 1e-6)
    design = np.hstack([np.ones((n, 1)), G])
    gram = np.matmul(design.T[None, :, :] * A.T[:, None, :], design[None, :, :])
    ridge = np.eye(p + 1)
    ridge[0, 0] = 0.0
    gram = gram + (np.maximum(l2, 1e-3) * A.sum(axis=0))[:, None, None] * ridge[None]
    out = np.empty((len(INIT_OFFSETS), B, p + 2))
    for s, offset in enumerate(INIT_OFFSETS):
        c0 = low - offset * spread
        target = np.log(np.maximum(Y - c0[None, :], 1e-12))
        rhs = (A * target).T @ design
        coef = np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]
        out[s, :, 0] = c0
        out[s, :, 1:] = coef
    return out


def law_predict(G: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(n, B) standardised predictions of B laws with parameters q (B, p + 2)."""
    return q[:, 0][None, :] + np.exp(np.clip(q[:, 1][None, :] + G @ q[:, 2:].T, -EXPONENT_CLIP, EXPONENT_CLIP))


def standardize_targets(Y: np.ndarray, A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and scale of each target column over the rows its problem may use."""
    total = np.maximum(A.sum(axis=0), 1e-12)
    mean = (A * Y).sum(axis=0) / total
    scale = np.sqrt((A * (Y - mean) ** 2).sum(axis=0) / total)
    return mean, np.where(scale > 1e-12, scale, 1.0)


class MixingLawSurrogate(Surrogate):
    """L = c + exp(b + t . phi(w)) per loss column (see the module docstring).

    features: "w" (the published law) or "wlog" (adds log(w + 1e-3)).
    l2: ridge penalty on t (standardised units), per unit of row weight."""

    smooth = True

    def __init__(self, seed: int = 0, features: str = "w", l2: float = 1e-4, iterations: int = 60):
        super().__init__(seed)
        self.features = features
        self.l2 = float(l2)
        self.iterations = int(iterations)
        self.name = "mixing-law" if features == "w" else f"mixing-law-{features}"

    def get_params(self) -> dict:
        return {"seed": self.seed, "features": self.features, "l2": self.l2, "iterations": self.iterations}

    def min_runs(self, K: int) -> int:
        """One run per parameter (c, b and a slope per feature): the law's small fixed penalty
        does not tame an exponent with more slopes than runs."""
        return (K if self.features == "w" else 2 * K) + 2

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        replicas = self.fit_replicas(X, Y, np.ones((1, len(X))))
        self.standardizer_ = replicas.standardizer
        self.params_, self.y_mean_, self.y_scale_ = replicas.params[0], replicas.y_mean[0], replicas.y_scale[0]
        self.map_ = LinearMap(self.features, self.standardizer_, self.params_[:, 2:])

    def _predict(self, X: np.ndarray) -> np.ndarray:
        exponent = self.map_(X)
        exponent += self.params_[:, 1]
        np.clip(exponent, -EXPONENT_CLIP, EXPONENT_CLIP, out=exponent)
        return self.y_mean_ + self.y_scale_ * (self.params_[:, 0] + np.exp(exponent))

    def objective_program(self, weights):
        v = np.asarray(weights, dtype=np.float64)
        A, bias = law_columns(self.map_, self.params_[:, 1])
        const = float(v @ (self.y_mean_ + self.y_scale_ * self.params_[:, 0]))
        return Program(self.map_.K, const, A=A, bias=bias, out=(v * self.y_scale_)[:, None])

    def bootstrap(self, X, Y, W) -> "LawReplicas":
        """Replicas on resampled rows, warm-started from this (fitted) law."""
        return self.fit_replicas(X, Y, W, start=self.params_)

    def fit_replicas(self, X, Y, W, start: np.ndarray | None = None) -> "LawReplicas":
        """All R x E laws in one batch (see the module docstring)."""
        X, Y = check_Xy(X, Y)
        W = np.atleast_2d(np.asarray(W, dtype=np.float64))
        R, E = len(W), Y.shape[1]
        F = featurize(X, self.features)
        standardizer = Standardizer.fit(F)
        G = standardizer(F)
        A = np.repeat(W.T, E, axis=1)                     # (n, R*E): problem r*E + e
        Yb = np.tile(Y, (1, R))
        y_mean, y_scale = standardize_targets(Yb, A)
        if start is not None:       # a law fitted in other units: re-express it in each replica's
            full_mean, full_scale = self.y_mean_, self.y_scale_
            q = np.tile(np.asarray(start), (R, 1))
            ratio = np.tile(full_scale, R) / y_scale
            q[:, 0] = (np.tile(full_mean, R) + np.tile(full_scale, R) * q[:, 0] - y_mean) / y_scale
            q[:, 1] += np.log(ratio)
            start = q
        params = fit_laws(G, (Yb - y_mean) / y_scale, A, np.full(R * E, self.l2), self.iterations, start=start)
        return LawReplicas(self.features, standardizer, params.reshape(R, E, -1),
                           y_mean.reshape(R, E), y_scale.reshape(R, E))

    def to_json(self) -> dict:
        return {
            "kind": self.name, "features": self.features, "l2": self.l2,
            "standardizer": self.standardizer_.to_json(),
            "y_mean": self.y_mean_.tolist(), "y_scale": self.y_scale_.tolist(),
            "params": self.params_.tolist(),
            "law": "L = y_mean + y_scale * (c + exp(b + t . standardize(phi(w)))), params rows [c, b, t...]",
        }

    def save(self, directory) -> dict:
        path = atomic_write_json(Path(directory) / "mixing-law.json", self.to_json())
        return {"kind": self.name, "files": [path.name]}


class LawReplicas(Replicas):
    def __init__(self, features, standardizer, params, y_mean, y_scale):
        self.features, self.standardizer = features, standardizer
        self.params, self.y_mean, self.y_scale = params, y_mean, y_scale      # (R, E, P), (R, E), (R, E)
        R, E, P = params.shape
        self.map = LinearMap(features, standardizer, params.reshape(R * E, P)[:, 2:])

    def predict(self, X, replica=None):
        X = np.asarray(X, dtype=np.float64)
        R, E, P = self.params.shape
        if replica is not None:
            params = self.params[replica]
            exponent = params[:, 1] + LinearMap(self.features, self.standardizer, params[:, 2:])(X)
            return (self.y_mean[replica]
                    + self.y_scale[replica] * (params[:, 0] + np.exp(np.clip(exponent, -EXPONENT_CLIP, EXPONENT_CLIP))))
        flat = self.params.reshape(R * E, P)
        exponent = self.map(X)
        exponent += flat[:, 1]
        np.clip(exponent, -EXPONENT_CLIP, EXPONENT_CLIP, out=exponent)
        law = (flat[:, 0] + np.exp(exponent)).reshape(len(X), R, E).transpose(1, 0, 2)
        return self.y_mean[:, None, :] + self.y_scale[:, None, :] * law

    def program(self, weights):
        v = np.asarray(weights, dtype=np.float64)
        R, E, P = self.params.shape
        flat = self.params.reshape(R * E, P)
        A, bias = law_columns(self.map, flat[:, 1])
        out = np.zeros((R * E, R))
        out[np.arange(R * E), np.repeat(np.arange(R), E)] = (self.y_scale * v[None, :]).reshape(-1)
        const = (self.y_mean + self.y_scale * self.params[:, :, 0]) @ v
        return Program(self.map.K, const, A=A, bias=bias, out=out)

    def __len__(self) -> int:
        return len(self.params)
