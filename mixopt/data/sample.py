"""How much of each domain a study needs, the random order its units are read in, and what the
units read say about the whole domain.

Sampling. A source's units (see units.py) are put in a random order fixed by the seed and the
source's name, and read in that order until the domain holds the tokens it needs; when what is
left unread is at most READ_REST_SHARE of the source's size, the rest is read as well and the
counts are exact. Every document of the source then has the same chance of being read (the units
read are a simple random sample of its units; the documents are sampled in clusters), and no
unit that is not read is opened, parsed or decompressed: a terabyte costs what its sample costs,
plus listing the files and reading Parquet footers.

Estimate. A domain's total tokens, for the repetition caps, is the ratio estimate
    T = M * sum(t_u) / sum(m_u)
over the units read (t_u their tokens, m_u their measures, M the measure of every unit), i.e.
the source's size times tokens per byte measured on the sample. Its standard error is that of a
ratio estimator over a simple random sample of n of N units (Cochran, Sampling Techniques, 6.3):
    se(T) = N * sqrt((1 - n/N) / n) * s_e,   s_e^2 = sum((t_u - R m_u)^2) / (n - 1),
which accounts for documents that resemble their neighbours in a unit. The interval rests on the
sum over units being near normal: it holds when units hold many documents (MiB-sized units of
JSON lines, row groups, files of a folder), and is too narrow when units hold a few documents
of very unequal length. A source that mixes file
formats is estimated per format (stratum) and the estimates added: at least 2 units of every
format are read (or all of that format). The 95% interval uses Student's t with n - 1 degrees of
freedom, and never goes below the tokens already read. At least MIN_SAMPLED_UNITS units are read
before an estimate is made at all; pre-tokenized sources and sources read whole have exact counts.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

MIN_SAMPLED_UNITS = 10
READ_REST_SHARE = 0.25
TASK_BYTES = 8 << 20
DEFAULT_VAL_TOKENS = 1 << 18


@dataclass(frozen=True)
class SampleSize:
    """Tokens to prepare per domain. train_tokens None: read every source whole."""

    train_tokens: int | None = None
    val_tokens: int = DEFAULT_VAL_TOKENS
    per_domain: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in [
            ("train_tokens", self.train_tokens),
            ("val_tokens", self.val_tokens),
            *self.per_domain.items(),
        ]:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: tokens must be a positive integer, got {value!r}")

    def train_for(self, domain: str) -> int | None:
        if self.train_tokens is None:
            return None
        return int(self.per_domain.get(domain, self.train_tokens))

    def need_for(self, domain: str, role: str = "train") -> int | None:
        """Tokens to read for a domain (training and validation) or an eval set (validation)."""
        if role == "eval":
            return self.val_tokens if self.train_tokens is not None else None
        train = self.train_for(domain)
        return None if train is None else train + self.val_tokens

    def key(self) -> dict:
        return {
            "train_tokens": self.train_tokens,
            "val_tokens": self.val_tokens,
            "per_domain": dict(sorted(self.per_domain.items())),
        }


def validation_tokens(eval_tokens: int, seq_len: int) -> int:
    """Tokens of the held-out windows a proxy is scored on (workers/data.py: eval_windows)."""
    return max(1, eval_tokens // seq_len) * (seq_len + 1)


def sample_size(config) -> SampleSize:
    """What a study (a mixopt.config.Config) needs of each domain: the most its proxies can draw
    from it (proxy tokens x the domain's upper weight bound) times max_epochs as a margin against
    repeating the sample, plus the held-out windows it is scored on."""
    from mixopt.config import proxy_spec

    spec = proxy_spec(config)
    epochs = config.space.max_epochs

    def need(bound: float) -> int:
        return max(1, math.ceil(spec.tokens * bound * epochs))

    return SampleSize(
        train_tokens=need(1.0),
        val_tokens=validation_tokens(spec.eval_tokens, spec.seq_len),
        per_domain={d: need(w) for d, w in config.space.max_weights.items()},
    )


def unit_order(n_units: int, seed: int, label: str) -> np.ndarray:
    """The random order a source's units are read in: fixed by the seed and the source's label."""
    return np.random.default_rng([int(seed), zlib.crc32(label.encode("utf-8"))]).permutation(n_units)


def chunk_tasks(order: np.ndarray, measures: np.ndarray, task_bytes: int = TASK_BYTES) -> list[np.ndarray]:
    """Consecutive runs of the order, each at most task_bytes of measure (at least one unit): the
    units that one task reads."""
    tasks, current, size = [], [], 0
    for unit in order:
        m = int(measures[unit])
        if current and size + m > task_bytes:
            tasks.append(np.asarray(current, dtype=np.int64))
            current, size = [], 0
        current.append(int(unit))
        size += m
    if current:
        tasks.append(np.asarray(current, dtype=np.int64))
    return tasks


@dataclass(frozen=True)
class TokenEstimate:
    """A domain's total tokens: exact (every unit read, or pre-tokenized) or estimated with its
    standard error and 95% interval."""

    tokens: int
    low: int
    high: int
    se: float
    exact: bool
    units_read: int
    units: int

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "low": self.low, "high": self.high, "se": round(self.se, 3),
                "exact": self.exact, "units_read": self.units_read, "units": self.units}  # fmt: skip


def exact(tokens: int, units: int) -> TokenEstimate:
    return TokenEstimate(int(tokens), int(tokens), int(tokens), 0.0, True, units, units)


@dataclass(frozen=True)
class Stratum:
    """The units of one file format in a source (sizes of different formats do not compare: a
    compressed byte holds several text bytes), and the tokens of those read."""

    read_tokens: np.ndarray  # (n,) tokens of each unit read
    read_measures: np.ndarray  # (n,) their measures
    total_measure: float  # of every unit of the stratum
    total_units: int


def estimate_total(strata: list[Stratum]) -> TokenEstimate:
    """The source's tokens: the sum of each stratum's ratio estimate (exact for a stratum read
    whole), standard errors added in quadrature, Student's t with the fewest degrees of freedom
    of any estimated stratum (see the module docstring)."""
    total, variance, seen, read, units, dof = 0.0, 0.0, 0, 0, 0, None
    for stratum in strata:
        t = np.asarray(stratum.read_tokens, dtype=np.float64)
        m = np.asarray(stratum.read_measures, dtype=np.float64)
        n, big_n = len(t), stratum.total_units
        seen, read, units = seen + int(t.sum()), read + n, units + big_n
        if n >= big_n:
            total += float(t.sum())
            continue
        if n < 2 or m.sum() <= 0:
            raise ValueError(f"an estimate needs at least 2 units with a measure in each stratum, got {n}")
        ratio = t.sum() / m.sum()
        s_e2 = float(np.sum((t - ratio * m) ** 2)) / (n - 1)
        total += ratio * stratum.total_measure
        variance += big_n**2 * (1 - n / big_n) / n * s_e2
        dof = n - 1 if dof is None else min(dof, n - 1)
    if dof is None:
        return exact(seen, units)
    from scipy.stats import t as student

    se = math.sqrt(variance)
    half = float(student.ppf(0.975, dof)) * se
    low = max(seen, int(math.floor(total - half)))
    return TokenEstimate(int(round(max(total, seen))), low, int(math.ceil(total + half)), se, False, read, units)
