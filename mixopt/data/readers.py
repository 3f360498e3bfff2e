"""Input files of a data source: which files a source names, how they split into units, and the
documents of one unit.

Formats, by extension (a source may mix them):

    .jsonl .json                 JSON lines; the text is `text_field` of each object
    .jsonl.gz .json.gz           the same, gzip-compressed
    .jsonl.zst .json.zst         the same, zstandard-compressed (needs the `zstandard` package)
    .parquet                     a table; the text is the column `text_field`
    .txt                         one document per file (UTF-8)
    a folder from Hugging Face `datasets.save_to_disk` (state.json + .arrow files), read with pyarrow
    megatron                     Megatron-LM's .bin/.idx pair (already tokenized), see megatron.py
    tokens                       a flat array of token ids (uint16 or uint32), documents ended by eos_id

Fields may be nested: `meta.source` is the field `source` of the object (or struct column) `meta`;
a field literally named "meta.source" is found first.

A unit is the piece of input that sampling keeps or skips whole, sized so that deciding needs no
parsing: a byte range of an uncompressed JSON-lines file (a line belongs to the range its first
byte lies in), a whole compressed file (a gzip or zstd stream cannot be entered in the middle),
a Parquet row group (its size comes from the footer), a record batch of a `save_to_disk` file,
a .txt file, a range of documents of a Megatron dataset, a range of a flat token file (a
document belongs to the range its first id lies in). Each unit has a `measure`, its size in
bytes known before reading it, that the token estimate scales by.

Every error is a DataError whose one line names the source (`where`) and the file.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import zlib
from collections.abc import Iterator
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
READ_CHUNK = 1 << 20


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


def _parquet_file(path: str, where: str):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise DataError(f"{where}: {path} is not a readable Parquet file: {_first_line(exc)}") from None


def _parquet_units(item: InputFile, spec: ReadSpec) -> list[Unit]:
    parquet = _parquet_file(item.path, spec.where)
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


def _open_arrow(path: str, where: str):
    import pyarrow as pa

    try:
        source = pa.memory_map(path)
        try:
            return pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            return pa.ipc.open_file(source)
    except Exception as exc:
        raise DataError(f"{where}: {path} is not a readable Arrow file: {_first_line(exc)}") from None


def _arrow_batches(reader):
    if hasattr(reader, "num_record_batches"):  # the random-access file format
        for index in range(reader.num_record_batches):
            yield reader.get_batch(index)
    else:
        yield from reader


def _arrow_units(item: InputFile, spec: ReadSpec) -> list[Unit]:
    reader = _open_arrow(item.path, spec.where)
    text_path = _field_path(reader.schema, spec.text_field, item.path, spec.where)
    if spec.domain_field is not None:
        _field_path(reader.schema, spec.domain_field, item.path, spec.where)
    units, first_row = [], 0
    try:
        for index, batch in enumerate(_arrow_batches(reader)):
            measure = batch.column(text_path[0]).get_total_buffer_size()
            units.append(Unit(item.path, item.kind, index, index + 1, int(measure), first_row))
            first_row += batch.num_rows
    except Exception as exc:
        raise DataError(f"{spec.where}: {item.path} is damaged: {_first_line(exc)}") from None
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


# --------------------------------------------------------------------------------------------
# Reading one unit
# --------------------------------------------------------------------------------------------


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
        raise DataError(f"{spec.where}: {path} {where_in_file}: not valid JSON ({_first_line(exc)})") from None


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
            f"{spec.where}: {unit.path}: corrupt {compression} stream after line {number} ({_first_line(exc)})"
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
    parquet = _parquet_file(unit.path, spec.where)
    names = parquet.schema_arrow.names
    fields = [spec.text_field] + ([spec.domain_field] if spec.domain_field else [])
    columns = sorted({field if field in names else field.split(".")[0] for field in fields})
    try:
        table = parquet.read_row_group(unit.start, columns=columns)
    except Exception as exc:
        raise DataError(
            f"{spec.where}: {unit.path}: row group {unit.start} cannot be read: {_first_line(exc)}"
        ) from None
    yield from _table_records(table, unit, spec)


def _arrow_rows(unit: Unit, spec: ReadSpec) -> Iterator[TextRecord]:
    reader = _open_arrow(unit.path, spec.where)
    try:
        for index, batch in enumerate(_arrow_batches(reader)):
            if index == unit.start:
                break
        else:
            raise DataError(f"{spec.where}: {unit.path} has no record batch {unit.start} (it changed while being read)")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{spec.where}: {unit.path} is damaged: {_first_line(exc)}") from None
    yield from _table_records(batch, unit, spec)


def _txt_file(unit: Unit, spec: ReadSpec) -> Iterator[TextRecord]:
    try:
        text = Path(unit.path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{spec.where}: {unit.path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{spec.where}: cannot read {unit.path}: {exc.strerror or exc}") from None
    yield TextRecord(_relative(unit.path, spec.root), text, None)


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
