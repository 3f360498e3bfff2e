"""A source's input, planned before any of it is read: the files a source names, and the units
they split into.

Formats, by extension (a source may mix them):

    .jsonl .json                 JSON lines; the text is `text_field` of each object
    .jsonl.gz .json.gz           the same, gzip-compressed
    .jsonl.zst .json.zst         the same, zstandard-compressed (needs the `zstandard` package)
    .parquet                     a table; the text is the column `text_field`
    .txt                         one document per file (UTF-8)
    a folder from Hugging Face `datasets.save_to_disk` (state.json + .arrow files), read with pyarrow
    megatron                     Megatron-LM's .bin/.idx pair (already tokenized), see megatron.py
    tokens                       a flat array of token ids (uint16 or uint32), documents ended by eos_id

A unit is the piece of input that sampling keeps or skips whole, sized so that deciding needs no
parsing: a byte range of an uncompressed JSON-lines file (a line belongs to the range its first
byte lies in), a whole compressed file (a gzip or zstd stream cannot be entered in the middle),
a Parquet row group (its size comes from the footer), a record batch of a `save_to_disk` file,
a .txt file, a range of documents of a Megatron dataset, a range of a flat token file (a
document belongs to the range its first id lies in). Each unit has a `measure`, its size in
bytes known before reading it, that the token estimate scales by. readers.py reads the
documents of one unit.

Every error is a DataError whose one line names the source (`where`) and the file.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixopt.errors import DataError

TEXT_SUFFIXES = {
    ".jsonl": "jsonl", ".json": "jsonl",
    ".jsonl.gz": "jsonl.gz", ".json.gz": "jsonl.gz",
    ".jsonl.zst": "jsonl.zst", ".json.zst": "jsonl.zst", ".jsonl.zstd": "jsonl.zst",
    ".parquet": "parquet", ".txt": "txt",
}  # fmt: skip
MIN_UNIT_BYTES = 1 << 20
MAX_UNIT_BYTES = 4 << 20
UNITS_PER_SOURCE = 256
UNIT_TOKENS = 1 << 20


@dataclass(frozen=True)
class InputFile:
    """One file a source reads (its size and modification time key the prepared corpus)."""

    path: str
    kind: str  # jsonl, jsonl.gz, jsonl.zst, parquet, txt, arrow, megatron, tokens
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Unit:
    """A piece of one file that is read or skipped whole. start/end: bytes (jsonl, tokens: ids),
    a row group or record batch index (parquet, arrow: end = start + 1), documents (megatron);
    first_row: the row number of the unit's first row (parquet, arrow)."""

    path: str
    kind: str
    start: int
    end: int
    measure: int
    first_row: int = 0


@dataclass(frozen=True)
class ReadSpec:
    """How to read the documents of one source's units (sent to the Ray tasks with them)."""

    where: str  # "domain 'web'", "eval set 'news'", "data.split[0]"
    kind: str  # text, megatron, tokens
    root: str  # document keys are paths relative to this folder
    text_field: str = "text"
    domain_field: str | None = None
    token_dtype: str | None = None  # tokens: the file's dtype
    eos_id: int | None = None  # tokens: the id that ends each document
    vocab_size: int | None = None  # pre-tokenized: ids must lie below it


def _file(path: Path, kind: str) -> InputFile:
    stat = path.stat()
    return InputFile(str(path), kind, stat.st_size, stat.st_mtime_ns)


def text_kind(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(TEXT_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return TEXT_SUFFIXES[suffix]
    return None


def _save_to_disk_files(folder: Path, where: str) -> list[InputFile]:
    if (folder / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in folder.iterdir() if (p / "state.json").is_file())
        raise DataError(
            f"{where}: {folder} holds several splits ({', '.join(splits)}): "
            f"name one, e.g. {folder / (splits or ['train'])[0]}"
        )
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{where}: {folder / 'state.json'} is not a save_to_disk state file: {exc}") from None
    files = []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{where}: {path} is missing (named in {folder / 'state.json'})")
        files.append(_file(path, "arrow"))
    return files


def find_text_files(patterns: list[str], where: str) -> list[InputFile]:
    """The files of a text source's globs, sorted and without repeats; DataError naming the
    pattern that matches nothing or a file of no known format."""
    found: dict[str, InputFile] = {}
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not matches:
            raise DataError(f"{where}: {pattern} matches no file")
        for match in matches:
            path = Path(match)
            if path.is_dir():
                if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
                    for item in _save_to_disk_files(path, where):
                        found.setdefault(item.path, item)
                    continue
                raise DataError(
                    f"{where}: {path} is a folder, not a file or a save_to_disk folder "
                    f"(use a glob such as {path}/*.jsonl)"
                )
            kind = text_kind(path)
            if kind is None:
                known = ", ".join(sorted(set(TEXT_SUFFIXES)))
                raise DataError(f"{where}: {path}: unknown format (known: {known}, a save_to_disk folder)")
            found.setdefault(str(path), _file(path, kind))
    return sorted(found.values(), key=lambda f: f.path)


def find_pretokenized(path: str, kind: str, where: str) -> list[InputFile]:
    """The files of a megatron (.bin + .idx) or tokens source."""
    if kind == "megatron":
        from mixopt.data.megatron import prefix_paths

        pair = prefix_paths(path)
        for item in pair:
            if not item.is_file():
                raise DataError(f"{where}: {item} does not exist (a megatron source is the prefix of a .bin/.idx pair)")
        return [_file(item, "megatron") for item in pair]
    item = Path(path)
    if not item.is_file():
        raise DataError(f"{where}: {item} does not exist")
    return [_file(item, "tokens")]


# --------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------


def unit_bytes_for(total_bytes: int) -> int:
    """Byte ranges of uncompressed JSON lines: about UNITS_PER_SOURCE per source, 1-4 MiB each."""
    return int(min(max(total_bytes // UNITS_PER_SOURCE, MIN_UNIT_BYTES), MAX_UNIT_BYTES))


def plan_units(files: list[InputFile], spec: ReadSpec, unit_bytes: int | None = None) -> list[Unit]:
    """Every unit of a source's files, in file order. Reads only footers, indexes and (for
    save_to_disk files) record batch headers; DataError naming the file that cannot be opened or
    lacks a field."""
    text_bytes = sum(f.size for f in files if f.kind == "jsonl")
    block = unit_bytes or unit_bytes_for(text_bytes)
    units: list[Unit] = []
    if spec.kind == "megatron":
        return _megatron_units(files, spec, unit_bytes)
    for item in files:
        if item.kind == "jsonl":
            for start in range(0, item.size, block):
                units.append(
                    Unit(item.path, item.kind, start, min(start + block, item.size), min(block, item.size - start))
                )
        elif item.kind in ("jsonl.gz", "jsonl.zst", "txt"):
            units.append(Unit(item.path, item.kind, 0, item.size, item.size))
        elif item.kind == "parquet":
            units.extend(_parquet_units(item, spec))
        elif item.kind == "arrow":
            units.extend(_arrow_units(item, spec))
        elif item.kind == "tokens":
            units.extend(_token_units(item, spec, unit_bytes))
    return units


def _field_path(schema, field: str, path: str, where: str) -> list[str]:
    """The column and struct field names that reach `field` in an Arrow schema."""
    if field in schema.names:
        return [field]
    parts = field.split(".")
    if parts[0] not in schema.names:
        raise DataError(f"{where}: {path} has no column {field!r} (columns: {', '.join(schema.names)})")
    kind = schema.field(parts[0]).type
    for depth, part in enumerate(parts[1:], start=1):
        index = kind.get_field_index(part) if hasattr(kind, "get_field_index") else -1
        if index < 0:
            raise DataError(
                f"{where}: {path} has no field {'.'.join(parts[: depth + 1])!r} (column {parts[0]!r} is {kind})"
            )
        kind = kind.field(index).type
    return parts


def open_parquet(path: str, where: str):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise DataError(f"{where}: {path} is not a readable Parquet file: {first_line(exc)}") from None


def _parquet_units(item: InputFile, spec: ReadSpec) -> list[Unit]:
    parquet = open_parquet(item.path, spec.where)
    schema = parquet.schema_arrow
    text_path = _field_path(schema, spec.text_field, item.path, spec.where)
    if spec.domain_field is not None:
        _field_path(schema, spec.domain_field, item.path, spec.where)
    metadata = parquet.metadata
    leaves = [
        i
        for i in range(metadata.num_columns)
        if metadata.schema.column(i).path.split(".")[: len(text_path)] == text_path
    ]
    units, first_row = [], 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        measure = sum(row_group.column(i).total_uncompressed_size for i in leaves) or row_group.total_byte_size
        units.append(Unit(item.path, item.kind, group, group + 1, int(measure), first_row))
        first_row += row_group.num_rows
    return units


def open_arrow(path: str, where: str):
    import pyarrow as pa

    try:
        source = pa.memory_map(path)
        try:
            return pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            return pa.ipc.open_file(source)
    except Exception as exc:
        raise DataError(f"{where}: {path} is not a readable Arrow file: {first_line(exc)}") from None


def arrow_batches(reader):
    if hasattr(reader, "num_record_batches"):  # the random-access file format
        for index in range(reader.num_record_batches):
            yield reader.get_batch(index)
    else:
        yield from reader


def _arrow_units(item: InputFile, spec: ReadSpec) -> list[Unit]:
    reader = open_arrow(item.path, spec.where)
    text_path = _field_path(reader.schema, spec.text_field, item.path, spec.where)
    if spec.domain_field is not None:
        _field_path(reader.schema, spec.domain_field, item.path, spec.where)
    units, first_row = [], 0
    try:
        for index, batch in enumerate(arrow_batches(reader)):
            measure = batch.column(text_path[0]).get_total_buffer_size()
            units.append(Unit(item.path, item.kind, index, index + 1, int(measure), first_row))
            first_row += batch.num_rows
    except Exception as exc:
        raise DataError(f"{spec.where}: {item.path} is damaged: {first_line(exc)}") from None
    return units


def _megatron_units(files: list[InputFile], spec: ReadSpec, unit_bytes: int | None) -> list[Unit]:
    from mixopt.data.megatron import read_index

    try:
        index = read_index(files[0].path)
    except DataError as exc:
        raise DataError(f"{spec.where}: {exc}") from None
    documents, tokens = index.documents, index.tokens
    if documents == 0:
        return []
    per_unit = (unit_bytes // index.dtype.itemsize) if unit_bytes else UNIT_TOKENS
    step = max(1, int(documents * per_unit // max(tokens, 1)))
    bin_path = str(index.bin_path)
    return [
        Unit(
            bin_path,
            "megatron",
            first,
            min(first + step, documents),
            int(tokens * (min(first + step, documents) - first) // documents),
        )
        for first in range(0, documents, step)
    ]


def _token_units(item: InputFile, spec: ReadSpec, unit_bytes: int | None) -> list[Unit]:
    itemsize = np.dtype(spec.token_dtype).itemsize
    if item.size % itemsize:
        raise DataError(
            f"{spec.where}: {item.path} holds {item.size} bytes, not a whole number of {spec.token_dtype} ids"
        )
    count = item.size // itemsize
    step = (unit_bytes // itemsize) if unit_bytes else UNIT_TOKENS
    return [
        Unit(item.path, "tokens", s, min(s + step, count), (min(s + step, count) - s) * itemsize)
        for s in range(0, count, step)
    ]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (pyarrow's run over several), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
