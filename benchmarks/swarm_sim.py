"""Simulated proxy swarms at many domains, for benchmarks/surrogate_swarms.py.

A swarm is what a lab gets from a mixing study: a few hundred small proxies, each trained on one
mixture over K domains, each scored on one objective (lower is better). Here the objective comes
from a loss model with the shape measured on real swarms, so that a surrogate can be scored on
unseen runs from the same sampler:

    effective exposure   x_j = w_j while a domain is read at most once; past one epoch, repeats
                         are worth less (x_j = s_j (1 + R (1 - exp(-(e_j - 1) / R))), e_j the
                         epochs, s_j the weight that reads domain j once; Muennighoff et al. 2023)
    transfer             z = S x: data of one domain teaches its neighbours (S = I plus clusters
                         of related domains, weak transfer across clusters)
    structure "tasks"    the objective is the mean bits-per-byte over T downstream tasks; task t
                         draws on a few domains (relevance a_t) and on general quality (q . z):
                         L_t = c_t + B_t (eps_t + a_t . z)^-alpha_t + C_t (eps + q . z)^-beta_t
    structure "domains"  the objective is the mean over held-out evaluation sets that each resemble
                         a few domains: L_i = c_i + B_i (eps_i + a_i . z)^-alpha_i
    structure "conflict" "tasks" plus interference: some clusters hurt some tasks in proportion
                         to their share (code in a prose benchmark): + N_t . z

Every form saturates (power laws in exposure), has diminishing returns and transfer. Observation
noise is Gaussian with a standard deviation of a few thousandths to two hundredths of the range of
the objective over the swarm, as on real swarms (seed noise against the spread between mixtures).

Mixtures are drawn as real swarms draw them:
    "sparse"  each run picks a random support (about 30% of the domains on average; a domain's
              chance grows with its token share, so small domains are non-zero in few runs), then
              Dirichlet weights on that support: about 70% of all weights are exactly zero
    "dense"   Dirichlet weights on every domain around the token prior (RegMix's sampler without
              its zeroing), a random concentration per run
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRUCTURES = ("tasks", "domains", "conflict")
MIXTURES = ("sparse", "dense")


@dataclass
class Swarm:
    K: int
    structure: str
    seed: int
    prior: np.ndarray          # (K,) token shares
    once: np.ndarray           # (K,) weight that reads each domain exactly once in a proxy run
    repeat_scale: float        # R: returns of repeated epochs decay on this scale
    S: np.ndarray              # (K, K) transfer
    A: np.ndarray              # (T, K) relevance of each domain to each task (sparse)
    q: np.ndarray              # (K,) general quality
    params: dict
    noise_frac: float = 0.0    # observation noise sd as a fraction of the objective's range over a swarm

    def exposure(self, W: np.ndarray) -> np.ndarray:
        """(n, K) effective exposure after repetition and transfer."""
        epochs = W / self.once
        R = self.repeat_scale
        fresh = np.where(epochs <= 1.0, epochs, 1.0 + R * (1.0 - np.exp(-(np.maximum(epochs, 1.0) - 1.0) / R)))
        return (self.once * fresh) @ self.S.T

    def objective(self, W: np.ndarray) -> np.ndarray:
        """(n,) the noise-free objective (mean bits per byte over tasks or evaluation sets)."""
        W = np.atleast_2d(np.asarray(W, dtype=np.float64))
        z = self.exposure(W)
        p = self.params
        task = z @ self.A.T                                                    # (n, T)
        L = p["c"] + p["B"] * (p["eps"] + task) ** (-p["alpha"])
        if self.structure in ("tasks", "conflict"):
            general = z @ self.q
            L = L + p["C"] * (1e-3 + general[:, None]) ** (-p["beta"])
        if self.structure == "conflict":
            L = L + z @ p["N"].T
        return L.mean(axis=1)

    def noise_sd(self, kind: str) -> float:
        """Observation noise for swarms drawn by sampler `kind`: noise_frac times the range
        (2.5th to 97.5th percentile) of the objective over 2,000 of its mixtures."""
        rng = np.random.default_rng([self.seed, self.K, MIXTURES.index(kind), 99])
        reference = self.objective(sample_mixtures(self, 2000, kind, rng))
        return self.noise_frac * float(np.percentile(reference, 97.5) - np.percentile(reference, 2.5))


def make_swarm(K: int, structure: str, seed: int) -> Swarm:
    if structure not in STRUCTURES:
        raise ValueError(f"unknown structure {structure!r}; choose one of {STRUCTURES}")
    rng = np.random.default_rng([K, STRUCTURES.index(structure), seed, 2718])
    prior = 10 ** rng.uniform(-2.5, 0.0, size=K)
    prior /= prior.sum()
    # a proxy run reads this many times the tokens of the whole pool: small domains repeat
    pool_multiple = 10 ** rng.uniform(-1.5, -0.5)
    once = np.minimum(prior / pool_multiple, 1.0)
    n_clusters = max(2, int(round(K / rng.uniform(3.0, 6.0))))
    cluster = rng.integers(0, n_clusters, size=K)
    same = cluster[:, None] == cluster[None, :]
    S = np.where(same, rng.uniform(0.1, 0.5, size=(K, K)), rng.uniform(0.0, 0.03, size=(K, K)))
    np.fill_diagonal(S, 1.0)
    T = 110 if structure != "domains" else max(8, K // 3)
    A = np.zeros((T, K))
    for t in range(T):
        home = rng.integers(0, n_clusters)
        members = np.flatnonzero(cluster == home)
        if len(members) == 0:
            members = np.arange(K)
        picks = rng.choice(members, size=min(len(members), int(rng.integers(1, 4))), replace=False)
        A[t, picks] = rng.uniform(0.3, 1.0, size=len(picks))
        if rng.random() < 0.5:                                                   # a second, weaker source
            A[t, rng.integers(0, K)] += rng.uniform(0.05, 0.3)
    q = np.exp(rng.normal(0.0, 0.5, size=K))
    q /= q.mean()
    params = dict(
        c=rng.uniform(0.6, 1.2, size=T),
        B=rng.uniform(0.05, 0.3, size=T),
        alpha=rng.uniform(0.15, 0.5, size=T),
        eps=10 ** rng.uniform(-3.0, -1.5, size=T),
        C=rng.uniform(0.1, 0.4, size=T),
        beta=rng.uniform(0.1, 0.4, size=T),
    )
    if structure == "conflict":
        hurt = rng.random((T, n_clusters)) < 0.15
        params["N"] = (hurt[:, cluster] * rng.uniform(0.0, 0.4, size=(T, K)))
    return Swarm(K=K, structure=structure, seed=seed, prior=prior, once=once,
                 repeat_scale=float(rng.uniform(2.0, 15.0)), S=S, A=A, q=q, params=params,
                 noise_frac=float(10 ** rng.uniform(np.log10(0.003), np.log10(0.02))))


def sample_mixtures(swarm: Swarm, n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """(n, K) mixtures from a swarm sampler (see the module docstring)."""
    K = swarm.K
    tempered = swarm.prior ** 0.5
    tempered /= tempered.sum()
    strength = 10 ** rng.uniform(np.log10(0.3), np.log10(5.0), size=n)
    if kind == "dense":
        alpha = np.maximum(tempered[None, :] * K * strength[:, None], 1e-3)
        W = rng.gamma(alpha)
    elif kind == "sparse":
        pick = 0.85 * tempered * K + 0.15        # relative chance of a domain to be in the support
        share = rng.uniform(0.1, 0.5, size=n)
        chance = np.clip(pick[None, :] * share[:, None], 0.0, 1.0)
        support = rng.random((n, K)) < chance
        empty = ~support.any(axis=1)
        support[empty, rng.integers(0, K, size=int(empty.sum()))] = True
        alpha = np.maximum(tempered[None, :] * K * strength[:, None], 1e-3)
        W = np.where(support, rng.gamma(alpha) + 1e-12, 0.0)
    else:
        raise ValueError(f"unknown mixture kind {kind!r}; choose one of {MIXTURES}")
    return W / W.sum(axis=1, keepdims=True)


def swarm_split(swarm: Swarm, kind: str, n_train: int, n_test: int, seed: int):
    """Training mixtures and observed losses (n_train), unseen test mixtures and their observed
    losses (n_test), drawn by the same sampler with their own noise."""
    rng = np.random.default_rng([swarm.seed, swarm.K, MIXTURES.index(kind), seed, 31])
    X = sample_mixtures(swarm, n_train + n_test, kind, rng)
    y = swarm.objective(X) + swarm.noise_sd(kind) * rng.standard_normal(len(X))
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]
