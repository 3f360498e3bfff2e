"""The run store: one Parquet table of proxy runs, append-only, rewritten atomically on each append.

Each row is one attempt at one proxy: its mixture (`w_<domain>`), `seed`, `preset`, training
`tokens`, validation losses on every domain and every eval set of the corpus (`loss_<name>` in
nats per token, `bpb_<name>` in bits per byte), `seconds`, `status` ("ok", "diverged", "failed")
and a `run_id` that keys the mixture, seed and training recipe, and the `corpus_version` it was
trained on. Rows are never changed or removed; a retried proxy adds a row. A study that finds an
"ok" row for a run_id does not train that proxy again, which is how every study resumes; a store
opened for a corpus whose data changed since its runs were trained (a rebuild that read other
package versions, edited source files) is refused rather than resumed on runs of other data.
Because each append replaces the file by rename, a driver killed at any moment leaves either the
previous table or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from mixopt.errors import StoreError
from mixopt.io import atomic_write_parquet

STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"
STATUS_FAILED = "failed"
STATUSES = (STATUS_OK, STATUS_DIVERGED, STATUS_FAILED)

_FIXED_COLUMNS = {
    "run_id": pl.String,
    "round": pl.Int64,
    "seed": pl.Int64,
    "preset": pl.String,
    "tokens": pl.Int64,
    "seconds": pl.Float64,
    "status": pl.String,
    "attempt": pl.Int64,
    "error": pl.String,
    "recipe": pl.String,
    "finished_at": pl.Float64,
    "corpus_version": pl.String,
}
_OPTIONAL_COLUMNS = ("corpus_version",)   # absent from stores written before it existed: read as null


def recipe_hash(recipe: dict) -> str:
    """A short stable hash of a training recipe (the proxy spec), for run keys."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_key(weights: np.ndarray, seed: int, recipe: str) -> str:
    """Key of one proxy: its mixture (to 12 decimals), its seed and its recipe hash."""
    mixture = ",".join(f"{w:.12f}" for w in np.asarray(weights, dtype=np.float64))
    return hashlib.sha256(f"{mixture}|{int(seed)}|{recipe}".encode()).hexdigest()[:20]


def weight_columns(domains: Sequence[str]) -> list[str]:
    return [f"w_{d}" for d in domains]


def loss_columns(domains: Sequence[str]) -> list[str]:
    return [f"loss_{d}" for d in domains]


def bpb_columns(domains: Sequence[str]) -> list[str]:
    return [f"bpb_{d}" for d in domains]


class RunStore:
    """runs.parquet for one study directory: weights over its domains, losses over its domains and
    eval sets (held-out sets that are not trained on)."""

    def __init__(self, path: str | Path, domains: Sequence[str], eval_sets: Sequence[str] = (),
                 corpus_version: str | None = None):
        self.path = Path(path)
        self.domains = list(domains)
        self.eval_sets = list(eval_sets)
        self.corpus_version = corpus_version
        self.schema = dict(_FIXED_COLUMNS)
        names = self.loss_names
        for column in weight_columns(self.domains) + loss_columns(names) + bpb_columns(names):
            self.schema[column] = pl.Float64
        self._remove_stale_temporaries()
        self._table = self._load()
        self._check_corpus_version()

    def _remove_stale_temporaries(self) -> None:
        if self.path.parent.is_dir():
            for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                pid = stale.name.rsplit(".", 2)[-2]
                if not pid.isdigit() or not _process_alive(int(pid)):
                    stale.unlink(missing_ok=True)

    def _load(self) -> pl.DataFrame:
        if not self.path.exists():
            return pl.DataFrame(schema=self.schema)
        try:
            table = pl.read_parquet(self.path)
        except Exception as exc:  # a foreign or damaged file: say so, never overwrite it
            raise StoreError(f"cannot read the run store {self.path}: {exc}") from exc
        table = table.with_columns([pl.lit(None, dtype=self.schema[c]).alias(c)
                                    for c in _OPTIONAL_COLUMNS if c not in table.columns])
        missing = [c for c in self.schema if c not in table.columns]
        if missing:
            raise StoreError(
                f"{self.path} belongs to another study (it lacks columns {missing[:4]}); "
                "choose another output directory"
            )
        return table.select([pl.col(c).cast(t) for c, t in self.schema.items()])

    def _check_corpus_version(self) -> None:
        if self.corpus_version is None:
            return
        other = sorted(set(self._table["corpus_version"].drop_nulls().to_list()) - {self.corpus_version})
        if other:
            raise StoreError(
                f"{self.path} holds runs trained on another version of the corpus ({', '.join(other)}; this "
                f"corpus is {self.corpus_version}): its data changed since, so those runs do not belong to this "
                "study; choose another output directory"
            )

    @property
    def loss_names(self) -> list[str]:
        """The sets each run is scored on: the domains, then the eval sets."""
        return self.domains + self.eval_sets

    @property
    def table(self) -> pl.DataFrame:
        return self._table

    def __len__(self) -> int:
        return self._table.height

    def append(self, rows: Sequence[dict]) -> None:
        """Append rows (dicts with any subset of the schema's columns) and persist atomically."""
        if not rows:
            return
        for row in rows:
            if row.get("status") not in STATUSES:
                raise StoreError(f"run status must be one of {STATUSES}, got {row.get('status')!r}")
            row.setdefault("finished_at", time.time())
            row.setdefault("corpus_version", self.corpus_version)
        new = pl.DataFrame([{c: row.get(c) for c in self.schema} for row in rows], schema=self.schema)
        combined = pl.concat([self._table, new], how="vertical")
        atomic_write_parquet(self.path, combined)
        self._table = combined

    def finished(self) -> pl.DataFrame:
        """The first "ok" row of each run_id (the result a resumed study reuses)."""
        return self._table.filter(pl.col("status") == STATUS_OK).unique("run_id", keep="first", maintain_order=True)

    def attempts(self, run_id: str) -> int:
        return self._table.filter(pl.col("run_id") == run_id).height

    def lookup(self, run_ids: Sequence[str]) -> pl.DataFrame:
        """Finished rows for these run_ids, in the order given (missing ids are left out)."""
        order = pl.DataFrame({"run_id": list(run_ids), "_order": np.arange(len(run_ids))})
        return order.join(self.finished(), on="run_id", how="inner").sort("_order").drop("_order")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
