"""Building a corpus from the study config's own sources (`data.sources`, `data.split`,
`data.eval`): sampled, tokenized in parallel on Ray, written as shards with a manifest.

    result = prepare_from_config(config.data, sample_size(config), log=print)
    result.corpus.domains, result.corpus.eval_sets, result.corpus.domain_tokens()

Flow, one module per step:
1. source_plan.py: every source is planned (files listed, units sized from file sizes and
   footers; units.py), which is where a glob that matches nothing, a missing column or an
   unreadable tokenizer is reported.
2. source_run.py: the units of every source are read in their random order (sample.py) by tasks
   of about TASK_BYTES of text each (a compressed file counts four times its size), several per
   CPU of the Ray cluster in flight at once (executors.py; encode.py does one task). The driver
   (here) takes the results in each source's order, whatever the order they finish in, and
   stops a source as soon as its domains hold the tokens the study needs; tasks sent ahead of
   that are let finish and their results dropped (never ray.cancel'ed: a cancellation that
   races a task's completion can abort the driver inside Ray's task manager).
3. writers.py: the training tokens are appended to the domain's shards as they come, the
   validation candidates put aside on disk, and the validation split chosen once it is read.
4. Here: the manifest and prepare.json are written and the new corpus is installed.
Memory stays bounded by the tasks in flight, whatever the size of the input, and the result is
the same on one machine or a cluster.

The corpus. manifest.parquet records per shard its tokenizer, vocabulary and dtype, its role
(train: a domain, eval: an eval set) and the domain's total tokens in the source with its 95%
interval (low = high when exact); prepare.json records what every source read and the
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
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from mixopt.cluster import init_ray
from mixopt.data.corpus import DOMAIN_NAME, MANIFEST_COLUMNS, MANIFEST_NAME, Corpus
from mixopt.data.executors import LocalExecutor, RayExecutor
from mixopt.data.pieces import DEFAULT_VAL_FRACTION
from mixopt.data.prepare import PREPARE_NAME, Log, PrepareResult, current_corpus, prepare_corpus
from mixopt.data.sample import TASK_BYTES, SampleSize
from mixopt.data.shards import DEFAULT_SHARD_TOKENS
from mixopt.data.source_plan import Source, inputs_fingerprint, plan_sources
from mixopt.data.source_run import SourceRun
from mixopt.data.tokenizer import Tokenizer, from_spec, tokenizer_spec
from mixopt.data.writers import DomainWriter
from mixopt.errors import ConfigError, DataError
from mixopt.io import atomic_write_json, atomic_write_parquet

BUILD_FORMAT = 1  # bump when sampling, splitting or the shard layout changes


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
    log = log or (lambda line: None)
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
        expected = json.loads(json.dumps(settings))  # as prepare.json holds it
        corpus, reason = current_corpus(
            out_dir,
            lambda recorded: recorded.get("settings") == expected,
            "it was prepared from other sources, settings or input files",
        )
        if corpus is not None:
            log(
                f"{out_dir}: up to date ({len(corpus.domains)} domains, "
                f"{len(corpus.eval_sets)} eval sets), nothing to do"
            )
            return PrepareResult(
                corpus=corpus, did_work=False, seconds=time.perf_counter() - started, settings=settings
            )
        log(f"building {out_dir}: {reason}")
    else:
        log(f"building {out_dir} (forced)")
    for source in sources:
        files_bytes = sum(f.size for f in source.files)
        log(f"{source.spec.where}: {len(source.files)} files, {files_bytes / 1e6:.1f} MB, {len(source.units)} units")

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
        _run_all(runs, pool)
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
    log(f"wrote {corpus.manifest.height} shards and {MANIFEST_NAME} in {seconds:.1f}s")
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


def _run_all(runs: list[SourceRun], pool) -> None:
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
    log: Log,
) -> tuple[pl.DataFrame, dict]:
    """Every domain's validation split chosen and shards closed: the manifest (in corpus order)
    and each domain's details for prepare.json."""
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
            log(f"{name:<13} {train + val:>12,} tokens (val {val:,}) {writer.documents:,} documents; "
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
