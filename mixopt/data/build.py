"""Preparing a corpus from the study config's own sources (`data.sources`, `data.split`,
`data.eval`): sampled, tokenized in parallel on Ray, written as shards with a manifest.

    result = prepare_from_config(config.data, sample_size(config), log=print)
    result.corpus.domains, result.corpus.eval_sets, result.corpus.domain_tokens()

Flow. Every source is planned first (files listed, units sized from file sizes and footers; see
readers.py), which is where a glob that matches nothing, a missing column or an unreadable
tokenizer is reported. Then the units of every source are read in their random order (sample.py)
by tasks of about TASK_BYTES of text each (a compressed file counts four times its size),
several per CPU of the Ray cluster in flight at once
(encode.py does one task). The driver takes the results in each source's order, whatever the
order they finish in, appends the training tokens to the domain's shards as they come and puts
the validation candidates aside on disk, and stops a source as soon as its domains hold the
tokens the study needs; tasks sent ahead of that are let finish and their results dropped (never
ray.cancel'ed: a cancellation that races a task's completion can abort the driver inside Ray's
task manager). Memory stays bounded by the tasks in flight, whatever the size of the input, and
the result is the same on one machine or a cluster.

Validation split. The candidates of a domain (encode.py) are taken lowest draw first until the
split holds min(val_tokens, val_fraction x the domain's tokens read), at least one piece; those
left over join the training split. Eval sets (`data.eval`) have a validation split only.

The corpus. Shards are uint16 or uint32 (the tokenizer's vocabulary decides), every document
followed by the tokenizer's end-of-text id (the byte tokenizer's is 0x00); pre-tokenized ids are
copied as stored. manifest.parquet records per shard its tokenizer, vocabulary and dtype, its
role (train: a domain, eval: an eval set) and the domain's total tokens in the source with its
95% interval (low = high when exact); prepare.json records what every source read and the
estimate's standard error.

Idempotence: prepare.json records the settings and, for every input file, its path, size and
modification time (never a hash of the data). A later call with the same settings and inputs,
whose shards have the sizes the manifest gives, does nothing. A build writes into a staging
folder inside the corpus folder and replaces the corpus only when it has succeeded: a failed or
interrupted build leaves the old corpus as it was (or none, never a manifest naming missing
shards).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from mixopt.cluster import init_ray
from mixopt.data.corpus import MANIFEST_COLUMNS, MANIFEST_NAME, Corpus
from mixopt.data.encode import DomainPart, PieceSettings, TaskResult, run_task
from mixopt.data.prepare import DOMAIN_NAME, PREPARE_NAME, PrepareResult, prepare_corpus
from mixopt.data.readers import InputFile, ReadSpec, Unit, find_pretokenized, find_text_files, plan_units
from mixopt.data.sample import (
    MIN_SAMPLED_UNITS,
    READ_REST_SHARE,
    TASK_BYTES,
    SampleSize,
    Stratum,
    TokenEstimate,
    chunk_tasks,
    estimate_total,
    exact,
    unit_order,
)
from mixopt.data.shards import DEFAULT_SHARD_TOKENS
from mixopt.data.tokenizer import Tokenizer, TokenizerSpec, from_spec, tokenizer_spec
from mixopt.errors import ConfigError, DataError, MixoptError
from mixopt.io import atomic_write_json, atomic_write_parquet

BUILD_FORMAT = 1  # bump when sampling, splitting or the shard layout changes
DEFAULT_VAL_FRACTION = 0.05
MIN_PIECE_BYTES = 1024
MAX_PIECE_BYTES = 64 * 1024
VAL_CANDIDATES_PER_TARGET = 4
VAL_MIN_CANDIDATES = 12
TASKS_IN_FLIGHT_PER_CPU = 2
CANDIDATES_FILE = ".candidates.bin"
COMPRESSED = ("jsonl.gz", "jsonl.zst")
TEXT_PER_COMPRESSED_BYTE = 4  # a rough guess: sizes tasks and pieces, never results

Log = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


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


def _expected_text_bytes(source: Source, need: int | None) -> int:
    """A rough size of the text a source will yield (compressed files hold about 4 bytes of text
    per byte; a token about 4 bytes): it sizes pieces and the candidate rate, never the result's
    correctness."""
    size = sum(u.measure * (TEXT_PER_COMPRESSED_BYTE if u.kind in COMPRESSED else 1) for u in source.units)
    return int(size if need is None else min(size, 4 * need))


def _piece_bytes(val_target_bytes: int) -> int:
    """Pieces of about an eighth of the validation split, a power of two in [1 KiB, 64 KiB]."""
    wanted = max(val_target_bytes // 8, 1)
    return min(max(1 << (wanted.bit_length() - 1), MIN_PIECE_BYTES), MAX_PIECE_BYTES)


def _val_rate(val_fraction: float, val_target_bytes: int, piece_bytes: int, expected_bytes: int) -> float:
    """The share of pieces drawn as validation candidates: enough for the split (several times
    its target, and at least VAL_MIN_CANDIDATES pieces in expectation), at least val_fraction."""
    pieces = max(expected_bytes / piece_bytes, 1.0)
    wanted = max(VAL_CANDIDATES_PER_TARGET * val_target_bytes / max(expected_bytes, 1), VAL_MIN_CANDIDATES / pieces)
    return float(min(0.5, max(val_fraction, wanted)))


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


# --------------------------------------------------------------------------------------------
# Writing shards
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Executors: Ray tasks, or in process (tests of pure logic, tiny inputs)
# --------------------------------------------------------------------------------------------


class LocalExecutor:
    """Runs each task when it is submitted; results come back in submission order."""

    def __init__(self, tokenizer: TokenizerSpec):
        self.tokenizer = tokenizer
        self.done: dict[int, TaskResult] = {}
        self.counter = 0
        self.slots = 1

    def submit(self, spec: ReadSpec, units: list[Unit], settings: PieceSettings) -> int:
        self.counter += 1
        self.done[self.counter] = run_task(spec, units, self.tokenizer, settings)
        return self.counter

    def wait_one(self, handles) -> tuple[int, TaskResult]:
        handle = min(handles)
        return handle, self.done.pop(handle)

    def forget(self, handle) -> None:
        self.done.pop(handle, None)


class RayExecutor:
    """One Ray task per group of units (1 CPU each, the tokenizer's own threads held to one)."""

    def __init__(self, tokenizer: TokenizerSpec):
        import ray

        self.ray = ray
        self.tokenizer_ref = ray.put(tokenizer)
        self.remote = ray.remote(
            num_cpus=1, max_retries=2, retry_exceptions=False, runtime_env={"env_vars": {"RAYON_NUM_THREADS": "1"}}
        )(run_task)
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1)) * TASKS_IN_FLIGHT_PER_CPU)

    def submit(self, spec: ReadSpec, units: list[Unit], settings: PieceSettings):
        return self.remote.remote(spec, units, self.tokenizer_ref, settings)

    def wait_one(self, handles):
        ready, _ = self.ray.wait(list(handles), num_returns=1)
        try:
            return ready[0], self.ray.get(ready[0])
        except self.ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, MixoptError):
                raise exc.cause from None
            raise

    def forget(self, handle) -> None:
        """Drop a task's result unread: the task runs to its end and Ray frees what it returns. Not
        ray.cancel: cancelling a task while it completes can abort the driver (a failed check,
        "Tried to complete task that was not pending", in Ray's task manager)."""


# --------------------------------------------------------------------------------------------
# Reading one source: in order, until it holds enough
# --------------------------------------------------------------------------------------------


class SourceRun:
    """The state of one source while it is read: tasks sent, results taken in order, when to stop."""

    def __init__(
        self,
        source: Source,
        sample: SampleSize,
        seed: int,
        val_fraction: float,
        task_bytes: int,
        make_writer: Callable[[str, str], DomainWriter],
    ):
        self.source, self.sample = source, sample
        measures = source.measures
        self.total_measure = int(measures.sum())
        text_sizes = np.array(
            [u.measure * (TEXT_PER_COMPRESSED_BYTE if u.kind in COMPRESSED else 1) for u in source.units]
        )
        self.tasks = chunk_tasks(unit_order(len(source.units), seed, source.label), text_sizes, task_bytes)
        self.task_measures = [int(measures[t].sum()) for t in self.tasks]
        expected = _expected_text_bytes(source, sample.need_for(source.domain or "", source.role))
        val_target = (
            min(sample.val_tokens, int(val_fraction * expected)) if source.role == "train" else sample.val_tokens
        )
        piece_bytes = _piece_bytes(val_target)
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


# --------------------------------------------------------------------------------------------
# build_corpus
# --------------------------------------------------------------------------------------------


def _log(log: Log | None, line: str) -> None:
    if log is not None:
        log(line)


def _current(out_dir: Path, settings: dict) -> tuple[Corpus | None, str]:
    if not (out_dir / MANIFEST_NAME).is_file():
        return None, "no corpus there yet"
    try:
        recorded = json.loads((out_dir / PREPARE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, f"{PREPARE_NAME} is missing or unreadable"
    if not isinstance(recorded, dict) or recorded.get("settings") != json.loads(json.dumps(settings)):
        return None, "it was prepared from other sources, settings or input files"
    try:
        return Corpus.open(out_dir, verify="size"), ""
    except DataError as exc:
        return None, str(exc)


def _corpus_order(runs: list[SourceRun]) -> list[str]:
    """Domain and eval set names in corpus order: entries in config order, split domains by name."""
    names = [run.source.domain for run in runs if run.source.domain is not None]
    for run in runs:
        if run.source.domain is None:
            names.extend(sorted(run.writers))
    return names


def build_corpus(
    out_dir: str | os.PathLike,
    data,
    sample: SampleSize | None = None,
    *,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    force: bool = False,
    executor: str = "ray",
    ray_address: str | None = None,
    num_cpus: int | None = None,
    unit_bytes: int | None = None,
    task_bytes: int = TASK_BYTES,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    log: Log | None = None,
) -> PrepareResult:
    """Build (or find up to date) the corpus of a DataConfig's sources in `out_dir`.

    sample: tokens per domain (sample.sample_size(config) for a study; None: read every source
    whole). seed: the order units are read in. executor: "ray" (tasks on the cluster; a running
    Ray is reused, else ray_address / RAY_ADDRESS, else a local one of num_cpus) or "local" (in
    this process). unit_bytes / task_bytes: the size of a JSON-lines unit and of a task's input
    (tests make them small). Raises DataError naming the source and file for bad input.
    """
    started = time.perf_counter()
    sample = sample or SampleSize()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output {out_dir} exists and is not a directory")
    if not (0.0 < val_fraction < 0.5):
        raise ValueError(f"val_fraction must be in (0, 0.5), not {val_fraction!r}")
    tok_spec = tokenizer_spec(data.tokenizer)
    tokenizer = from_spec(tok_spec)
    sources = plan_sources(data, tokenizer, unit_bytes)
    settings = {
        "format": BUILD_FORMAT,
        "tokenizer": {"name": tokenizer.name, "sha256": tok_spec.sha256},
        "sources": [s.key for s in sources],
        "inputs": inputs_fingerprint(sources),
        "sample": sample.key(),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "unit_bytes": unit_bytes,
        "task_bytes": int(task_bytes),
    }
    if not force:
        corpus, reason = _current(out_dir, settings)
        if corpus is not None:
            _log(
                log,
                f"{out_dir}: up to date ({len(corpus.domains)} domains, "
                f"{len(corpus.eval_sets)} eval sets), nothing to do",
            )
            return PrepareResult(
                corpus=corpus, did_work=False, seconds=time.perf_counter() - started, settings=settings
            )
        _log(log, f"building {out_dir}: {reason}")
    else:
        _log(log, f"building {out_dir} (forced)")
    for source in sources:
        files_bytes = sum(f.size for f in source.files)
        _log(
            log,
            f"{source.spec.where}: {len(source.files)} files, {files_bytes / 1e6:.1f} MB, {len(source.units)} units",
        )

    _remove_dead_stagings(out_dir)
    staging = out_dir / f".staging-{os.getpid()}"
    staging.mkdir(parents=True)
    runs: list[SourceRun] = []
    try:
        if executor == "ray":
            init_ray(ray_address, num_cpus)
            pool = RayExecutor(tok_spec)
        elif executor == "local":
            pool = LocalExecutor(tok_spec)
        else:
            raise ValueError(f"executor must be ray or local, not {executor!r}")

        created: dict[str, str] = {}

        def make_writer(name: str, source: Source) -> DomainWriter:
            if not DOMAIN_NAME.fullmatch(name):
                raise DataError(
                    f"{source.spec.where}: {name!r} is not a usable domain name "
                    "(letters, digits, '_', '.' and '-', starting with a letter or digit)"
                )
            if name in created:
                raise DataError(f"domain {name!r} comes from both {created[name]} and {source.spec.where}")
            created[name] = source.spec.where
            return DomainWriter(staging, name, source.role, tokenizer.dtype, shard_tokens)

        runs = [SourceRun(s, sample, seed, val_fraction, task_bytes, make_writer) for s in sources]
        _run_all(runs, pool, log)
        names = _corpus_order(runs)
        frame, details = _finish(runs, names, sample, val_fraction, tokenizer, log)
        corpus = _install(out_dir, staging, frame, names, details, settings, tokenizer, started)
    except BaseException:
        for run in runs:
            for writer in run.writers.values():
                writer.abandon()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    _log(log, f"wrote {corpus.manifest.height} shards and {MANIFEST_NAME} in {seconds:.1f}s")
    return PrepareResult(corpus=corpus, did_work=True, seconds=seconds, settings=settings)


def _remove_dead_stagings(out_dir: Path) -> None:
    """Staging folders of builds that were killed (their process is gone)."""
    for path in out_dir.glob(".staging-*") if out_dir.is_dir() else []:
        try:
            os.kill(int(path.name.rpartition("-")[2]), 0)
            if int(path.name.rpartition("-")[2]) != os.getpid():
                continue
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        shutil.rmtree(path, ignore_errors=True)


def _run_all(runs: list[SourceRun], pool, log: Log | None) -> None:
    """Send tasks of every source (round robin, at most pool.slots in flight), take results."""
    in_flight: dict = {}
    try:
        while True:
            sent = True
            while sent and len(in_flight) < pool.slots:
                sent = False
                for run in runs:
                    if len(in_flight) < pool.slots and run.wants_task():
                        handle, index = run.submit(pool)
                        in_flight[handle] = (run, index)
                        sent = True
            if not in_flight:
                break
            handle, result = pool.wait_one(list(in_flight))
            run, index = in_flight.pop(handle)
            if run.receive(index, result):
                for other, (owner, _) in list(in_flight.items()):
                    if owner is run:
                        pool.forget(other)
                        del in_flight[other]
                        owner.in_flight.clear()
    except BaseException:
        for handle in in_flight:
            pool.forget(handle)
        raise
    for run in runs:
        if not run.writers:
            files = ", ".join(sorted({Path(f.path).name for f in run.source.files})[:3])
            raise DataError(f"{run.source.spec.where}: no documents in {len(run.source.files)} files ({files})")


def _finish(
    runs: list[SourceRun],
    names: list[str],
    sample: SampleSize,
    val_fraction: float,
    tokenizer: Tokenizer,
    log: Log | None,
) -> tuple[pl.DataFrame, dict]:
    records, details = [], {}
    for run in runs:
        for name, writer in run.writers.items():
            estimate = run.estimate(name)
            read_tokens = writer.tokens
            val_tokens = sample.val_tokens if sample.train_tokens is not None or run.source.role == "train" else None
            train_rows, val_rows = writer.finish(val_tokens, val_fraction)
            source = run.source.description + (f"={name}" if run.source.domain is None else "")
            for split, rows in (("train", train_rows), ("val", val_rows)):
                for row in rows:
                    records.append({
                        "domain": name, "split": split, "path": row["path"], "tokens": row["tokens"],
                        "bytes": row["bytes"], "sha256": row["sha256"], "source": source, "license": "unknown",
                        "tokenizer": tokenizer.name, "vocab_size": tokenizer.vocab_size, "dtype": tokenizer.dtype.name,
                        "role": run.source.role, "domain_tokens": estimate.tokens,
                        "domain_tokens_low": estimate.low, "domain_tokens_high": estimate.high,
                    })  # fmt: skip
            train = sum(r["tokens"] for r in train_rows)
            val = sum(r["tokens"] for r in val_rows)
            details[name] = {
                "source": source,
                "role": run.source.role,
                "files": len(run.source.files),
                "documents_read": writer.documents,
                "text_bytes_read": writer.text_bytes,
                "tokens_read": read_tokens,
                "train_tokens": train,
                "val_tokens": val,
                "tokens_per_byte": round(read_tokens / writer.text_bytes, 6) if writer.text_bytes else None,
                "measure_read": run.measure_read,
                "measure": run.total_measure,
                "estimate": estimate.as_dict(),
            }
            spread = (
                "exact"
                if estimate.exact
                else f"95% {estimate.low:,}-{estimate.high:,}, {estimate.units_read}/{estimate.units} units"
            )
            _log(log, f"{name:<13} {train + val:>12,} tokens (val {val:,}) {writer.documents:,} documents; "
                      f"source holds {estimate.tokens:,} tokens ({spread})")  # fmt: skip
    frame = pl.DataFrame(records, schema=MANIFEST_COLUMNS)
    order = {name: i for i, name in enumerate(names)}
    frame = frame.with_columns(pl.col("domain").replace_strict(order, return_dtype=pl.Int64).alias("_order"))
    frame = frame.sort(["_order", "split", "path"], maintain_order=True).drop("_order")
    return frame, {name: details[name] for name in names}


def _install(
    out_dir: Path,
    staging: Path,
    frame: pl.DataFrame,
    names: list[str],
    details: dict,
    settings: dict,
    tokenizer: Tokenizer,
    started: float,
) -> Corpus:
    """Replace the corpus in out_dir by the staged one: old manifest off first, new one last."""
    old_domains: list[str] = []
    if (out_dir / MANIFEST_NAME).is_file():
        try:
            old_domains = pl.read_parquet(out_dir / MANIFEST_NAME, columns=["domain"])["domain"].unique().to_list()
        except Exception:  # a damaged manifest: nothing of it to clean up
            old_domains = []
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    (out_dir / PREPARE_NAME).unlink(missing_ok=True)
    for name in set(old_domains) | set(names):
        target = out_dir / name
        if target.is_dir() and DOMAIN_NAME.fullmatch(name):
            shutil.rmtree(target)
    for name in names:
        os.replace(staging / name, out_dir / name)
    shutil.rmtree(staging, ignore_errors=True)
    atomic_write_parquet(out_dir / MANIFEST_NAME, frame)
    record = {
        "settings": settings,
        "format": BUILD_FORMAT,
        "source": "sources",
        "domains": [n for n in names if details[n]["role"] == "train"],
        "eval_sets": [n for n in names if details[n]["role"] == "eval"],
        "tokenizer": tokenizer.name,
        "vocab_size": tokenizer.vocab_size,
        "dtype": tokenizer.dtype.name,
        "eos_id": tokenizer.eos_id,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 3),
        "domain_details": details,
    }
    atomic_write_json(out_dir / PREPARE_NAME, record)
    return Corpus.open(out_dir, verify="none")


# --------------------------------------------------------------------------------------------
# Entry points for the pipeline and the CLI
# --------------------------------------------------------------------------------------------


def has_sources(data) -> bool:
    """Whether a DataConfig names its own sources (else: `prepare:` or an existing corpus)."""
    return bool(data.sources or data.split or data.eval)


def prepare_from_config(
    data, sample: SampleSize | None = None, *, force: bool = False, log: Log | None = None, **options
) -> PrepareResult:
    """The corpus a DataConfig describes, built when missing or stale, else opened as it is.

    With `sources` / `split` / `eval`: build_corpus (options: seed, executor, ray_address, ...).
    With `prepare:` default | fixture | DIR: the byte-level corpus of prepare.prepare_corpus.
    With neither: the corpus at data.corpus must exist. Idempotent."""
    started = time.perf_counter()
    if has_sources(data):
        return build_corpus(data.corpus, data, sample, force=force, log=log, **options)
    if data.prepare:
        return prepare_corpus(data.corpus, source=data.prepare, force=force, log=log)
    corpus = Corpus.open(data.corpus, verify=data.verify)
    return PrepareResult(corpus=corpus, did_work=False, seconds=time.perf_counter() - started)


def check_objective(
    weights: Mapping[str, float] | None, domains: Sequence[str], eval_sets: Sequence[str] = (), source: str = "config"
) -> None:
    """ConfigError when objective.weights names a set that is neither a domain nor an eval set."""
    if not weights:
        return
    known = list(domains) + list(eval_sets)
    unknown = [name for name in weights if name not in known]
    if unknown:
        raise ConfigError(
            f"{source}: objective.weights: {unknown[0]!r} is neither a domain nor an eval set "
            f"(domains: {', '.join(domains) or 'none'}; eval sets: {', '.join(eval_sets) or 'none'})"
        )
