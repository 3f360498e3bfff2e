"""The documents of one unit of a source (units.py plans the units), in file order: text
records (JSON lines, Parquet, save_to_disk, .txt) and token records (Megatron, flat token files).

Fields may be nested: `meta.source` is the field `source` of the object (or struct column) `meta`;
a field literally named "meta.source" is found first. A document's key (its file, below the
source's common folder, and its position in the file) is its stable identity: the validation
split is drawn from it.

Every error is a DataError whose one line names the source (`where`) and the file.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixopt.data.units import ReadSpec, Unit, arrow_batches, first_line, open_arrow, open_parquet
from mixopt.errors import DataError

READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class TextRecord:
    key: str  # stable identity of the document (file and position)
    text: str
    domain: str | None  # the value of domain_field, for split tables


@dataclass(frozen=True)
class TokenRecord:
    key: str
    ids: np.ndarray  # int64


def _relative(path: str, root: str) -> str:
    """A document key's file part: the path below the source's common folder, so that keys (and
    the validation split they decide) do not change when the data moves."""
    try:
        return Path(os.path.abspath(path)).relative_to(root).as_posix()
    except ValueError:
        return Path(path).as_posix()


def get_field(record, field: str):
    """record[field], or the nested value a dotted field names; raises KeyError when absent."""
    if isinstance(record, dict) and field in record:
        return record[field]
    value = record
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(field)
        value = value[part]
    return value


def _text_of(record, spec: ReadSpec, path: str, where_in_file: str) -> tuple[str, str | None]:
    if not isinstance(record, dict):
        raise DataError(
            f"{spec.where}: {path} {where_in_file}: a JSON lines record must be an object, got {type(record).__name__}"
        )
    try:
        text = get_field(record, spec.text_field)
    except KeyError:
        fields = ", ".join(list(record)[:8])
        raise DataError(
            f"{spec.where}: {path} {where_in_file}: no field {spec.text_field!r} (fields: {fields})"
        ) from None
    if not isinstance(text, str):
        raise DataError(
            f"{spec.where}: {path} {where_in_file}: field {spec.text_field!r} is {type(text).__name__}, not text"
        )
    domain = None
    if spec.domain_field is not None:
        try:
            domain = get_field(record, spec.domain_field)
        except KeyError:
            raise DataError(
                f"{spec.where}: {path} {where_in_file}: no field {spec.domain_field!r} (the domain_field)"
            ) from None
        if not isinstance(domain, str):
            raise DataError(
                f"{spec.where}: {path} {where_in_file}: domain field {spec.domain_field!r} "
                f"is {type(domain).__name__}, not text"
            )
    return text, domain


def _json_line(line: bytes, spec: ReadSpec, path: str, where_in_file: str):
    try:
        return json.loads(line)
    except ValueError as exc:
        raise DataError(f"{spec.where}: {path} {where_in_file}: not valid JSON ({first_line(exc)})") from None


def _jsonl_range(unit: Unit, spec: ReadSpec) -> Iterator[TextRecord]:
    relative = _relative(unit.path, spec.root)
    with open(unit.path, "rb") as handle:
        if unit.start > 0:
            handle.seek(unit.start - 1)
            if handle.read(1) != b"\n":
                handle.readline()  # the line under way belongs to the unit before
        position = handle.tell()
        while position < unit.end:
            line = handle.readline()
            if not line:
                break
            if line.strip():
                where_in_file = f"at byte {position}"
                text, domain = _text_of(
                    _json_line(line, spec, unit.path, where_in_file), spec, unit.path, where_in_file
                )
                yield TextRecord(f"{relative}@{position}", text, domain)
            position += len(line)


def _compressed_stream(unit: Unit, spec: ReadSpec):
    if unit.kind == "jsonl.gz":
        return gzip.open(unit.path, "rb")
    try:
        import zstandard
    except ImportError:
        raise DataError(
            f"{spec.where}: {unit.path}: reading .zst files needs the zstandard package (pip install zstandard)"
        ) from None
    handle = open(unit.path, "rb")
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(handle, closefd=True), READ_CHUNK)


def _compressed_lines(unit: Unit, spec: ReadSpec) -> Iterator[TextRecord]:
    relative = _relative(unit.path, spec.root)
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)
    try:
        import zstandard

        errors += (zstandard.ZstdError,)
    except ImportError:
        pass
    number = 0
    try:
        with _compressed_stream(unit, spec) as stream:
            for number, line in enumerate(stream, start=1):
                if line.strip():
                    where_in_file = f"line {number}"
                    text, domain = _text_of(
                        _json_line(line, spec, unit.path, where_in_file), spec, unit.path, where_in_file
                    )
                    yield TextRecord(f"{relative}:{number}", text, domain)
    except errors as exc:
        compression = "gzip" if unit.kind == "jsonl.gz" else "zstd"
        raise DataError(
            f"{spec.where}: {unit.path}: corrupt {compression} stream after line {number} ({first_line(exc)})"
        ) from None


def _column_values(table, field: str) -> list:
    import pyarrow.compute as pc

    if field in table.schema.names:
        return table.column(field).to_pylist()
    parts = field.split(".")
    column = table.column(parts[0])
    for part in parts[1:]:
        column = pc.struct_field(column, part)
    return column.to_pylist()


def _table_records(table, unit: Unit, spec: ReadSpec) -> Iterator[TextRecord]:
    relative = _relative(unit.path, spec.root)
    texts = _column_values(table, spec.text_field)
    domains = _column_values(table, spec.domain_field) if spec.domain_field is not None else None
    for offset, text in enumerate(texts):
        row = unit.first_row + offset
        if not isinstance(text, str):
            state = "null" if text is None else type(text).__name__
            raise DataError(f"{spec.where}: {unit.path} row {row}: column {spec.text_field!r} is {state}, not text")
        domain = None
        if domains is not None:
            domain = domains[offset]
            if not isinstance(domain, str):
                state = "null" if domain is None else type(domain).__name__
                raise DataError(
                    f"{spec.where}: {unit.path} row {row}: domain column {spec.domain_field!r} is {state}, not text"
                )
        yield TextRecord(f"{relative}#{row}", text, domain)


def _parquet_rows(unit: Unit, spec: ReadSpec) -> Iterator[TextRecord]:
    parquet = open_parquet(unit.path, spec.where)
    names = parquet.schema_arrow.names
    fields = [spec.text_field] + ([spec.domain_field] if spec.domain_field else [])
    columns = sorted({field if field in names else field.split(".")[0] for field in fields})
    try:
        table = parquet.read_row_group(unit.start, columns=columns)
    except Exception as exc:
        raise DataError(
            f"{spec.where}: {unit.path}: row group {unit.start} cannot be read: {first_line(exc)}"
        ) from None
    yield from _table_records(table, unit, spec)


def _arrow_rows(unit: Unit, spec: ReadSpec) -> Iterator[TextRecord]:
    reader = open_arrow(unit.path, spec.where)
    try:
        for index, batch in enumerate(arrow_batches(reader)):
            if index == unit.start:
                break
        else:
            raise DataError(f"{spec.where}: {unit.path} has no record batch {unit.start} (it changed while being read)")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{spec.where}: {unit.path} is damaged: {first_line(exc)}") from None
    yield from _table_records(batch, unit, spec)


def read_text_file(path: str | os.PathLike, where: str = "") -> str:
    """A whole UTF-8 file (a leading BOM dropped); DataError naming the file (after `where`, if given)."""
    prefix = f"{where}: " if where else ""
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{prefix}{path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{prefix}cannot read {path}: {exc.strerror or exc}") from None


def _txt_file(unit: Unit, spec: ReadSpec) -> Iterator[TextRecord]:
    yield TextRecord(_relative(unit.path, spec.root), read_text_file(unit.path, spec.where), None)


def read_text_unit(unit: Unit, spec: ReadSpec) -> Iterator[TextRecord]:
    """The documents of one unit of a text source, in file order."""
    readers = {"jsonl": _jsonl_range, "jsonl.gz": _compressed_lines, "jsonl.zst": _compressed_lines,
               "parquet": _parquet_rows, "arrow": _arrow_rows, "txt": _txt_file}  # fmt: skip
    try:
        yield from readers[unit.kind](unit, spec)
    except OSError as exc:
        raise DataError(f"{spec.where}: cannot read {unit.path}: {exc.strerror or exc}") from None


def _check_ids(ids: np.ndarray, spec: ReadSpec, path: str, key: str) -> np.ndarray:
    if len(ids) and spec.vocab_size is not None:
        high, low = int(ids.max()), int(ids.min())
        if high >= spec.vocab_size or low < 0:
            bad = high if high >= spec.vocab_size else low
            raise DataError(
                f"{spec.where}: {path}: token id {bad} (document {key}) "
                f"is outside the tokenizer's vocabulary of {spec.vocab_size}"
            )
    return ids


def _megatron_documents(unit: Unit, spec: ReadSpec) -> Iterator[TokenRecord]:
    from mixopt.data.megatron import read_index

    try:
        index = read_index(unit.path)
        documents = index.read_documents(unit.start, unit.end)
    except DataError as exc:
        raise DataError(f"{spec.where}: {exc}") from None
    for offset, ids in enumerate(documents):
        key = str(unit.start + offset)
        yield TokenRecord(key, _check_ids(ids, spec, unit.path, key))


def _token_documents(unit: Unit, spec: ReadSpec) -> Iterator[TokenRecord]:
    """Documents whose first id lies in [start, end): each runs to its eos_id (or the file's end)."""
    ids = np.memmap(unit.path, dtype=np.dtype(spec.token_dtype).newbyteorder("<"), mode="r")
    eos, count = spec.eos_id, len(ids)
    begin = max(unit.start - 1, 0)
    ends = np.flatnonzero(np.asarray(ids[begin : unit.end]) == eos) + begin
    starts = ([0] if unit.start == 0 else []) + [int(e) + 1 for e in ends if unit.start <= e + 1 < unit.end]
    for position, start in enumerate(starts):
        if position + 1 < len(starts):
            stop = starts[position + 1]
        else:  # the last document may run past the unit's end: find its eos_id
            stop, cursor = count, max(start, unit.end - 1)
            while cursor < count:
                found = np.flatnonzero(np.asarray(ids[cursor : cursor + READ_CHUNK]) == eos)
                if len(found):
                    stop = cursor + int(found[0]) + 1
                    break
                cursor += READ_CHUNK
            stop = max(stop, start)
        key = str(start)
        yield TokenRecord(key, _check_ids(np.asarray(ids[start:stop], dtype=np.int64), spec, unit.path, key))


def read_token_unit(unit: Unit, spec: ReadSpec) -> Iterator[TokenRecord]:
    """The documents of one unit of a pre-tokenized source (ids checked against the vocabulary)."""
    try:
        if unit.kind == "megatron":
            yield from _megatron_documents(unit, spec)
        else:
            yield from _token_documents(unit, spec)
    except OSError as exc:
        raise DataError(f"{spec.where}: cannot read {unit.path}: {exc.strerror or exc}") from None
