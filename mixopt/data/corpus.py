"""Reading a prepared corpus: manifest.parquet plus memory-mapped token shards.

Layout of a corpus directory (written by mixopt/data/prepare.py for the embedded corpora and by
mixopt/data/build.py for a study's own sources):

    <dir>/manifest.parquet        one row per shard, columns MANIFEST_COLUMNS
    <dir>/<domain>/train-000.bin  raw little-endian token ids (the manifest's dtype)
    <dir>/<domain>/val-000.bin    the fixed validation split of that domain

Every domain (role "train") has at least one train and one val shard; an eval set (role "eval":
held out, never trained on) has val shards only. `tokens` is the number of token ids in the
shard, `bytes` the number of UTF-8 bytes of text they encode (for bits per byte), `sha256` the
hash of the shard file, `dtype` uint16 or uint32 (from the vocabulary), `domain_tokens` the
tokens the domain's whole source holds (exact, or estimated from a sample with its 95% interval
`domain_tokens_low` .. `domain_tokens_high`). Manifests written before the last five columns
existed read as uint16, role "train", and the shards' own token counts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mixopt.errors import DataError

MANIFEST_NAME = "manifest.parquet"
TOKEN_DTYPE = np.dtype("<u2")
SPLITS = ("train", "val")
MANIFEST_COLUMNS = {
    "domain": pl.String,
    "split": pl.String,
    "path": pl.String,
    "tokens": pl.Int64,
    "bytes": pl.Int64,
    "sha256": pl.String,
    "source": pl.String,
    "license": pl.String,
    "tokenizer": pl.String,
    "vocab_size": pl.Int64,
    "dtype": pl.String,
    "role": pl.String,
    "domain_tokens": pl.Int64,
    "domain_tokens_low": pl.Int64,
    "domain_tokens_high": pl.Int64,
}
REQUIRED_COLUMNS = (
    "domain", "split", "path", "tokens", "bytes", "sha256", "source", "license", "tokenizer", "vocab_size",
)
TOKEN_DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
ROLES = ("train", "eval")
DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a domain's folder name


@dataclass(frozen=True)
class DomainTokens:
    """The tokens a domain's whole source holds: exact (low == high) or a sample's estimate with
    its 95% interval."""

    tokens: int
    low: int
    high: int

    @property
    def exact(self) -> bool:
        return self.low == self.high


def _with_defaults(manifest: pl.DataFrame) -> pl.DataFrame:
    """A manifest of an older format with the newer columns filled in (uint16, role train, the
    domain's shard tokens as its exact total)."""
    if "dtype" not in manifest.columns:
        manifest = manifest.with_columns(pl.lit("uint16").alias("dtype"))
    if "role" not in manifest.columns:
        manifest = manifest.with_columns(pl.lit("train").alias("role"))
    if "domain_tokens" not in manifest.columns:
        total = pl.col("tokens").sum().over("domain")
        manifest = manifest.with_columns(
            total.alias("domain_tokens"), total.alias("domain_tokens_low"), total.alias("domain_tokens_high")
        )
    return manifest.select([pl.col(c).cast(t) for c, t in MANIFEST_COLUMNS.items()])


def sha256_of_file(path: str | Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


class TokenStream:
    """The shards of one domain and split seen as one sampling space of fixed-length windows.

    `window(i, length)` returns the i-th window start drawn from a uniform distribution over every
    valid start position of every shard (windows never cross a shard boundary).
    """

    def __init__(self, shards: list[np.ndarray]):
        if not shards:
            raise DataError("a token stream needs at least one shard")
        self.shards = shards
        self.sizes = np.array([len(s) for s in shards], dtype=np.int64)

    @property
    def tokens(self) -> int:
        return int(self.sizes.sum())

    def valid_starts(self, length: int) -> np.ndarray:
        """Number of valid window starts in each shard for windows of `length` tokens."""
        return np.maximum(self.sizes - length + 1, 0)

    def windows(self, uniforms: np.ndarray, length: int) -> np.ndarray:
        """Windows of `length` tokens at positions given by uniforms in [0, 1): (n, length) int64."""
        starts_per_shard = self.valid_starts(length)
        total = int(starts_per_shard.sum())
        if total <= 0:
            raise DataError(f"stream of {self.tokens} tokens is too short for windows of {length}")
        flat = np.minimum((np.asarray(uniforms) * total).astype(np.int64), total - 1)
        bounds = np.cumsum(starts_per_shard)
        shard_index = np.searchsorted(bounds, flat, side="right")
        offsets = flat - (bounds - starts_per_shard)[shard_index]
        out = np.empty((len(flat), length), dtype=np.int64)
        for row, (s, o) in enumerate(zip(shard_index, offsets)):
            out[row] = self.shards[s][o : o + length]
        return out

    def head(self, n_windows: int, length: int) -> np.ndarray:
        """The first n non-overlapping windows (the same held-out tokens for every proxy)."""
        rows = []
        for shard in self.shards:
            for start in range(0, len(shard) - length + 1, length):
                rows.append(np.asarray(shard[start : start + length], dtype=np.int64))
                if len(rows) == n_windows:
                    return np.stack(rows)
        if not rows:
            raise DataError(f"stream of {self.tokens} tokens is too short for windows of {length}")
        return np.stack(rows)


@dataclass(frozen=True)
class Corpus:
    """A prepared corpus opened for reading. Shards are memory-mapped, never loaded whole."""

    directory: Path
    manifest: pl.DataFrame

    @classmethod
    def open(cls, directory: str | Path, verify: str = "size") -> "Corpus":
        """Open a corpus directory. verify: "none", "size" (shard sizes against the manifest) or
        "sha256" (sizes and hashes). Raises DataError naming the first problem found."""
        if verify not in ("none", "size", "sha256"):
            raise ValueError(f"verify must be none, size or sha256, not {verify!r}")
        directory = Path(directory)
        manifest_path = directory / MANIFEST_NAME
        if not manifest_path.is_file():
            raise DataError(f"no corpus at {directory}: {MANIFEST_NAME} is missing (run `mixopt data prepare`)")
        try:
            manifest = pl.read_parquet(manifest_path)
        except Exception as exc:  # polars raises several types for a damaged file
            raise DataError(f"cannot read {manifest_path}: {exc}") from exc
        missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
        if missing:
            raise DataError(f"{manifest_path} lacks columns {missing}")
        try:
            manifest = _with_defaults(manifest)
        except Exception as exc:  # a column of the wrong type
            raise DataError(f"{manifest_path} has a column of the wrong type: {exc}") from exc
        corpus = cls(directory=directory, manifest=manifest)
        corpus._check_structure()
        if verify != "none":
            corpus.verify(hashes=(verify == "sha256"))
        return corpus

    def _check_structure(self) -> None:
        bad_roles = set(self.manifest["role"].unique().to_list()) - set(ROLES)
        if bad_roles:
            raise DataError(f"corpus {self.directory}: unknown role {sorted(bad_roles)[0]!r} in the manifest")
        bad_dtypes = set(self.manifest["dtype"].unique().to_list()) - set(TOKEN_DTYPES)
        if bad_dtypes or self.manifest["dtype"].n_unique() != 1:
            raise DataError(f"corpus {self.directory}: shards must share one dtype of {sorted(TOKEN_DTYPES)}")
        for domain in self.domains:
            for split in SPLITS:
                rows = self.manifest.filter((pl.col("domain") == domain) & (pl.col("split") == split))
                if rows.height == 0:
                    raise DataError(f"corpus {self.directory}: domain {domain!r} has no {split} shard")
        for name in self.eval_sets:
            if name in self.domains:
                raise DataError(f"corpus {self.directory}: {name!r} is both a domain and an eval set")
            if self.manifest.filter((pl.col("domain") == name) & (pl.col("split") == "val")).height == 0:
                raise DataError(f"corpus {self.directory}: eval set {name!r} has no val shard")
        for path in self.manifest["path"]:
            resolved = (self.directory / path).resolve()
            if not resolved.is_relative_to(self.directory.resolve()):
                raise DataError(f"manifest path {path!r} points outside the corpus directory")
        if self.manifest["vocab_size"].n_unique() != 1:
            raise DataError("manifest mixes shards of different vocabularies")

    def verify(self, hashes: bool = False) -> None:
        """Check every shard's size (and hash) against the manifest; DataError on the first mismatch."""
        itemsize = self.dtype.itemsize
        for row in self.manifest.iter_rows(named=True):
            path = self.directory / row["path"]
            if not path.is_file():
                raise DataError(f"shard {path} is missing")
            size = path.stat().st_size
            if size != row["tokens"] * itemsize:
                raise DataError(
                    f"shard {path} is truncated or corrupted: {size} bytes, manifest says {row['tokens'] * itemsize}"
                )
            if hashes and sha256_of_file(path) != row["sha256"]:
                raise DataError(f"shard {path} is corrupted: sha256 differs from the manifest")

    @property
    def domains(self) -> list[str]:
        """The training domains, in corpus order (eval sets are not among them)."""
        return list(dict.fromkeys(self.manifest.filter(pl.col("role") == "train")["domain"].to_list()))

    @property
    def eval_sets(self) -> list[str]:
        """Held-out sets that are not training domains (val split only), in corpus order."""
        return list(dict.fromkeys(self.manifest.filter(pl.col("role") == "eval")["domain"].to_list()))

    @property
    def dtype(self) -> np.dtype:
        """The shards' token dtype (uint16, or uint32 for vocabularies over 65,536)."""
        return TOKEN_DTYPES[str(self.manifest["dtype"][0])]

    def domain_tokens(self) -> dict[str, DomainTokens]:
        """Tokens of each domain's (and eval set's) whole source: what the repetition caps need."""
        first = self.manifest.group_by("domain", maintain_order=True).first()
        return {
            row["domain"]: DomainTokens(row["domain_tokens"], row["domain_tokens_low"], row["domain_tokens_high"])
            for row in first.iter_rows(named=True)
        }

    def trainable_tokens(self) -> dict[str, int]:
        """Tokens of each domain's whole source that a large run can train on, in domain order:
        the source's total (`domain_tokens`, exact or estimated) less the held-out validation
        split, which is never trained on. What the repetition caps count: for a domain read whole
        it is exactly its train split."""
        totals = self.domain_tokens()
        held_out = self.tokens("val")
        return {d: max(int(totals[d].tokens) - held_out[d], 0) for d in self.domains}

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"][0])

    @property
    def tokenizer(self) -> str:
        return str(self.manifest["tokenizer"][0])

    @property
    def version(self) -> str:
        """A short hash of every shard's sha256: changes whenever the data does."""
        digest = hashlib.sha256("".join(sorted(self.manifest["sha256"].to_list())).encode())
        return digest.hexdigest()[:16]

    def _rows(self, domain: str, split: str) -> pl.DataFrame:
        if domain not in self.domains and domain not in self.eval_sets:
            raise DataError(
                f"domain {domain!r} is not in the corpus at {self.directory} (has {self.domains + self.eval_sets})"
            )
        if split == "train" and domain in self.eval_sets:
            raise DataError(f"{domain!r} is an eval set of the corpus at {self.directory}: it has no train split")
        return self.manifest.filter((pl.col("domain") == domain) & (pl.col("split") == split)).sort("path")

    def stream(self, domain: str, split: str = "train") -> TokenStream:
        shards = [
            np.memmap(self.directory / path, dtype=self.dtype, mode="r")
            for path in self._rows(domain, split)["path"]
        ]
        return TokenStream(shards)

    def tokens(self, split: str = "train") -> dict[str, int]:
        """Tokens per domain in a split, in domain order."""
        return {d: int(self._rows(d, split)["tokens"].sum()) for d in self.domains}

    def bytes_per_token(self, split: str = "val") -> dict[str, float]:
        """UTF-8 bytes per token of each domain (and, for val, each eval set); NaN where the
        bytes are unknown."""
        out = {}
        for d in self.domains + (self.eval_sets if split == "val" else []):
            rows = self._rows(d, split)
            n_bytes, n_tokens = float(rows["bytes"].sum()), int(rows["tokens"].sum())
            out[d] = n_bytes / max(n_tokens, 1) if n_bytes > 0 else float("nan")
        return out
