"""Reading the files of a package archive in memory, without unpacking it to disk: Debian
packages (.deb), wheels and zips, gzip-compressed tars (sdists, npm packs)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from mixopt.errors import DataError


def _deb_data_member(path: Path) -> tuple[str, bytes]:
    """The data.tar.* member of a Debian package (an `ar` archive)."""
    with open(path, "rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise DataError(f"{path} is not a Debian package (no ar header)")
        while header := handle.read(60):
            if len(header) < 60:
                break
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            if name.startswith("data.tar"):
                return name, handle.read(size)
            handle.seek(size + (size % 2), os.SEEK_CUR)
    raise DataError(f"{path} has no data.tar member")


def _tar_members(tar: tarfile.TarFile, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    for member in tar:
        if not member.isfile():  # symlinks, hard links and folders are skipped
            continue
        name = member.name[2:] if member.name.startswith("./") else member.name
        if wanted(name):
            yield name, tar.extractfile(member).read()


def _decompress(name: str, data: bytes) -> bytes:
    """A whole compressed stream at once: one call into C that releases the GIL, so that the
    domains being extracted side by side in threads really decompress in parallel."""
    if name.endswith(".xz"):
        return lzma.decompress(data)
    if name.endswith((".gz", ".tgz")):
        return gzip.decompress(data)
    if name.endswith(".bz2"):
        return bz2.decompress(data)
    if name.endswith(".tar"):
        return data
    raise DataError(f"{name}: unsupported compression (zstd-compressed Debian packages, for one)")


def iter_archive(path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
    """(member name, content) for every regular file of an archive whose name `wanted` accepts.

    Handles .deb (names relative to the file system root), .whl/.zip, .tar.gz/.tgz. npm packs
    keep their leading "package/" in names; sdists their "<name>-<version>/".
    """
    path = Path(path)
    try:
        if path.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if not info.is_dir() and wanted(info.filename):
                        yield info.filename, archive.read(info)
            return
        if path.name.endswith(".deb"):
            tar_bytes = _decompress(*_deb_data_member(path))
        elif path.name.endswith((".tar.gz", ".tgz")):
            tar_bytes = _decompress(path.name, path.read_bytes())
        else:
            raise DataError(f"{path}: unknown archive type")
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            yield from _tar_members(tar, wanted)
    except (tarfile.TarError, zipfile.BadZipFile, lzma.LZMAError, zlib.error, EOFError, OSError) as exc:
        raise DataError(f"cannot read {path}: {exc} (delete it from the raw cache to fetch it again)") from exc
