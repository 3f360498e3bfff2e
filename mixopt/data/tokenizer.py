"""Tokenizers for corpus preparation: byte level, or a Hugging Face `tokenizers` JSON file.

`load_tokenizer("bytes")` is the byte-level tokenizer (token id = UTF-8 byte, vocabulary 256);
its document end is the byte 0x00, which prepared text never contains otherwise (NUL characters
are dropped from documents before encoding). `load_tokenizer("tok/tokenizer.json")` loads the
file every model folder carries, offline; its document end is the first of END_OF_TEXT_TOKENS
that the vocabulary has (none: documents are concatenated without a separator, as the model's
own pipeline would).

Shards hold uint16 ids when the vocabulary fits (at most 65,536 ids) and uint32 otherwise.

A tokenizer travels to Ray workers as its JSON text (`spec`), so that a cluster needs no shared
path to it; `from_spec` rebuilds it there, once per worker process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixopt.errors import DataError

BYTES = "bytes"
BYTE_VOCAB_SIZE = 256
BYTE_DOCUMENT_END = 0
UINT16_LIMIT = 1 << 16
END_OF_TEXT_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[EOS]")
ENCODE_BATCH_DOCUMENTS = 256


def token_dtype(vocab_size: int) -> np.dtype:
    """The shard dtype for a vocabulary: uint16 up to 65,536 ids, else uint32 (little endian)."""
    return np.dtype("<u2") if vocab_size <= UINT16_LIMIT else np.dtype("<u4")


@dataclass(frozen=True)
class TokenizerSpec:
    """What identifies a tokenizer and rebuilds it anywhere: its name and JSON text (None: bytes)."""

    name: str
    json_text: str | None
    sha256: str

    @property
    def is_bytes(self) -> bool:
        return self.json_text is None


class Tokenizer:
    """Encodes documents into one flat id array, each document followed by the end-of-text id
    (when the tokenizer has one); decodes ids to count the text bytes they stand for."""

    def __init__(self, spec: TokenizerSpec):
        self.spec = spec
        if spec.is_bytes:
            self._hf = None
            self.vocab_size = BYTE_VOCAB_SIZE
            self.eos_id: int | None = BYTE_DOCUMENT_END
        else:
            from tokenizers import Tokenizer as HFTokenizer

            try:
                self._hf = HFTokenizer.from_str(spec.json_text)
            except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
                raise DataError(
                    f"data.tokenizer: {spec.name} is not a tokenizers JSON file: {_first_line(exc)}"
                ) from None
            vocabulary = self._hf.get_vocab(with_added_tokens=True)
            self.vocab_size = max(
                self._hf.get_vocab_size(with_added_tokens=True), max(vocabulary.values(), default=-1) + 1
            )
            self.eos_id = next((vocabulary[t] for t in END_OF_TEXT_TOKENS if t in vocabulary), None)
        self.dtype = token_dtype(self.vocab_size)

    @property
    def name(self) -> str:
        return self.spec.name

    def encode_documents(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, lengths): the documents' ids concatenated, each followed by the end-of-text id;
        lengths[i] is document i's share of ids (its end-of-text id included)."""
        if not texts:
            return np.zeros(0, self.dtype), np.zeros(0, np.int64)
        if self._hf is None:
            data = [text.replace("\x00", "").encode("utf-8") for text in texts]
            lengths = np.fromiter((len(d) + 1 for d in data), np.int64, len(data))
            ids = np.frombuffer(b"\x00".join(data) + b"\x00", dtype=np.uint8).astype(self.dtype)
            return ids, lengths
        encode = getattr(self._hf, "encode_batch_fast", self._hf.encode_batch)  # fast: no offsets
        tail = [] if self.eos_id is None else [self.eos_id]
        pieces, lengths = [], []
        for start in range(0, len(texts), ENCODE_BATCH_DOCUMENTS):
            for encoding in encode(texts[start : start + ENCODE_BATCH_DOCUMENTS], add_special_tokens=False):
                ids = encoding.ids + tail
                pieces.append(np.asarray(ids, dtype=self.dtype))
                lengths.append(len(ids))
        return np.concatenate(pieces), np.asarray(lengths, dtype=np.int64)

    def encode(self, text: str) -> list[int]:
        """One document's ids without the end-of-text id (what a trainer's `encode` gives)."""
        if self._hf is None:
            return list(text.replace("\x00", "").encode("utf-8"))
        return self._hf.encode(text, add_special_tokens=False).ids

    def text_bytes(self, sequences: list[np.ndarray]) -> list[int]:
        """UTF-8 bytes of the text each id sequence decodes to (end-of-text ids count nothing)."""
        if self._hf is None:
            return [int(np.count_nonzero(s != BYTE_DOCUMENT_END)) for s in sequences]
        decoded = self._hf.decode_batch([np.asarray(s).tolist() for s in sequences], skip_special_tokens=True)
        return [len(text.encode("utf-8")) for text in decoded]


_CACHE: dict[str, Tokenizer] = {}


def from_spec(spec: TokenizerSpec) -> Tokenizer:
    """The tokenizer of a spec, built once per process."""
    tokenizer = _CACHE.get(spec.sha256)
    if tokenizer is None:
        tokenizer = _CACHE[spec.sha256] = Tokenizer(spec)
    return tokenizer


def tokenizer_spec(name: str | Path) -> TokenizerSpec:
    """The spec of "bytes" or of a local `tokenizers` JSON file; DataError naming the file when it
    is missing, unreadable or not a tokenizer."""
    name = str(name)
    if name == BYTES:
        return TokenizerSpec(BYTES, None, BYTES)
    path = Path(name)
    if path.is_dir() and (path / "tokenizer.json").is_file():
        path = path / "tokenizer.json"  # a model folder
    if not path.is_file():
        raise DataError(f'data.tokenizer: {name} does not exist (give a tokenizers JSON file, or "bytes")')
    try:
        text = path.read_text(encoding="utf-8")
        json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"data.tokenizer: cannot read {path}: {_first_line(exc)}") from None
    spec = TokenizerSpec(str(path), text, hashlib.sha256(text.encode("utf-8")).hexdigest())
    from_spec(spec)  # fail here, in the driver, if tokenizers cannot load it
    return spec


def load_tokenizer(name: str | Path) -> Tokenizer:
    """A ready tokenizer: "bytes" or a local `tokenizers` JSON file (or a folder holding one)."""
    return from_spec(tokenizer_spec(name))


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
