"""Megatron-LM's indexed dataset (a `.bin` of token ids and its `.idx`), read and written.

The `.idx` file, all little endian:

    9 bytes   b"MMIDIDX\\x00\\x00"
    uint64    version (1)
    uint8     dtype code of the ids in .bin: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64,
              6 float64, 7 float32, 8 uint16
    uint64    S, the number of sequences
    uint64    D, the number of document indices (documents + 1)
    int32[S]  sequence lengths (ids per sequence)
    int64[S]  sequence pointers (byte offset of each sequence in .bin)
    int64[D]  document indices: document i is sequences [doc[i], doc[i+1])
    (int8[S]  sequence modes, multimodal datasets only: not read here)

The `.bin` file is the ids of every sequence, back to back. Megatron's preprocessing writes one
sequence per document, ending with the end-of-document id when asked to (`--append-eod`); the ids
are copied exactly as stored, so a proxy reads what the large run reads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixopt.errors import DataError
from mixopt.io import atomic_write

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
DTYPE_CODES = {
    1: np.dtype("u1"), 2: np.dtype("i1"), 3: np.dtype("<i2"), 4: np.dtype("<i4"),
    5: np.dtype("<i8"), 6: np.dtype("<f8"), 7: np.dtype("<f4"), 8: np.dtype("<u2"),
}  # fmt: skip
INTEGER_CODES = (1, 2, 3, 4, 5, 8)


def prefix_paths(prefix: str | Path) -> tuple[Path, Path]:
    """The .bin and .idx files of a dataset prefix (a prefix given with either suffix works too)."""
    prefix = Path(prefix)
    if prefix.suffix in (".bin", ".idx"):
        prefix = prefix.with_suffix("")
    return prefix.with_name(prefix.name + ".bin"), prefix.with_name(prefix.name + ".idx")


@dataclass(frozen=True)
class MegatronIndex:
    """An opened .idx: per-document token ranges of the .bin, and the id dtype."""

    bin_path: Path
    idx_path: Path
    dtype: np.dtype
    sequence_lengths: np.ndarray  # (S,) int32
    sequence_pointers: np.ndarray  # (S,) int64, bytes
    document_indices: np.ndarray  # (D,) int64

    @property
    def documents(self) -> int:
        return len(self.document_indices) - 1

    @property
    def tokens(self) -> int:
        return int(self.sequence_lengths.sum(dtype=np.int64))

    def document_tokens(self) -> np.ndarray:
        """Ids per document: (documents,) int64."""
        ends = np.concatenate([[0], np.cumsum(self.sequence_lengths, dtype=np.int64)])
        return ends[self.document_indices[1:]] - ends[self.document_indices[:-1]]

    def read_documents(self, first: int, last: int) -> list[np.ndarray]:
        """The ids of documents [first, last), one array each (int64), read from the .bin."""
        data = np.memmap(self.bin_path, dtype=np.uint8, mode="r")
        out = []
        for doc in range(first, last):
            begin, end = int(self.document_indices[doc]), int(self.document_indices[doc + 1])
            parts = []
            for s in range(begin, end):
                offset, count = int(self.sequence_pointers[s]), int(self.sequence_lengths[s])
                stop = offset + count * self.dtype.itemsize
                if stop > len(data):
                    raise DataError(
                        f"{self.bin_path} is shorter than its index says (sequence {s} ends at byte {stop})"
                    )
                parts.append(np.frombuffer(data[offset:stop], dtype=self.dtype).astype(np.int64))
            out.append(np.concatenate(parts) if parts else np.zeros(0, np.int64))
        return out


def read_index(prefix: str | Path) -> MegatronIndex:
    """Open a Megatron dataset's index; DataError naming the file when it is missing or malformed."""
    bin_path, idx_path = prefix_paths(prefix)
    for path in (bin_path, idx_path):
        if not path.is_file():
            raise DataError(f"{path} does not exist (a megatron source is the prefix of a .bin/.idx pair)")
    try:
        raw = np.memmap(idx_path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {idx_path}: {exc}") from None
    if len(raw) < 34 or bytes(raw[:9]) != INDEX_HEADER:
        raise DataError(f"{idx_path} is not a Megatron index (no MMIDIDX header)")
    version, code, sequences, document_count = struct.unpack("<QBQQ", bytes(raw[9:34]))
    if version != INDEX_VERSION:
        raise DataError(f"{idx_path}: index version {version} is not supported (only {INDEX_VERSION})")
    if code not in INTEGER_CODES:
        raise DataError(f"{idx_path}: dtype code {code} is not an integer token type")
    need = 34 + 4 * sequences + 8 * sequences + 8 * document_count
    if len(raw) < need or document_count < 1:
        raise DataError(f"{idx_path} is truncated: {len(raw)} bytes, its header announces {need}")
    offset = 34
    lengths = np.frombuffer(raw, dtype="<i4", count=sequences, offset=offset)
    offset += 4 * sequences
    pointers = np.frombuffer(raw, dtype="<i8", count=sequences, offset=offset)
    offset += 8 * sequences
    documents = np.frombuffer(raw, dtype="<i8", count=document_count, offset=offset)
    if documents[0] != 0 or documents[-1] != sequences or np.any(np.diff(documents) < 0):
        raise DataError(f"{idx_path}: document indices do not cover the {sequences} sequences in order")
    dtype = DTYPE_CODES[code]
    if sequences and int(pointers[-1]) + int(lengths[-1]) * dtype.itemsize > bin_path.stat().st_size:
        raise DataError(f"{bin_path} is shorter than its index {idx_path} says")
    return MegatronIndex(bin_path, idx_path, dtype, lengths, pointers, documents)


def write_dataset(prefix: str | Path, documents: list[np.ndarray], dtype: str | np.dtype = "<u2") -> tuple[Path, Path]:
    """Write documents (one id array each, one sequence per document) as a .bin/.idx pair."""
    dtype = np.dtype(dtype)
    code = next((c for c, d in DTYPE_CODES.items() if d == dtype.newbyteorder("<")), None)
    if code is None:
        raise ValueError(f"dtype {dtype} has no Megatron code")
    bin_path, idx_path = prefix_paths(prefix)
    arrays = [np.asarray(d).astype(dtype) for d in documents]
    lengths = np.array([len(a) for a in arrays], dtype="<i4")
    pointers = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64) * dtype.itemsize]).astype("<i8")
    pointers = pointers[: len(arrays)]
    document_indices = np.arange(len(arrays) + 1, dtype="<i8")

    def write_bin(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            for array in arrays:
                handle.write(array.tobytes())

    def write_idx(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(INDEX_HEADER)
            handle.write(struct.pack("<QBQQ", INDEX_VERSION, code, len(arrays), len(document_indices)))
            handle.write(lengths.tobytes() + pointers.tobytes() + document_indices.tobytes())

    atomic_write(bin_path, write_bin)
    atomic_write(idx_path, write_idx)
    return bin_path, idx_path
