"""Writing a built corpus's shards: a domain's training tokens as they come, its validation
candidates aside on disk, and its validation split chosen once the domain is read.

Shards are <domain>/<split>-NNN.bin files of at most shard_tokens ids, uint16 or uint32 (the
tokenizer's vocabulary decides), every document followed by the tokenizer's end-of-text id
(the byte tokenizer's is 0x00); pre-tokenized ids are copied as stored. Each shard's sha256 is
computed while it is written.

Validation split. The candidates of a domain (drawn by encode.py) are taken lowest draw first
until the split holds min(val_tokens, val_fraction x the domain's tokens read), at least one
piece; those left over join the training split, in the order they were read. The training split
keeps at least one piece. Eval sets (`data.eval`) have a validation split only: every piece is
a candidate, taken the same way up to val_tokens (all of them when sources are read whole).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from mixopt.data.encode import DomainPart
from mixopt.errors import DataError

CANDIDATES_FILE = ".candidates.bin"


class ShardWriter:
    """Appends ids to <domain>/<split>-NNN.bin files of at most shard_tokens ids, hashing as it goes."""

    def __init__(self, directory: Path, domain: str, split: str, dtype: np.dtype, shard_tokens: int):
        self.directory, self.domain, self.split = directory, domain, split
        self.dtype, self.shard_tokens = dtype, shard_tokens
        self.rows: list[dict] = []
        self._handle = None

    def _open(self) -> None:
        relative = f"{self.domain}/{self.split}-{len(self.rows):03d}.bin"
        (self.directory / self.domain).mkdir(parents=True, exist_ok=True)
        self._handle = open(self.directory / relative, "wb")
        self._digest = hashlib.sha256()
        self.rows.append({"path": relative, "tokens": 0, "bytes": 0.0})

    def append(self, ids: np.ndarray, n_bytes: float) -> None:
        ids = np.ascontiguousarray(ids, dtype=self.dtype)
        start = 0
        while start < len(ids):
            if self._handle is None or self.rows[-1]["tokens"] >= self.shard_tokens:
                self._close()
                self._open()
            row = self.rows[-1]
            piece = ids[start : start + self.shard_tokens - row["tokens"]]
            data = piece.tobytes()
            self._handle.write(data)
            self._digest.update(data)
            row["tokens"] += len(piece)
            row["bytes"] += n_bytes * len(piece) / len(ids)
            start += len(piece)

    def _close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self.rows[-1]["sha256"] = self._digest.hexdigest()
            self._handle = None

    def close(self) -> list[dict]:
        self._close()
        return [{**row, "bytes": int(round(row["bytes"]))} for row in self.rows]

    @property
    def tokens(self) -> int:
        return sum(row["tokens"] for row in self.rows)


class DomainWriter:
    """One domain (or eval set) being built: its training shards as they come, its validation
    candidates on disk, and what the estimate needs (tokens per unit read)."""

    def __init__(self, directory: Path, name: str, role: str, dtype: np.dtype, shard_tokens: int):
        self.name, self.role, self.dtype = name, role, dtype
        self.directory = directory
        self.train = ShardWriter(directory, name, "train", dtype, shard_tokens)
        self.val = ShardWriter(directory, name, "val", dtype, shard_tokens)
        (directory / name).mkdir(parents=True, exist_ok=True)
        self.candidates_path = directory / name / CANDIDATES_FILE
        self._candidates = open(self.candidates_path, "wb")
        self.candidate_lengths: list[int] = []
        self.candidate_keys: list[float] = []
        self.candidate_bytes: list[int] = []
        self.documents = 0
        self.text_bytes = 0
        self.unit_tokens: dict[int, int] = {}

    def add(self, part: DomainPart, unit_indices: np.ndarray) -> None:
        for unit, tokens in zip(unit_indices, part.unit_tokens):
            self.unit_tokens[int(unit)] = self.unit_tokens.get(int(unit), 0) + int(tokens)
        self.documents += part.documents
        self.text_bytes += part.train_bytes + sum(part.candidate_bytes)
        for ids in part.train_ids:  # one array (DomainPart.finish); none for an eval set
            self.train.append(ids, part.train_bytes)
        for ids, key, n_bytes in zip(part.candidate_ids, part.candidate_keys, part.candidate_bytes):
            self._candidates.write(np.ascontiguousarray(ids, dtype=self.dtype).tobytes())
            self.candidate_lengths.append(len(ids))
            self.candidate_keys.append(key)
            self.candidate_bytes.append(n_bytes)

    @property
    def tokens(self) -> int:
        return self.train.tokens + sum(self.candidate_lengths)

    def finish(self, val_tokens: int | None, val_fraction: float) -> tuple[list[dict], list[dict]]:
        """Choose the validation split, write it, move the other candidates to training; returns
        the (train, val) shard rows."""
        self._candidates.close()
        lengths = np.asarray(self.candidate_lengths, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        order = np.argsort(np.asarray(self.candidate_keys), kind="stable")
        if self.role == "eval":
            target = self.tokens if val_tokens is None else val_tokens
        else:
            target = max(1, math.floor(val_fraction * self.tokens))
            if val_tokens is not None:
                target = min(target, val_tokens)
        chosen, held = [], 0
        for index in order:
            if held >= target:
                break
            chosen.append(int(index))
            held += int(lengths[index])
        if self.role == "train" and self.train.tokens == 0 and len(chosen) == len(order) and chosen:
            chosen.pop()  # the training split keeps at least one piece
        if not chosen or (self.role == "train" and self.train.tokens == 0 and len(chosen) == len(order)):
            raise DataError(
                f"domain {self.name!r} has too little text ({self.documents} documents, {self.tokens} tokens) "
                "for a training and a validation split"
            )
        data = np.memmap(self.candidates_path, dtype=self.dtype, mode="r") if offsets[-1] else np.zeros(0, self.dtype)
        for index in chosen:
            self.val.append(data[offsets[index] : offsets[index + 1]], self.candidate_bytes[index])
        chosen_set = set(chosen)
        if self.role == "train":
            for index in range(len(lengths)):  # the rest, in the order they were read
                if index not in chosen_set:
                    self.train.append(data[offsets[index] : offsets[index + 1]], self.candidate_bytes[index])
        del data
        self.candidates_path.unlink(missing_ok=True)
        return self.train.close(), self.val.close()

    def abandon(self) -> None:
        self._candidates.close()
        self.train.close()
        self.val.close()
