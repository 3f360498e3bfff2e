"""Which training windows a model sees, and the held-out windows every model is scored on.

    MixtureSampler       a proxy's batches: one fixed mixture, every step's counts known up front
    MixtureBatchSource   the large run's batches: proportions that change while it trains (a
                         torch IterableDataset), JSON state for resuming
Both follow the scheme below and share its rounding (systematic_counts).

Sampling scheme (common random numbers). For a proxy with seed s and mixture w over K domains,
training step t takes B = batch_size windows of seq_len + 1 tokens:

1. Batch composition by systematic rounding. With the cumulative weights C_0 = 0, C_j = w_1 + ...
   + w_j (C_K = 1) and an offset u_t in [0, 1), domain j gets
       n_j(t) = floor(B C_j + u_t) - floor(B C_{j-1} + u_t)
   rows. The n_j(t) sum to B, each is floor(B w_j) or ceil(B w_j), a zero weight never gets a row,
   and E[n_j(t)] = B w_j. The offsets follow a golden-ratio sequence u_t = frac(u_0 + t / phi)
   from a u_0 drawn from the seed, so the cumulative count of domain j after t steps stays within
   a few rows of t B w_j (far less variance than drawing rows independently).
2. Window positions by per-domain streams. Domain j has its own stream of uniforms U_j[0], U_j[1],
   ... drawn from (s, crc32(domain name)); the k-th window a proxy takes from domain j starts at
   position U_j[k] of that domain's train split (TokenStream.windows).

Both u_t and U_j depend on the seed and the domain name only, never on the mixture: proxies of a
study with the same seed see the same batch compositions wherever their mixtures round alike, and
the same k-th window of every domain. Differences between their losses are then differences
between mixtures, not between random draws. Rows within a batch are in domain order (the loss is a
mean over rows, so the order does not matter).

Evaluation: the first `eval_tokens` tokens of each domain's val split, cut into non-overlapping
windows of seq_len + 1 (TokenStream.head), identical for every proxy and every run.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset

from mixopt.data.corpus import Corpus, TokenStream
from mixopt.errors import DataError, InputError

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 1 / phi
_OFFSET_STREAM = 0x0FF5E7


def normalize_mixture(weights: Sequence[float], n_domains: int) -> np.ndarray:
    """Check one mixture row (non-negative, finite, summing to 1 within 1e-6) and renormalize it."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_domains,):
        raise ValueError(f"mixtures: each row must have {n_domains} weights (one per domain), got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"mixtures: weights must be finite and non-negative, got {w.tolist()}")
    total = w.sum()
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"mixtures: each row must sum to 1 (on the simplex), got a row summing to {total:.9g}")
    return w / total


def domain_key(domain: str) -> int:
    """A stable integer for a domain name (independent of the domain's position in a study)."""
    return zlib.crc32(domain.encode("utf-8"))


def systematic_counts(weights: np.ndarray, batch_size: int, steps: np.ndarray, seed: int) -> np.ndarray:
    """Rows per domain at each of `steps` (step indices from 0): (len(steps), K) int64, each row
    summing to batch_size (the rounding of the module docstring, offsets u_t from the seed)."""
    u0 = np.random.default_rng([int(seed), _OFFSET_STREAM]).random()
    offsets = np.mod(u0 + GOLDEN * np.asarray(steps, dtype=np.float64), 1.0)         # (steps,)
    cumulative = batch_size * np.concatenate([[0.0], np.cumsum(weights)])             # (K + 1,)
    cumulative[-1] = batch_size                                                       # exact end
    edges = np.floor(cumulative[None, :] + offsets[:, None]).astype(np.int64)         # (steps, K+1)
    return np.diff(edges, axis=1)


def batch_counts(weights: np.ndarray, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """Rows per domain at every step of a run of `steps` steps: (steps, K) int64."""
    return systematic_counts(weights, batch_size, np.arange(steps), seed)


class MixtureSampler:
    """The deterministic training batches of one proxy (see the module docstring)."""

    def __init__(self, streams: Sequence[TokenStream], domains: Sequence[str], weights: np.ndarray,
                 seed: int, batch_size: int, seq_len: int, steps: int):
        self.streams = list(streams)
        self.length = seq_len + 1
        self.counts = batch_counts(weights, batch_size, steps, seed)
        totals = self.counts.sum(axis=0)
        # U_j: as many uniforms as the run takes from domain j; a prefix of the same sequence
        # for every proxy with this seed (numpy's generator yields one double per draw).
        self.uniforms = [
            np.random.default_rng([int(seed), domain_key(d)]).random(int(n)) for d, n in zip(domains, totals)
        ]
        self.cursor = np.zeros(len(domains), dtype=np.int64)

    def batch(self, step: int, out: np.ndarray | None = None) -> np.ndarray:
        """Windows of step `step` (call with step = 0, 1, 2, ... in order): (B, seq_len + 1) int64."""
        rows = []
        for j, n in enumerate(self.counts[step]):
            if n:
                k = self.cursor[j]
                rows.append(self.streams[j].windows(self.uniforms[j][k : k + n], self.length))
                self.cursor[j] = k + n
        return np.concatenate(rows, axis=0, out=out)


class MixtureBatchSource(IterableDataset):
    """Batches of `batch_size` windows of `seq_len + 1` tokens drawn from the domains' train
    shards in proportions that may change while iterating (a PyTorch IterableDataset; use it with
    DataLoader(source, batch_size=None) or iterate it directly).

    Step t gives each domain systematic_counts(current weights, t) rows, the k-th window of domain
    j starting at a uniform from domain j's own random stream (seed, domain): the scheme of the
    module docstring, applied to whatever the proportions are at step t. Two runs with the same
    seed see the same windows of a domain in the same order, whatever their mixtures.

    Weights: `set_weights(p)` (the training loop does this every round), or `weights_fn` (called
    every `refresh_every` steps: a Ray mixer actor's current proportions, for DataLoader workers in
    other processes). `state_dict()` / `load_state_dict()` are JSON-ready for resuming.
    """

    def __init__(self, corpus: Corpus, domains: Sequence[str], batch_size: int, seq_len: int, seed: int = 0,
                 weights=None, weights_fn: Callable[[], Sequence[float]] | None = None, refresh_every: int = 1):
        missing = [d for d in domains if d not in corpus.domains]
        if missing:
            raise DataError(f"domains {missing} are not in the corpus at {corpus.directory} (it has {corpus.domains})")
        self.domains = list(domains)
        self.K = len(self.domains)
        self.batch_size, self.length, self.seed = int(batch_size), int(seq_len) + 1, int(seed)
        self.streams = [corpus.stream(d, "train") for d in self.domains]
        self.weights_fn = weights_fn
        self.refresh_every = max(1, int(refresh_every))
        self.step = 0
        self.rngs = [np.random.default_rng([self.seed, domain_key(d)]) for d in self.domains]
        self.rows_taken = np.zeros(self.K, dtype=np.int64)
        self.weights = np.full(self.K, 1.0 / self.K)
        if weights is not None:
            self.set_weights(weights)

    def set_weights(self, weights) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.K,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
            raise InputError(f"weights must be {self.K} finite non-negative numbers with a positive sum, got {w}")
        self.weights = w / w.sum()

    def counts(self, step: int) -> np.ndarray:
        """Rows per domain at `step` under the current weights: (K,) int64 summing to batch_size."""
        return systematic_counts(self.weights, self.batch_size, [step], self.seed)[0]

    def next_batch(self) -> np.ndarray:
        if self.weights_fn is not None and self.step % self.refresh_every == 0:
            self.set_weights(self.weights_fn())
        rows = []
        for j, n in enumerate(self.counts(self.step)):
            if n:
                rows.append(self.streams[j].windows(self.rngs[j].random(int(n)), self.length))
                self.rows_taken[j] += n
        self.step += 1
        return np.concatenate(rows, axis=0)

    def __iter__(self):
        while True:
            yield torch.from_numpy(self.next_batch())

    def state_dict(self) -> dict:
        return {"domains": self.domains, "seed": self.seed, "step": self.step, "weights": self.weights.tolist(),
                "rows_taken": self.rows_taken.tolist(), "rngs": [r.bit_generator.state for r in self.rngs]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("domains") != self.domains or state.get("seed") != self.seed:
            raise InputError("source state: saved for other domains or another seed")
        self.step = int(state["step"])
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.rows_taken = np.asarray(state["rows_taken"], dtype=np.int64)
        for rng, saved in zip(self.rngs, state["rngs"]):
            rng.bit_generator.state = saved


def eval_windows(corpus: Corpus, domains: Sequence[str], eval_tokens: int, seq_len: int) -> dict[str, np.ndarray]:
    """The held-out windows of each domain: the first eval_tokens // seq_len (at least one)
    non-overlapping windows of seq_len + 1 tokens of its val split."""
    n_windows = max(1, eval_tokens // seq_len)
    return {d: corpus.stream(d, "val").head(n_windows, seq_len + 1) for d in domains}
