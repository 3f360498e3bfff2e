"""Pieces: the grain of every validation split.

A document is cut into pieces at line boundaries (`cut_into_pieces`) so that even a domain of a
few long documents gets a fine-grained validation split (metamath's set.mm is a single 16 MB
document). Each piece is identified by (domain, document key, piece number), and a hash of that
identity (`piece_hash`) decides which pieces are held out: the split depends only on the text's
identity, never on the machine, the output folder or the order in which files are listed or
tasks complete. Both builds use these: prepare.py (the byte-level corpora) orders every piece by
its hash; encode.py (a study's own sources) draws validation candidates from it.
"""

from __future__ import annotations

import hashlib

DEFAULT_VAL_FRACTION = 0.05
MIN_PIECE_BYTES = 1024
MAX_PIECE_BYTES = 64 * 1024
PIECES_PER_VAL_TARGET = 8


def piece_size(val_target_bytes: int) -> int:
    """The piece size for a validation split of `val_target_bytes`: about an eighth of it, a power
    of two in [1 KiB, 64 KiB]."""
    wanted = max(val_target_bytes // PIECES_PER_VAL_TARGET, 1)
    return min(max(1 << (wanted.bit_length() - 1), MIN_PIECE_BYTES), MAX_PIECE_BYTES)


def cut_into_pieces(data: bytes, limit: int) -> list[bytes]:
    """Cut UTF-8 text into pieces of at most `limit` bytes whose concatenation is `data`.

    Cuts fall after a newline; a line longer than `limit` is cut after a space, and a stretch
    without spaces at a character boundary, so every piece is valid UTF-8."""
    pieces = []
    start = 0
    while len(data) - start > limit:
        end = data.rfind(b"\n", start, start + limit) + 1
        if end <= start:
            end = data.rfind(b" ", start, start + limit) + 1
        if end <= start:
            end = start + limit
            while data[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte: back to the character's start
                end -= 1
        pieces.append(data[start:end])
        start = end
    pieces.append(data[start:])
    return pieces


def piece_hash(domain: str, key: str, index: int) -> bytes:
    """8 bytes of blake2b over a piece's identity: (domain, document key, piece number)."""
    return hashlib.blake2b(f"{domain}\x1f{key}\x1f{index}".encode("utf-8"), digest_size=8).digest()
