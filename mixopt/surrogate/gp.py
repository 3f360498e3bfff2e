"""A Gaussian process on the simplex: the loss as a smooth function of the mixture's geometry.

    L(w) = m + f(w),   f ~ GP(0, s^2 k),   k(w, v) = exp(-H^2(w, v) / l^2)

H is the Hellinger distance, H^2(w, v) = 1/2 |sqrt(w) - sqrt(v)|^2 = 1 - sum_j sqrt(w_j v_j) on
the simplex: the geometry of mixtures (Fisher-Rao up to a constant). It treats a weight that is
exactly zero as one end of a scale, not as a missing value (a domain at 0.01 is as far from 0 as
0.09 is from 0.04), and distances stay bounded (H^2 <= 1), so no mixture lies infinitely far from
the runs. The mean m is the runs' mean: far from every run the process returns to it, with its
prior spread s, so predictions stay in the range the runs span and the posterior standard
deviation grows exactly where the runs are sparse (`posterior_variance`; the ensemble's coverage
term reads the same kernel through `unexplained_from`).

Hyperparameters (the length scale l, shared by all loss columns, and per column the noise ratio
and s^2) maximise the marginal likelihood over a grid; on more than HYPER_ROWS runs they are
chosen on a seeded subset of HYPER_ROWS of them (a few numbers, well determined by a few hundred
runs), and the fit itself uses every run. Row weights (cross-validation masks, bootstrap counts)
act as noise precision: a run drawn c times counts as c observations, a run with weight 0 is
left out. Every fit, fold and replica chooses its own hyperparameters, except bootstrap replicas,
which keep the fit's (they measure the spread of the fit, not of the selection).

Predictions are sums over runs of exp(linear function of (w, sqrt(w))), so they compile into a
surrogate.program.Program like the other smooth members.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixopt.io import atomic_write_json
from mixopt.surrogate.base import Replicas, Surrogate, check_Xy
from mixopt.surrogate.program import Program

LENGTH_FACTORS = 2.0 ** np.arange(-3, 7)          # l^2 over the median squared Hellinger distance of the runs
NOISE_RATIOS = np.logspace(-5, 1, 25)             # noise variance over s^2
HYPER_ROWS = 384
COVERAGE_RANK = 160                               # eigen-directions kept for the posterior variance


def hellinger2(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(n, m) squared Hellinger distances 1/2 |sqrt(a) - sqrt(b)|^2 between rows (rows need not sum to one)."""
    sa, sb = np.sqrt(np.maximum(A, 0.0)), np.sqrt(np.maximum(B, 0.0))
    return np.maximum(0.5 * (sa * sa).sum(1)[:, None] + 0.5 * (sb * sb).sum(1)[None, :] - sa @ sb.T, 0.0)


def choose_hyperparameters(X: np.ndarray, Y: np.ndarray, seed: int) -> tuple[float, np.ndarray]:
    """(l^2, noise ratios (E,)) maximising the marginal likelihood of the standardised columns of
    Y, summed over columns for the shared length scale; on a seeded subset of HYPER_ROWS rows."""
    n = len(X)
    if n > HYPER_ROWS:
        rows = np.sort(np.random.default_rng([seed, 4099]).choice(n, HYPER_ROWS, replace=False))
        X, Y = X[rows], Y[rows]
        n = HYPER_ROWS
    D = hellinger2(X, X)
    off = D[np.triu_indices(n, k=1)]
    median = float(np.median(off[off > 0])) if np.any(off > 0) else 1.0
    Yc = (Y - Y.mean(0)) / np.maximum(Y.std(0), 1e-12)
    best = (np.inf, median, np.full(Y.shape[1], NOISE_RATIOS[-1]))
    for factor in LENGTH_FACTORS:
        length2 = factor * median
        lam, U = np.linalg.eigh(np.exp(-D / length2))
        lam = np.maximum(lam, 0.0)
        Uy2 = (U.T @ Yc) ** 2                                               # (n, E)
        d = lam[:, None] + NOISE_RATIOS[None, :]                            # (n, G)
        s2 = np.einsum("ne,ng->ge", Uy2, 1.0 / d) / n                      # (G, E)
        nll = 0.5 * n * np.log(np.maximum(s2, 1e-300)) + 0.5 * np.log(d).sum(0)[:, None]
        pick = np.argmin(nll, axis=0)
        total = float(nll[pick, np.arange(Y.shape[1])].sum())
        if total < best[0]:
            best = (total, length2, NOISE_RATIOS[pick])
    return best[1], best[2]


class GPFit:
    """One fitted process over `anchors` (the runs it was fitted on): prediction = mean +
    kernel(X, anchors) @ alpha for each column."""

    def __init__(self, anchors, length2, mean, alpha, signal2=None, noise=None, basis=None, eigen=None):
        self.anchors = anchors            # (n, K)
        self.length2 = float(length2)
        self.mean = mean                  # (E,)
        self.alpha = alpha                # (n, E)
        self.signal2 = signal2            # (E,) s^2, for the posterior variance
        self.noise = noise                # (E,) noise ratios
        self.basis = basis                # (n, r) leading eigenvectors of the kernel matrix
        self.eigen = eigen                # (r,) their eigenvalues

    def kernel(self, X: np.ndarray) -> np.ndarray:
        return np.exp(-hellinger2(X, self.anchors) / self.length2)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.mean[None, :] + self.kernel(X) @ self.alpha

    def terms(self) -> tuple[np.ndarray, np.ndarray]:
        """(A (3K, n), bias (n,)): the kernel column of each anchor as exp(phi(w) . A + bias), for
        mixtures on the simplex: -H^2/l^2 = (-sum(w)/2 - sum(v)/2 + sqrt(w) . sqrt(v)) / l^2."""
        K = self.anchors.shape[1]
        A = np.zeros((3 * K, len(self.anchors)))
        A[:K] = -0.5 / self.length2
        A[2 * K:] = np.sqrt(np.maximum(self.anchors, 0.0)).T / self.length2
        bias = -0.5 * np.maximum(self.anchors, 0.0).sum(1) / self.length2
        return A, bias


def fit_process(X: np.ndarray, Y: np.ndarray, weights: np.ndarray | None, length2: float, noise: np.ndarray,
                coverage: bool = False) -> GPFit:
    """The posterior mean (and, with coverage, the pieces of the posterior variance) of a process
    with fixed hyperparameters, fitted on the rows with positive weight (weight c: noise variance
    / c). Every row stays an anchor (unused rows with alpha 0), so replicas share one kernel."""
    n, E = Y.shape
    weights = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    used = np.flatnonzero(weights > 0)
    c = weights[used]
    Yu = Y[used]
    mean = (c[:, None] * Yu).sum(0) / c.sum()
    Kx = np.exp(-hellinger2(X[used], X[used]) / length2)
    alpha = np.zeros((n, E))
    for e in range(E):
        factor = np.linalg.cholesky(Kx + np.diag(noise[e] / c) + 1e-10 * np.eye(len(used)))
        alpha[used, e] = np.linalg.solve(factor.T, np.linalg.solve(factor, Yu[:, e] - mean[e]))
    fit = GPFit(X, length2, mean, alpha)
    if coverage:
        lam, U = np.linalg.eigh(Kx)
        lam = np.maximum(lam, 0.0)
        Uy2 = (U.T @ (Yu - mean)) ** 2                                      # (m, E)
        fit.signal2 = np.array([np.mean(Uy2[:, e] / (lam + noise[e])) for e in range(E)])   # s^2 by maximum likelihood
        order = np.argsort(lam)[::-1][:COVERAGE_RANK]
        basis = np.zeros((n, len(order)))
        basis[used] = U[:, order]
        fit.basis, fit.eigen, fit.noise = basis, lam[order], np.asarray(noise, dtype=np.float64)
    return fit


class GaussianProcessSurrogate(Surrogate):
    """Gaussian process regression on the Hellinger geometry (see the module docstring)."""

    name = "gp"
    smooth = True

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        self.length2_, self.noise_ = choose_hyperparameters(X, Y, self.seed)
        self.fit_ = fit_process(X, Y, None, self.length2_, self.noise_, coverage=True)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self.fit_.predict(X)

    def posterior_variance(self, X: np.ndarray) -> np.ndarray:
        """(n, E) posterior variance of each column's latent function at X: s^2 (1 - k' (K +
        noise I)^-1 k), from the leading eigen-directions of the kernel matrix (the directions
        left out can only make it larger: conservative)."""
        t = self.fit_.kernel(np.asarray(X, dtype=np.float64)) @ self.fit_.basis          # (n, r)
        return self._variance_from(t)

    def _variance_from(self, t: np.ndarray) -> np.ndarray:
        return self.fit_.signal2[None, :] * self.unexplained_from(t)

    def unexplained_from(self, t: np.ndarray) -> np.ndarray:
        """(n, E) the share of the prior variance left after conditioning on the runs, 1 - k' (K +
        noise I)^-1 k: 0 at a run observed without noise, 1 far from every run; from the outputs
        t of `coverage_program`."""
        fit = self.fit_
        explained = np.stack([(t * t) @ (1.0 / (fit.eigen + fit.noise[e])) for e in range(len(fit.noise))], axis=1)
        return np.clip(1.0 - explained, 0.0, 1.0)

    def _predict_std(self, X: np.ndarray) -> np.ndarray:
        return np.sqrt(self.posterior_variance(X))

    def coverage_program(self) -> Program:
        """A Program with r outputs t = kernel(w, runs) @ basis, from which `unexplained_from`
        computes the posterior variance share without another kernel evaluation."""
        A, bias = self.fit_.terms()
        return Program(self.n_features_, np.zeros(self.fit_.basis.shape[1]), A=A, bias=bias, out=self.fit_.basis)

    def objective_program(self, weights):
        v = np.asarray(weights, dtype=np.float64)
        A, bias = self.fit_.terms()
        return Program(self.n_features_, float(self.fit_.mean @ v), A=A, bias=bias, out=self.fit_.alpha @ v)

    def fit_replicas(self, X, Y, W) -> "GPReplicas":
        """Folds: each chooses its own hyperparameters on its own rows."""
        X, Y = check_Xy(X, Y)
        fits = []
        for r, weights in enumerate(np.atleast_2d(np.asarray(W, dtype=np.float64))):
            used = weights > 0
            length2, noise = choose_hyperparameters(X[used], Y[used], self.seed + 1 + r)
            fits.append(fit_process(X, Y, weights, length2, noise))
        return GPReplicas(fits, X.shape[1])

    def bootstrap(self, X, Y, W) -> "GPReplicas":
        """Bootstrap replicas keep this fit's hyperparameters."""
        X, Y = check_Xy(X, Y)
        return GPReplicas([fit_process(X, Y, w, self.length2_, self.noise_)
                           for w in np.atleast_2d(np.asarray(W, dtype=np.float64))], X.shape[1])

    def get_params(self) -> dict:
        return {"seed": self.seed}

    def to_json(self) -> dict:
        fit = self.fit_
        return {
            "kind": self.name, "length2": fit.length2, "noise_ratio": self.noise_.tolist(),
            "mean": fit.mean.tolist(), "anchors": fit.anchors.tolist(), "alpha": fit.alpha.tolist(),
            "model": "L = mean + sum_i alpha_i exp(-H^2(w, anchor_i) / length2), "
                     "H^2(w, v) = 1/2 |sqrt(w) - sqrt(v)|^2",
        }

    def save(self, directory) -> dict:
        path = atomic_write_json(Path(directory) / f"{self.name}.json", self.to_json())
        return {"kind": self.name, "files": [path.name]}


class GPReplicas(Replicas):
    def __init__(self, fits: list[GPFit], K: int):
        self.fits, self.K = fits, K

    def _shared(self) -> bool:
        """Whether every replica has the same kernel (bootstrap replicas do)."""
        first = self.fits[0]
        return all(f.anchors is first.anchors and f.length2 == first.length2 for f in self.fits)

    def predict(self, X, replica=None):
        X = np.asarray(X, dtype=np.float64)
        if replica is not None:
            return self.fits[replica].predict(X)
        if self._shared():
            kernel = self.fits[0].kernel(X)
            return np.stack([fit.mean[None, :] + kernel @ fit.alpha for fit in self.fits])
        return np.stack([fit.predict(X) for fit in self.fits])

    def program(self, weights):
        v = np.asarray(weights, dtype=np.float64)
        const = np.array([fit.mean @ v for fit in self.fits])
        if self._shared():
            A, bias = self.fits[0].terms()
            return Program(self.K, const, A=A, bias=bias, out=np.stack([fit.alpha @ v for fit in self.fits], axis=1))
        programs = []
        for fit in self.fits:
            A, bias = fit.terms()
            programs.append(Program(self.K, float(fit.mean @ v), A=A, bias=bias, out=fit.alpha @ v))
        return Program.stack(programs)

    def __len__(self) -> int:
        return len(self.fits)
