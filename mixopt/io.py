"""Atomic artifact writes: every file goes to a temporary sibling first, then is renamed into place.

A reader (or a driver killed with SIGKILL at any moment) sees either the old file or the new one,
never a half-written one. The temporary name carries the process id so that concurrent writers in
one directory do not collide.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mixopt.errors import InputError, StoreError


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` to produce the file, fsync it, then rename it onto `path`."""
    path = Path(path)
    tmp = _temporary_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, allow_nan=False) + "\n")


def read_input_json(path: str | os.PathLike, label: str) -> Any:
    """The JSON document a user points at; InputError prefixed with `label` if it cannot be read."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{label}: cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{label}: {path} is not valid JSON: {exc}") from None


def read_reusable_json(path: str | os.PathLike, key: Any) -> dict | None:
    """The JSON object an earlier run wrote to `path` for the same `key` (its "key" entry, compared
    after a JSON round trip of `key`), so that the work behind it need not be done again; None when
    there is no such file, it cannot be read or parsed (the work is redone and the file rewritten),
    or it was written for another key."""
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("key") != json.loads(json.dumps(key)):
        return None
    return saved


def json_ready(value: Any) -> Any:
    """A copy of value with NaN and infinities replaced by None (strict JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def atomic_write_parquet(path: str | os.PathLike, frame) -> Path:
    """Write a polars DataFrame as Parquet, atomically."""
    return atomic_write(path, lambda tmp: frame.write_parquet(tmp))
