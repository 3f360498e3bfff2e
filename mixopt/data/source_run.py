"""Reading one source of a build: tasks sent in the source's random unit order, results taken in
that order whatever the order they finish in, and the rule that stops reading.

Stop rule. A source stops as soon as its domains hold the tokens the study needs (sample.py:
SampleSize.need_for), once at least MIN_SAMPLED_UNITS units, and two units of every file format
(or all of them), have been read: enough for an estimate of the whole. When what is left unread
is then at most READ_REST_SHARE of the source, the rest is read too and the counts are exact.
Tasks are sent ahead only while the tokens expected from those in flight (at the tokens per
byte read so far) would not cover the need; tasks sent ahead of a stop are let finish and their
results dropped (build.py).

Pieces and candidates. A source's piece size and validation candidate rate (encode.PieceSettings)
are set from a rough guess of the text it will yield: enough candidates for its validation split
(several times the target, and at least VAL_MIN_CANDIDATES pieces in expectation), at least
val_fraction of the pieces. They decide which pieces are candidates; how many tokens the split
holds is decided once the domain is read (writers.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from mixopt.data.encode import PieceSettings, TaskResult
from mixopt.data.pieces import piece_size
from mixopt.data.sample import (
    MIN_SAMPLED_UNITS,
    READ_REST_SHARE,
    SampleSize,
    Stratum,
    TokenEstimate,
    chunk_tasks,
    estimate_total,
    exact,
    unit_order,
)
from mixopt.data.source_plan import Source
from mixopt.data.writers import DomainWriter

VAL_CANDIDATES_PER_TARGET = 4
VAL_MIN_CANDIDATES = 12


def _expected_text_bytes(source: Source, need: int | None) -> int:
    """A rough size of the text a source will yield (compressed files hold about 4 bytes of text
    per byte; a token about 4 bytes): it sizes pieces and the candidate rate, never the result's
    correctness."""
    size = int(source.text_sizes.sum())
    return size if need is None else min(size, 4 * need)


def _val_rate(val_fraction: float, val_target_bytes: int, piece_bytes: int, expected_bytes: int) -> float:
    """The share of pieces drawn as validation candidates: enough for the split (several times
    its target, and at least VAL_MIN_CANDIDATES pieces in expectation), at least val_fraction."""
    pieces = max(expected_bytes / piece_bytes, 1.0)
    wanted = max(VAL_CANDIDATES_PER_TARGET * val_target_bytes / max(expected_bytes, 1), VAL_MIN_CANDIDATES / pieces)
    return float(min(0.5, max(val_fraction, wanted)))


class SourceRun:
    """The state of one source while it is read: tasks sent, results taken in order, when to stop."""

    def __init__(
        self,
        source: Source,
        sample: SampleSize,
        seed: int,
        val_fraction: float,
        task_bytes: int,
        make_writer: Callable[[str, Source], DomainWriter],
    ):
        self.source, self.sample = source, sample
        measures = source.measures
        self.total_measure = int(measures.sum())
        self.tasks = chunk_tasks(unit_order(len(source.units), seed, source.label), source.text_sizes, task_bytes)
        self.task_measures = [int(measures[t].sum()) for t in self.tasks]
        expected = _expected_text_bytes(source, sample.need_for(source.domain or "", source.role))
        val_target = (
            min(sample.val_tokens, int(val_fraction * expected)) if source.role == "train" else sample.val_tokens
        )
        piece_bytes = piece_size(val_target)
        self.settings = PieceSettings(
            piece_bytes=piece_bytes,
            val_rate=1.0 if source.role == "eval" else _val_rate(val_fraction, val_target, piece_bytes, expected),
            domain=source.domain,
        )
        self.make_writer = make_writer
        self.writers: dict[str, DomainWriter] = {}
        self.next_submit = 0
        self.next_take = 0
        self.buffer: dict[int, TaskResult] = {}
        self.in_flight: set[int] = set()
        self.read_units: list[int] = []
        self.kind_units = Counter(u.kind for u in source.units)
        self.kind_read: Counter = Counter()
        self.measure_read = 0
        self.stopped = False
        self.read_whole = False

    # -- the stop rule, applied after each task taken in order
    def _need(self, domain: str) -> int | None:
        return self.sample.need_for(domain, self.source.role)

    def _enough(self) -> bool:
        if not self.writers or len(self.read_units) < MIN_SAMPLED_UNITS:
            return False
        for kind, count in self.kind_units.items():  # every format read whole or estimable
            if self.kind_read.get(kind, 0) < min(count, 2):
                return False
        needs = [self._need(name) for name in self.writers]
        return all(n is not None and w.tokens >= n for n, w in zip(needs, self.writers.values()))

    @property
    def finished(self) -> bool:
        return self.stopped or self.next_take >= len(self.tasks)

    def wants_task(self) -> bool:
        if self.finished or self.next_submit >= len(self.tasks):
            return False
        if self.read_whole or not self.writers or not self.in_flight:
            return True
        if len(self.read_units) + sum(len(self.tasks[i]) for i in self.in_flight) < MIN_SAMPLED_UNITS:
            return True
        ahead = sum(self.task_measures[i] for i in self.in_flight)
        per_measure = min(w.tokens for w in self.writers.values()) / max(self.measure_read, 1)
        needs = [self._need(name) for name in self.writers]
        if any(n is None for n in needs):
            return True
        return min(w.tokens for w in self.writers.values()) + per_measure * ahead < max(needs)

    def submit(self, executor):
        index = self.next_submit
        self.next_submit += 1
        self.in_flight.add(index)
        units = [self.source.units[u] for u in self.tasks[index]]
        return executor.submit(self.source.spec, units, self.settings), index

    def receive(self, index: int, result: TaskResult) -> bool:
        """Take a finished task; returns True when the source has just decided to stop."""
        self.in_flight.discard(index)
        if self.stopped:
            return False
        self.buffer[index] = result
        while self.next_take in self.buffer and not self.stopped:
            self._take(self.next_take, self.buffer.pop(self.next_take))
            self.next_take += 1
            if not self.read_whole and self._enough():
                if self.total_measure - self.measure_read <= READ_REST_SHARE * self.total_measure:
                    self.read_whole = True
                else:
                    self.stopped = True
                    self.buffer.clear()
                    return True
        return False

    def _take(self, index: int, result: TaskResult) -> None:
        units = self.tasks[index]
        self.read_units.extend(int(u) for u in units)
        self.kind_read.update(self.source.units[int(u)].kind for u in units)
        self.measure_read += self.task_measures[index]
        for name, part in result.parts.items():
            writer = self.writers.get(name)
            if writer is None:
                writer = self.writers[name] = self.make_writer(name, self.source)
            writer.add(part, units)

    def estimate(self, name: str) -> TokenEstimate:
        writer = self.writers[name]
        units = len(self.source.units)
        if self.source.exact_tokens is not None:
            return exact(self.source.exact_tokens, units)
        measures = self.source.measures
        kinds = np.array([u.kind for u in self.source.units])
        read = np.asarray(self.read_units, dtype=np.int64)
        strata = []
        for kind in self.kind_units:
            mine = read[kinds[read] == kind] if len(read) else read
            tokens = np.array([writer.unit_tokens.get(int(u), 0) for u in mine], dtype=np.int64)
            strata.append(
                Stratum(tokens, measures[mine], float(measures[kinds == kind].sum()), int(self.kind_units[kind]))
            )
        return estimate_total(strata)
