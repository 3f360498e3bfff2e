"""Writing token shards and the manifest (the low-level half of `mixopt data prepare`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from mixopt.data.corpus import MANIFEST_COLUMNS, MANIFEST_NAME, SPLITS, TOKEN_DTYPE, Corpus, sha256_of_file
from mixopt.errors import DataError
from mixopt.io import atomic_write, atomic_write_parquet

BYTE_VOCAB_SIZE = 256
DEFAULT_SHARD_TOKENS = 1 << 24  # 16M tokens, 32 MB per shard


def byte_tokens(text: str | bytes) -> np.ndarray:
    """Byte-level tokenization: token id = UTF-8 byte value."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return np.frombuffer(data, dtype=np.uint8).astype(TOKEN_DTYPE)


def write_shards(
    directory: Path, domain: str, split: str, tokens: np.ndarray, shard_tokens: int = DEFAULT_SHARD_TOKENS
) -> list[tuple[str, int, str]]:
    """Write `tokens` as one or more shards; returns (relative path, tokens, sha256) per shard."""
    rows = []
    tokens = np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE)
    for index, start in enumerate(range(0, max(len(tokens), 1), shard_tokens)):
        relative = f"{domain}/{split}-{index:03d}.bin"
        piece = tokens[start : start + shard_tokens]
        path = atomic_write(directory / relative, lambda tmp, piece=piece: piece.tofile(tmp))
        rows.append((relative, int(len(piece)), sha256_of_file(path)))
    return rows


def write_corpus(
    directory: str | Path,
    splits: Mapping[str, Mapping[str, np.ndarray]],
    text_bytes: Mapping[str, Mapping[str, int]],
    sources: Mapping[str, str],
    licenses: Mapping[str, str],
    tokenizer: str = "bytes",
    vocab_size: int = BYTE_VOCAB_SIZE,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
) -> Corpus:
    """Write a corpus from token arrays already split per domain: splits[domain]["train"|"val"].

    text_bytes[domain][split] is the number of UTF-8 bytes those tokens encode. The manifest is
    written last, so a directory with a manifest always has every shard it names.
    """
    directory = Path(directory)
    records = []
    for domain, by_split in splits.items():
        domain_tokens = sum(len(by_split.get(split, ())) for split in SPLITS)  # read whole: exact
        for split in SPLITS:
            if split not in by_split or len(by_split[split]) == 0:
                raise DataError(f"domain {domain!r} has no {split} tokens")
            for relative, n_tokens, digest in write_shards(directory, domain, split, by_split[split], shard_tokens):
                share = n_tokens / len(by_split[split])
                records.append(
                    {
                        "domain": domain,
                        "split": split,
                        "path": relative,
                        "tokens": n_tokens,
                        "bytes": int(round(text_bytes[domain][split] * share)),
                        "sha256": digest,
                        "source": sources[domain],
                        "license": licenses[domain],
                        "tokenizer": tokenizer,
                        "vocab_size": vocab_size,
                        "dtype": "uint16",
                        "role": "train",
                        "domain_tokens": domain_tokens,
                        "domain_tokens_low": domain_tokens,
                        "domain_tokens_high": domain_tokens,
                    }
                )
    manifest = pl.DataFrame(records, schema=MANIFEST_COLUMNS)
    atomic_write_parquet(directory / MANIFEST_NAME, manifest)
    return Corpus.open(directory, verify="none")


def write_byte_corpus(
    directory: str | Path,
    texts: Mapping[str, Mapping[str, Sequence[str] | str]],
    sources: Mapping[str, str] | None = None,
    licenses: Mapping[str, str] | None = None,
) -> Corpus:
    """A byte-level corpus from text: texts[domain]["train"|"val"] is a string or a list of documents
    (joined with a blank line). Convenient for tests and small corpora."""
    splits, sizes = {}, {}
    for domain, by_split in texts.items():
        splits[domain], sizes[domain] = {}, {}
        for split in SPLITS:
            text = by_split[split]
            if not isinstance(text, str):
                text = "\n\n".join(text)
            data = text.encode("utf-8")
            splits[domain][split] = byte_tokens(data)
            sizes[domain][split] = len(data)
    sources = sources or {d: "inline" for d in texts}
    licenses = licenses or {d: "unknown" for d in texts}
    return write_corpus(directory, splits, sizes, sources, licenses)
