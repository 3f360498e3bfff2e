"""The data section of a study config, planned: one Source per entry (`data.sources.<domain>`,
`data.split[i]`, `data.eval.<name>`) with its files, its units and how to read them.

    sources = plan_sources(config.data, tokenizer)

Planning lists the files and sizes the units (units.py) without reading any document, so a glob
that matches nothing, a missing column, a vocabulary that differs from the tokenizer's or an
end-of-text id outside it is reported here, before any task runs. `inputs_fingerprint` keys a
built corpus to its inputs (paths, sizes, modification times: never the data).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixopt.data.tokenizer import Tokenizer
from mixopt.data.units import InputFile, ReadSpec, Unit, find_pretokenized, find_text_files, plan_units
from mixopt.errors import DataError

COMPRESSED = ("jsonl.gz", "jsonl.zst")
TEXT_PER_COMPRESSED_BYTE = 4  # a rough guess: sizes tasks and pieces, never results


@dataclass
class Source:
    """One entry of the data section, planned: its files and units and how to read them."""

    label: str  # "web", "split[0]", "news": the entry's name in the config
    role: str  # train (domains) or eval (eval sets)
    domain: str | None  # the domain it fills; None for a split table
    spec: ReadSpec
    files: list[InputFile]
    units: list[Unit]
    description: str  # the manifest's `source` column
    exact_tokens: int | None = None  # pre-tokenized sources: the total, from the files' sizes
    key: dict = field(default_factory=dict)

    @property
    def measures(self) -> np.ndarray:
        return np.array([u.measure for u in self.units], dtype=np.int64)

    @property
    def text_sizes(self) -> np.ndarray:
        """Each unit's rough size in bytes of text (a compressed byte counts TEXT_PER_COMPRESSED_BYTE)."""
        return np.array([u.measure * (TEXT_PER_COMPRESSED_BYTE if u.kind in COMPRESSED else 1) for u in self.units])


def _source_key(name: str, entry) -> dict:
    return {"name": name, **entry.model_dump(exclude_none=True)}


def plan_sources(data, tokenizer: Tokenizer, unit_bytes: int | None = None) -> list[Source]:
    """Plan every source of a DataConfig (files, units); DataError naming the source and file."""
    sources: list[Source] = []
    for role, entries in (("train", data.sources), ("eval", data.eval)):
        for name, entry in entries.items():
            where = f"domain {name!r}" if role == "train" else f"eval set {name!r}"
            sources.append(_plan_entry(name, role, where, entry, tokenizer, unit_bytes))
    for index, entry in enumerate(data.split):
        where = f"data.split[{index}]"
        files = find_text_files(list(entry.paths), where)
        spec = ReadSpec(where, "text", _common_root(files), entry.text_field or "text", entry.domain_field)
        units = plan_units(files, spec, unit_bytes)
        description = f"split:{' '.join(entry.paths)} by {entry.domain_field}"
        sources.append(
            Source(
                f"split[{index}]",
                "train",
                None,
                spec,
                files,
                units,
                description,
                key={"name": f"split[{index}]", **entry.model_dump(exclude_none=True)},
            )
        )
    return sources


def _plan_entry(name: str, role: str, where: str, entry, tokenizer: Tokenizer, unit_bytes: int | None) -> Source:
    key = _source_key(name, entry)
    if entry.format is None:
        files = find_text_files(list(entry.paths), where)
        spec = ReadSpec(where, "text", _common_root(files), entry.text_field or "text")
        units = plan_units(files, spec, unit_bytes)
        return Source(name, role, name, spec, files, units, f"files:{' '.join(entry.paths)}", key=key)
    if entry.vocab_size is not None and entry.vocab_size != tokenizer.vocab_size:
        raise DataError(
            f"{where}: vocab_size {entry.vocab_size} differs from the tokenizer's {tokenizer.vocab_size} "
            f"({tokenizer.name}): set data.tokenizer to the tokenizer these ids were made with"
        )
    files = find_pretokenized(entry.path, entry.format, where)
    if entry.format == "megatron":
        spec = ReadSpec(where, "megatron", str(Path(files[0].path).parent), vocab_size=tokenizer.vocab_size)
        units = plan_units(files, spec, unit_bytes)
        from mixopt.data.megatron import read_index

        total = read_index(files[0].path).tokens
        return Source(name, role, name, spec, files, units, f"megatron:{entry.path}", exact_tokens=total, key=key)
    eos = entry.eos_id if entry.eos_id is not None else tokenizer.eos_id
    if eos is None:
        raise DataError(
            f"{where}: give eos_id (the id that ends each document): "
            f"the tokenizer {tokenizer.name} has no end-of-text token"
        )
    if eos >= tokenizer.vocab_size:
        raise DataError(f"{where}: eos_id {eos} is outside the tokenizer's vocabulary of {tokenizer.vocab_size}")
    spec = ReadSpec(
        where,
        "tokens",
        str(Path(files[0].path).parent),
        token_dtype=entry.dtype,
        eos_id=eos,
        vocab_size=tokenizer.vocab_size,
    )
    units = plan_units(files, spec, unit_bytes)
    total = files[0].size // np.dtype(entry.dtype).itemsize
    return Source(name, role, name, spec, files, units, f"tokens:{entry.path}", exact_tokens=total, key=key)


def _common_root(files: list[InputFile]) -> str:
    return os.path.commonpath([os.path.dirname(os.path.abspath(f.path)) for f in files]) if files else ""


def inputs_fingerprint(sources: Sequence[Source]) -> str:
    """sha256 over every input file's path, size and modification time (not its contents)."""
    digest = hashlib.sha256()
    for source in sources:
        for item in source.files:
            digest.update(
                f"{source.label}\x1f{os.path.abspath(item.path)}\x1f{item.size}\x1f{item.mtime_ns}\n".encode()
            )
    return digest.hexdigest()
