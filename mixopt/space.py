"""The space of mixtures: the simplex over K domains, cut by per-domain bounds and repetition caps.

A mixture w is feasible when
    sum(w) == 1,  lower_j <= w_j <= upper_j,
    upper_j = min(max_weight_j, max_epochs * tokens_j / target_tokens)   (the repetition cap)
The last term keeps a recommendation from asking a domain for more epochs than the large run can
afford: weight w_j of a run of T tokens reads w_j * T tokens of a domain that holds tokens_j.

Sampling never rejects: a draw on the plain simplex is mapped into the feasible set by an affine
shift (lower bounds) and one exact redistribution step (upper bounds), so a tiny domain or a tight
lower bound cannot make the sampler fail or stall.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mixopt.errors import InputError

FEASIBILITY_TOLERANCE = 1e-9


def _finite_array(name: str, values, length: int | None = None) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numbers: {exc}") from exc
    if array.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {array.shape}")
    if length is not None and len(array) != length:
        raise InputError(f"{name} has {len(array)} values for {length} domains")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} must be finite, got {array.tolist()}")
    return array


def _per_domain(name: str, values, domains: Sequence[str], default: float) -> np.ndarray:
    """Per-domain values from None, a mapping {domain: value} or a sequence of K values."""
    if values is None:
        return np.full(len(domains), default)
    if isinstance(values, Mapping):
        unknown = sorted(set(values) - set(domains))
        if unknown:
            raise InputError(f"{name} names unknown domains {unknown} (domains: {list(domains)})")
        array = np.full(len(domains), default)
        for index, domain in enumerate(domains):
            if domain in values:
                array[index] = values[domain]
        return _finite_array(name, array)
    return _finite_array(name, values, len(domains))


def project_to_bounds(points: np.ndarray, lower: np.ndarray, upper: np.ndarray, iterations: int = 80) -> np.ndarray:
    """Euclidean projection of each row onto {lower <= w <= upper, sum(w) = 1}.

    The projection is clip(v - tau, lower, upper) for the tau that makes the row sum to one; tau is
    found by bisection, vectorised over rows. Requires sum(lower) <= 1 <= sum(upper)."""
    points = np.atleast_2d(np.asarray(points, dtype=np.float64))
    low_tau = (points - upper).min(axis=1) - 1.0
    high_tau = (points - lower).max(axis=1) + 1.0
    for _ in range(iterations):
        tau = 0.5 * (low_tau + high_tau)
        total = np.clip(points - tau[:, None], lower, upper).sum(axis=1)
        too_big = total > 1.0
        low_tau = np.where(too_big, tau, low_tau)
        high_tau = np.where(too_big, high_tau, tau)
    projected = np.clip(points - (0.5 * (low_tau + high_tau))[:, None], lower, upper)
    return _fix_sum(projected, lower, upper)


def _fix_sum(points: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Remove the last rounding error of the row sums by moving it onto coordinates with room."""
    error = 1.0 - points.sum(axis=1)
    room = np.where(error[:, None] > 0, upper - points, points - lower)
    room_total = room.sum(axis=1)
    share = np.divide(room, room_total[:, None], out=np.zeros_like(room), where=room_total[:, None] > 0)
    return np.clip(points + error[:, None] * share, lower, upper)


def map_simplex_to_bounds(simplex_points: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Map points of the plain simplex into {lower <= w <= upper, sum(w) = 1} without rejection.

    w = lower + (1 - sum(lower)) * z meets the lower bounds. Mass above an upper bound is then cut
    and handed to the other domains in proportion to the room they have left, which never
    overshoots: the room left is at least the mass cut (because sum(upper) >= 1)."""
    z = np.atleast_2d(np.asarray(simplex_points, dtype=np.float64))
    w = lower + (1.0 - lower.sum()) * z
    excess = np.clip(w - upper, 0.0, None).sum(axis=1)
    w = np.minimum(w, upper)
    room = upper - w
    room_total = room.sum(axis=1)
    share = np.divide(room, room_total[:, None], out=np.zeros_like(room), where=room_total[:, None] > 0)
    w = w + excess[:, None] * share
    return _fix_sum(w, lower, upper)


def proportional_to_bounds(shares: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The mixture proportional to `shares` among the domains its bounds leave free.

    Domains that would fall outside their bounds are pinned there, and the rest is shared out in
    proportion to `shares` again, until no bound is violated (at most K passes)."""
    shares = np.clip(np.asarray(shares, dtype=np.float64), 0.0, None)
    pinned = np.full(len(shares), np.nan)
    for _ in range(len(shares) + 1):
        free = np.isnan(pinned)
        if not free.any():           # every domain pinned at a bound
            return _fix_sum(pinned[None, :], lower, upper)[0]
        mass = 1.0 - np.nansum(pinned)
        free_shares = np.where(free, shares, 0.0)
        total = free_shares.sum()
        weights = np.where(free, mass * (free_shares / total if total > 0 else free / free.sum()), pinned)
        over, under = free & (weights > upper), free & (weights < lower)
        if not over.any() and not under.any():
            return _fix_sum(weights[None, :], lower, upper)[0]
        # pin the side that is violated by more mass first; the other may resolve itself
        if np.sum((weights - upper)[over]) >= np.sum((lower - weights)[under]):
            pinned[over] = upper[over]
        else:
            pinned[under] = lower[under]
    return project_to_bounds(shares[None, :], lower, upper)[0]


class MixtureSpace:
    """Domains, the tokens each really has, bounds and repetition caps (see the module docstring).

    domains: K names. tokens: tokens available per domain (K positive numbers).
    target_tokens: tokens of the large run; None means no repetition cap.
    max_epochs: how many times the large run may read each domain (a number or K numbers).
    min_weights / max_weights: None, K numbers, or {domain: weight}.
    """

    def __init__(
        self,
        domains: Sequence[str],
        tokens: Sequence[float],
        target_tokens: float | None = None,
        max_epochs: float | Sequence[float] = 4.0,
        min_weights: Mapping[str, float] | Sequence[float] | None = None,
        max_weights: Mapping[str, float] | Sequence[float] | None = None,
    ):
        if isinstance(domains, str) or not all(isinstance(d, str) and d for d in domains):
            raise InputError("domains must be a list of non-empty strings")
        if len(domains) < 2:
            raise InputError(f"domains must name at least 2 domains, got {len(domains)}")
        if len(set(domains)) != len(domains):
            raise InputError(f"domains must be unique, got {list(domains)}")
        self.domains = list(domains)
        self.tokens = _finite_array("tokens", tokens, self.K)
        if np.any(self.tokens <= 0):
            raise InputError(f"tokens must be positive for every domain, got {self.tokens.tolist()}")
        if target_tokens is not None:
            if not np.isfinite(target_tokens) or target_tokens <= 0:
                raise InputError(f"target_tokens must be a positive number or None, got {target_tokens}")
            target_tokens = float(target_tokens)
        self.target_tokens = target_tokens
        if np.isscalar(max_epochs):
            max_epochs = [max_epochs] * self.K
        self.max_epochs = _per_domain("max_epochs", max_epochs, self.domains, 4.0)
        if np.any(self.max_epochs <= 0):
            raise InputError(f"max_epochs must be positive, got {self.max_epochs.tolist()}")
        self.min_weights = _per_domain("min_weights", min_weights, self.domains, 0.0)
        self.max_weights = _per_domain("max_weights", max_weights, self.domains, 1.0)
        for name, array in (("min_weights", self.min_weights), ("max_weights", self.max_weights)):
            if np.any(array < 0) or np.any(array > 1):
                raise InputError(f"{name} must lie in [0, 1], got {array.tolist()}")
        if np.any(self.min_weights > self.max_weights):
            bad = [d for d, lo, hi in zip(self.domains, self.min_weights, self.max_weights) if lo > hi]
            raise InputError(f"min_weights exceed max_weights for {bad}")
        self.lower = self.min_weights.copy()
        self.upper = np.minimum(self.max_weights, self.epoch_caps)
        if np.any(self.lower > self.upper + FEASIBILITY_TOLERANCE):
            bad = [d for d, lo, hi in zip(self.domains, self.lower, self.upper) if lo > hi]
            raise InputError(
                f"min_weights of {bad} exceed their repetition caps (max_epochs * tokens / target_tokens)"
            )
        if self.lower.sum() > 1 + FEASIBILITY_TOLERANCE:
            raise InputError(f"min_weights sum to {self.lower.sum():.4f} > 1: no mixture is feasible")
        if self.upper.sum() < 1 - FEASIBILITY_TOLERANCE:
            raise InputError(
                f"the upper bounds (max_weights and repetition caps) sum to {self.upper.sum():.4f} < 1: "
                "no mixture is feasible; raise max_epochs, lower target_tokens or add data"
            )

    # -- derived quantities -------------------------------------------------------------------
    @property
    def K(self) -> int:
        return len(self.domains)

    @property
    def epoch_caps(self) -> np.ndarray:
        """The largest weight each domain can take without exceeding max_epochs (1 when uncapped)."""
        if self.target_tokens is None:
            return np.ones(self.K)
        return np.minimum(self.max_epochs * self.tokens / self.target_tokens, 1.0)

    @property
    def natural(self) -> np.ndarray:
        """The token-proportional mixture, brought inside the bounds and caps (domains at a bound
        are pinned there; the others keep their token proportions)."""
        return proportional_to_bounds(self.tokens / self.tokens.sum(), self.lower, self.upper)

    @property
    def uniform(self) -> np.ndarray:
        return proportional_to_bounds(np.ones(self.K), self.lower, self.upper)

    def epochs(self, weights: np.ndarray) -> np.ndarray | None:
        """Epochs of each domain that the large run would read under `weights` (None: no target)."""
        if self.target_tokens is None:
            return None
        return np.asarray(weights) * self.target_tokens / self.tokens

    # -- membership and projection -----------------------------------------------------------
    def validate(self, weights, name: str = "weights") -> np.ndarray:
        """Return weights as an (n, K) float array or raise InputError naming the problem."""
        array = np.asarray(weights, dtype=np.float64)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != self.K:
            raise InputError(f"{name} must have shape (n, {self.K}), got {np.shape(weights)}")
        if not np.all(np.isfinite(array)):
            raise InputError(f"{name} contain NaN or infinite values")
        return array

    def contains(self, weights, tolerance: float = 1e-6) -> np.ndarray:
        """Boolean per row: on the simplex, inside the bounds and the repetition caps."""
        array = self.validate(weights)
        return (
            (np.abs(array.sum(axis=1) - 1.0) <= tolerance)
            & np.all(array >= self.lower - tolerance, axis=1)
            & np.all(array <= self.upper + tolerance, axis=1)
        )

    def project(self, weights) -> np.ndarray:
        """Nearest feasible mixtures (Euclidean), row by row."""
        return project_to_bounds(self.validate(weights), self.lower, self.upper)

    # -- sampling ----------------------------------------------------------------------------
    def sample(
        self,
        n: int,
        rng: np.random.Generator | int | None = None,
        centre: np.ndarray | None = None,
        prior_share: float = 0.5,
    ) -> np.ndarray:
        """n feasible mixtures, never by rejection.

        RegMix draws Dirichlet mixtures around the token distribution; that starves small domains
        and fails outright under lower bounds. Here each draw picks its own centre between the
        prior (natural, or `centre`) and the uniform mixture (prior ** temperature with temperature
        uniform in [0, 1], for a `prior_share` of the draws, the rest centred on uniform) and its own
        concentration (log-uniform, from sparse corners to tight clouds), then is mapped into the
        bounds and caps. Small domains thus get real weight often, up to what their caps allow.
        """
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise InputError(f"n must be a non-negative integer, got {n!r}")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        prior = self.natural if centre is None else self.validate(centre, "centre")[0]
        prior = np.clip(prior, 1e-12, None)
        prior = prior / prior.sum()
        temperature = np.where(rng.random(n) < prior_share, rng.random(n), 0.0)
        centres = prior[None, :] ** temperature[:, None]
        centres /= centres.sum(axis=1, keepdims=True)
        concentration = np.exp(rng.uniform(np.log(0.3), np.log(30.0), size=n)) * self.K
        alpha = np.clip(centres * concentration[:, None], 1e-3, None)
        simplex = rng.gamma(alpha)
        simplex_total = simplex.sum(axis=1, keepdims=True)
        simplex = np.where(simplex_total > 0, simplex / np.where(simplex_total > 0, simplex_total, 1), 1.0 / self.K)
        return map_simplex_to_bounds(simplex, self.lower, self.upper)

    def describe(self) -> dict:
        """A JSON-ready description (for recommendation.json and reports)."""
        return {
            "domains": self.domains,
            "tokens": self.tokens.tolist(),
            "target_tokens": self.target_tokens,
            "max_epochs": self.max_epochs.tolist(),
            "lower": self.lower.tolist(),
            "upper": self.upper.tolist(),
            "natural": self.natural.tolist(),
        }

    def __repr__(self) -> str:
        return f"MixtureSpace(K={self.K}, domains={self.domains}, target_tokens={self.target_tokens})"
