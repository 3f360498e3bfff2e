"""The proxies' per-domain Jacobian for `auto` (option `jacobian`), estimated from a proxy study.

`auto` without a Jacobian assumes that each domain's data lowers only its own loss. A proxy study
knows more: its proxies trained many mixtures, and how each domain's final loss moves across them
is the transfer structure that one large run cannot measure at K >= 8 (docs/benchmarks.md). A
plain least-squares fit of that structure needs hundreds of proxies; from a few dozen it is worse
than none. `estimate_jacobian` therefore shrinks it towards the own-data model by empirical Bayes:
as far as the proxies show transfer beyond their noise, J carries it, and no further.
"""

from __future__ import annotations

import numpy as np

from mixopt.errors import InputError

_GRID = np.logspace(-4.0, 4.0, 81)    # tau^2 / sigma^2, in units of 1 / (mean squared singular value)


def estimate_jacobian(mixtures, losses, prior, along) -> np.ndarray:
    """J[i, j] = d L_j / d p_i at `prior` (p not renormalised), the input of auto's `jacobian`.

    mixtures (N, K): the proxies' mixtures (rows on the simplex); losses (N, K): their final
    per-domain losses; prior (K,): the mixture the large run starts from; along (K,): each domain's
    rate along the proxies' length at the prior, d L_j / d log(length), which is p . J[:, j] and
    which no fit over the simplex gives (every proxy trains the same length): the difference of a
    few proxies' losses on the prior at the full and at half the length, over log 2.

    For each domain j, L_j = c + sum_i b_i p_i over the proxies, b = b0 + v: b0 the own-data model
    (e_j along_j / prior_j, what auto assumes without a Jacobian; 0 where the loss does not fall)
    and v the transfer the proxies show, v ~ N(0, tau_j^2) along the simplex, noise N(0, sigma_j^2);
    tau_j / sigma_j by maximum marginal likelihood (sigma_j profiled), v its posterior mean. Few or
    noisy proxies give tau_j -> 0 and the own-data model; many give the least-squares fit. The
    constant along the simplex, which the fit leaves free, is then set so that p . J[:, j] = along_j.
    """
    X, Y, p, rate = _checked(mixtures, losses, prior, along)
    N, K = X.shape
    Xc = X - X.mean(axis=0)
    U, s, Wt = np.linalg.svd(Xc, full_matrices=False)
    keep = s > 1e-10 * max(float(s.max()), 1e-300)
    U, s, Wt = U[:, keep], s[keep], Wt[keep]
    grid = _GRID / max(float(np.mean(s ** 2)), 1e-300)
    J = np.zeros((K, K))
    for j in range(K):
        b0 = np.zeros(K)
        b0[j] = min(rate[j], 0.0) / p[j]
        r = Y[:, j] - X @ b0
        r = r - r.mean()
        z = U.T @ r
        rest = max(float(r @ r - z @ z), 0.0)
        ratio = _ratio(z, rest, s, grid, N - 1)
        v = Wt.T @ (ratio * s / (1.0 + ratio * s ** 2) * z)
        b = b0 + v
        J[:, j] = b + (rate[j] - p @ b)
    return J


def _ratio(z, rest, s, grid, dof) -> float:
    """tau^2 / sigma^2 maximising the marginal likelihood of the centred losses, sigma^2 profiled
    out: -2 log L = sum_k log(1 + g s_k^2) + dof log(sum_k z_k^2 / (1 + g s_k^2) + rest). 0 (the
    prior model) when it is best."""
    candidates = np.concatenate([[0.0], grid])
    scale = 1.0 + candidates[:, None] * s[None, :] ** 2
    residual = (z[None, :] ** 2 / scale).sum(axis=1) + rest
    value = np.log(scale).sum(axis=1) + dof * np.log(np.maximum(residual, 1e-300))
    return float(candidates[int(np.argmin(value))])


def _checked(mixtures, losses, prior, along):
    try:
        X = np.asarray(mixtures, dtype=np.float64)
        Y = np.asarray(losses, dtype=np.float64)
        p = np.asarray(prior, dtype=np.float64)
        rate = np.asarray(along, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"estimate_jacobian: inputs must be numbers: {exc}") from exc
    if X.ndim != 2 or X.shape[1] < 2:
        raise InputError(f"mixtures must be (proxies, domains) with at least 2 domains, got shape {X.shape}")
    N, K = X.shape
    if N < 3:
        raise InputError(f"mixtures: at least 3 proxies are needed, got {N}")
    if Y.shape != (N, K):
        raise InputError(f"losses must have the mixtures' shape {(N, K)}, got {Y.shape}")
    if p.shape != (K,) or rate.shape != (K,):
        raise InputError(f"prior and along must have shape ({K},), got {p.shape} and {rate.shape}")
    for name, value in (("mixtures", X), ("losses", Y), ("prior", p), ("along", rate)):
        if not np.all(np.isfinite(value)):
            raise InputError(f"{name} must be finite")
    if np.any(X < -1e-9) or np.any(np.abs(X.sum(axis=1) - 1.0) > 1e-6):
        raise InputError("mixtures must be proportions: non-negative rows that sum to 1")
    if np.any(p <= 0) or abs(p.sum() - 1.0) > 1e-6:
        raise InputError("prior must be positive proportions that sum to 1")
    return X, Y, p, rate
