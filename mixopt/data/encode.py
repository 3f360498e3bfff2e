"""What one preparation task does: read a few units of a source, cut long documents into pieces,
draw the validation candidates, tokenize in batches. Runs in a Ray worker (or in process).

Pieces. A text document longer than `piece_bytes` is cut at line boundaries (pieces.py), so
that even a domain of a few long documents gets a fine-grained validation split; pre-tokenized
documents are cut only beyond TOKEN_PIECE_IDS ids (no text to cut at, and their ids are copied
untouched). Each piece draws a number u in [0, 1) from a hash of (domain, document key, piece
number): pieces with u < val_rate are validation candidates; the others stay in training, and
consecutive training pieces of one document are joined again. The draw depends only on the
text's identity, never on the machine, the task or the order of completion. Which candidates
become the validation split (the lowest u first) is decided once a domain is read (writers.py).

Tokens. Text pieces are encoded in batches with the tokenizer (`encode_batch`), each followed by
the end-of-text id; pre-tokenized ids are copied as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mixopt.data.pieces import cut_into_pieces, piece_hash
from mixopt.data.readers import read_text_unit, read_token_unit
from mixopt.data.tokenizer import Tokenizer, TokenizerSpec, from_spec
from mixopt.data.units import ReadSpec, Unit

HASH_SCALE = float(1 << 64)
TOKEN_PIECE_IDS = 1 << 16


@dataclass(frozen=True)
class PieceSettings:
    """How a task cuts and draws: piece size (bytes of text), the validation candidate rate, and
    the domain name for sources of one domain (None: a split table, the records name theirs)."""

    piece_bytes: int
    val_rate: float
    domain: str | None


@dataclass
class DomainPart:
    """One domain's share of a task's output."""

    train_ids: list[np.ndarray] = field(default_factory=list)
    train_bytes: int = 0
    candidate_ids: list[np.ndarray] = field(default_factory=list)
    candidate_keys: list[float] = field(default_factory=list)
    candidate_bytes: list[int] = field(default_factory=list)
    documents: int = 0
    unit_tokens: np.ndarray | None = None  # (units of the task,) tokens of this domain per unit

    def finish(self, dtype: np.dtype) -> "DomainPart":
        """Flatten the lists into arrays (one train array, candidates as arrays)."""
        self.train_ids = [np.concatenate(self.train_ids).astype(dtype, copy=False)] if self.train_ids else []
        return self


@dataclass
class TaskResult:
    parts: dict[str, DomainPart]
    units: int


def piece_draw(domain: str, key: str, index: int) -> float:
    """A piece's draw u in [0, 1), from the hash of its identity."""
    return int.from_bytes(piece_hash(domain, key, index), "little") / HASH_SCALE


def _text_pieces(text: str, limit: int) -> list[str]:
    if len(text) * 4 <= limit:
        return [text]
    data = text.encode("utf-8")
    if len(data) <= limit:
        return [text]
    return [piece.decode("utf-8") for piece in cut_into_pieces(data, limit)]


class _Collector:
    """Builds the parts of one task: pieces to train runs and candidates, per domain."""

    def __init__(self, settings: PieceSettings, n_units: int):
        self.settings = settings
        self.n_units = n_units
        self.parts: dict[str, DomainPart] = {}
        # texts (or id arrays) waiting to be encoded: (domain, unit position, kind, key)
        self.pending: list[tuple[str, int, str, float]] = []
        self.payloads: list = []

    def part(self, domain: str) -> DomainPart:
        part = self.parts.get(domain)
        if part is None:
            part = self.parts[domain] = DomainPart(unit_tokens=np.zeros(self.n_units, dtype=np.int64))
        return part

    def add(self, domain: str, unit_position: int, key: str, pieces: list) -> None:
        self.part(domain).documents += 1
        rate = self.settings.val_rate
        run: list = []
        for index, piece in enumerate(pieces):
            u = piece_draw(domain, key, index) if rate > 0 else 1.0
            if u < rate:
                if run:
                    self._queue(domain, unit_position, "train", 0.0, run)
                    run = []
                self._queue(domain, unit_position, "candidate", u, [piece])
            else:
                run.append(piece)
        if run:
            self._queue(domain, unit_position, "train", 0.0, run)

    def _queue(self, domain: str, unit_position: int, kind: str, u: float, run: list) -> None:
        payload = "".join(run) if isinstance(run[0], str) else np.concatenate(run)
        self.pending.append((domain, unit_position, kind, u))
        self.payloads.append(payload)


def _store(collector: _Collector, ids_per_item: list[np.ndarray], bytes_per_item: list[int]) -> None:
    for (domain, unit_position, kind, u), ids, n_bytes in zip(collector.pending, ids_per_item, bytes_per_item):
        part = collector.part(domain)
        part.unit_tokens[unit_position] += len(ids)
        if kind == "train":
            part.train_ids.append(ids)
            part.train_bytes += n_bytes
        else:
            part.candidate_ids.append(ids)
            part.candidate_keys.append(u)
            part.candidate_bytes.append(n_bytes)


def _encode_pending(collector: _Collector, tokenizer: Tokenizer) -> None:
    texts = collector.payloads
    ids, lengths = tokenizer.encode_documents(texts)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    per_item = [ids[bounds[i] : bounds[i + 1]] for i in range(len(texts))]
    _store(collector, per_item, [len(text.encode("utf-8")) for text in texts])


def _copy_pending(collector: _Collector, tokenizer: Tokenizer) -> None:
    arrays = [a.astype(tokenizer.dtype) for a in collector.payloads]
    _store(collector, arrays, tokenizer.text_bytes(arrays) if arrays else [])


def run_task(spec: ReadSpec, units: list[Unit], tokenizer_spec: TokenizerSpec, settings: PieceSettings) -> TaskResult:
    """Read, cut, draw and tokenize the documents of `units` (one source). DataError on bad input."""
    tokenizer = from_spec(tokenizer_spec)
    collector = _Collector(settings, len(units))
    if spec.kind == "text":
        for position, unit in enumerate(units):
            for record in read_text_unit(unit, spec):
                if not record.text:
                    continue
                domain = settings.domain if settings.domain is not None else record.domain
                collector.add(domain, position, record.key, _text_pieces(record.text, settings.piece_bytes))
        _encode_pending(collector, tokenizer)
    else:
        step = TOKEN_PIECE_IDS
        for position, unit in enumerate(units):
            for record in read_token_unit(unit, spec):
                if len(record.ids) == 0:
                    continue
                pieces = [record.ids[i : i + step] for i in range(0, len(record.ids), step)]
                collector.add(settings.domain, position, record.key, pieces)
        _copy_pending(collector, tokenizer)
    return TaskResult({d: p.finish(tokenizer.dtype) for d, p in collector.parts.items()}, len(units))
