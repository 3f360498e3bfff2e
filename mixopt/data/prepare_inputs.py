"""What `mixopt data prepare` reads: the domains of its source, resolved before any expensive work.

    plan = plan_inputs("fixture", domains=None, raw_dir=Path("data/raw"), log=print)
    plan.domains[0].read()   # (document_id, text) pairs of the first domain, cleaned

Sources: "default" (the registry of sources.py, fetched into the raw cache), "fixture" (the
committed tests/fixtures/corpus) or a directory laid out like the fixture, `<dir>/<domain>/**/*.txt`
with one UTF-8 document per file (folders whose names start with "." or "_" and files other
than *.txt are ignored). A plan carries a hash of its inputs, which decides whether a prepared
corpus is up to date: for the default source the registry's recipe (packages, pinned versions,
extractor revisions), for a text directory the files' names and contents.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mixopt.data.cleaning import clean_text
from mixopt.data.corpus import DOMAIN_NAME
from mixopt.data.readers import read_text_file
from mixopt.data.sources import DOMAINS, DomainSource, fetch_all
from mixopt.errors import DataError, InputError

FIXTURE_RELATIVE_PATH = Path("tests") / "fixtures" / "corpus"

Log = Callable[[str], None]


@dataclass(frozen=True)
class DomainInput:
    """One domain to build. `read` yields its (document_id, text) pairs and `source` gives its
    source label; both run only when the corpus is built."""

    name: str
    license: str
    read: Callable[[], Iterable[tuple[str, str]]]
    source: Callable[[], str]
    cost: Callable[[], int]  # bytes of input, to start the largest domains first


@dataclass
class InputPlan:
    """What a source resolves to, before any expensive work: the domains and a hash of the inputs."""

    kind: str  # "default", "fixture" or "dir"
    source_path: str | None
    inputs_hash: str
    domains: list[DomainInput]
    fetch: Callable[[], None] = lambda: None  # downloads what the domains need (default source)
    packages: Callable[[], dict[str, str]] = dict  # registry:name -> version read (after fetch)


def fixture_dir() -> Path:
    """The committed fixture corpus (tests/fixtures/corpus of the source checkout)."""
    package_root = Path(__file__).resolve().parents[2]
    for candidate in (package_root / FIXTURE_RELATIVE_PATH, Path.cwd() / FIXTURE_RELATIVE_PATH):
        if candidate.is_dir():
            return candidate
    raise DataError(
        f"the fixture corpus ({FIXTURE_RELATIVE_PATH}) was not found beside the mixopt package "
        f"({package_root}) or in {Path.cwd()}: it ships with the source checkout, not with the wheel"
    )


def text_domain_dirs(directory: Path) -> dict[str, Path]:
    """The domain folders of a text directory, by name (sorted); DataError if there are none."""
    if not directory.exists():
        raise DataError(f"source directory {directory} does not exist")
    if not directory.is_dir():
        raise DataError(f"source {directory} is not a directory of <domain>/*.txt")
    found = {}
    for child in sorted(directory.iterdir()):
        if not child.is_dir() or child.name.startswith((".", "_")):
            continue
        if not DOMAIN_NAME.fullmatch(child.name):
            raise DataError(f"{child}: a domain name may hold only letters, digits, '_', '.' and '-'")
        found[child.name] = child
    if not found:
        raise DataError(f"source directory {directory} has no domain folders (expected <dir>/<domain>/*.txt)")
    return found


def _text_files(domain_dir: Path) -> list[Path]:
    files = sorted(p for p in domain_dir.rglob("*.txt") if p.is_file())
    if not files:
        raise DataError(f"domain folder {domain_dir} has no .txt files")
    return files


def _read_text_documents(domain_dir: Path) -> Iterable[tuple[str, str]]:
    for path in _text_files(domain_dir):
        text = clean_text(read_text_file(path))
        if text:
            yield path.relative_to(domain_dir).as_posix(), text


def _text_dir_fingerprint(domain_dirs: dict[str, Path]) -> str:
    """sha256 over every domain's file names and contents."""
    digest = hashlib.sha256()
    for name, domain_dir in domain_dirs.items():
        for path in _text_files(domain_dir):
            digest.update(f"{name}/{path.relative_to(domain_dir).as_posix()}\x00".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _select(available: Sequence[str], domains: Sequence[str] | None, where: str) -> list[str]:
    if domains is None:
        return list(available)
    if isinstance(domains, str):
        domains = [domains]
    selected = list(domains)
    if not selected:
        raise InputError("domains: give at least one domain (or None for all)")
    duplicates = sorted({d for d in selected if selected.count(d) > 1})
    if duplicates:
        raise InputError(f"domains: {duplicates} given more than once")
    unknown = [d for d in selected if d not in available]
    if unknown:
        raise InputError(f"domains: {unknown} not in {where} (it has {list(available)})")
    return selected


def _plan_text_dir(directory: Path, domains: Sequence[str] | None, kind: str) -> InputPlan:
    domain_dirs = text_domain_dirs(directory)
    selected = _select(list(domain_dirs), domains, f"the source directory {directory}")
    domain_dirs = {name: domain_dirs[name] for name in selected}
    items = []
    for name, domain_dir in domain_dirs.items():
        if kind == "fixture":
            registry = DOMAINS.get(name)
            label = f"fixture slice of {registry.label}" if registry else "fixture"
            license = registry.license if registry else "see tests/fixtures/corpus/NOTICE.md"
        else:
            label, license = f"dir:{domain_dir.resolve()}", "unknown"
        items.append(
            DomainInput(
                name,
                license,
                read=lambda d=domain_dir: _read_text_documents(d),
                source=lambda label=label: label,
                cost=lambda d=domain_dir: sum(p.stat().st_size for p in _text_files(d)),
            )
        )
    return InputPlan(kind, str(directory.resolve()), _text_dir_fingerprint(domain_dirs), items)


class _RegistryArchives:
    """The default source's packages, fetched once into the raw cache when first needed."""

    def __init__(self, sources: list[DomainSource], raw_dir: Path, log: Log):
        self.sources, self.raw_dir, self.log = sources, raw_dir, log
        self.paths: dict[str, list[Path]] | None = None

    def fetch(self) -> None:
        if self.paths is None:
            started = time.perf_counter()
            self.paths = fetch_all(self.sources, self.raw_dir, self.log)
            self.log(f"packages ready in {self.raw_dir} ({time.perf_counter() - started:.1f}s)")

    def of(self, name: str) -> list[Path]:
        self.fetch()
        return self.paths[name]

    def versions(self) -> dict[str, str]:
        """The exact version of every package read, by registry and name (Debian's are not pinned)."""
        self.fetch()
        return {
            package.registry_name: package.version_of(path)
            for source in self.sources
            for package, path in zip(source.packages, self.paths[source.name])
        }


def _plan_default(domains: Sequence[str] | None, raw_dir: Path, log: Log) -> InputPlan:
    selected = [DOMAINS[name] for name in _select(list(DOMAINS), domains, "the default registry")]
    recipe = [
        {"domain": s.name, "packages": [p.label for p in s.packages], "recipe": s.recipe, "license": s.license}
        for s in selected
    ]
    inputs_hash = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    archives = _RegistryArchives(selected, raw_dir, log)
    items = [
        DomainInput(
            s.name,
            s.license,
            read=lambda s=s: s.documents(archives.of(s.name)),
            source=lambda s=s: s.source_label(archives.of(s.name)),
            cost=lambda s=s: sum(path.stat().st_size for path in archives.of(s.name)),
        )
        for s in selected
    ]
    return InputPlan("default", None, inputs_hash, items, fetch=archives.fetch, packages=archives.versions)


def plan_inputs(source: str | os.PathLike, domains: Sequence[str] | None, raw_dir: Path, log: Log) -> InputPlan:
    """The plan of a source: "default", "fixture" or a text directory (see the module docstring)."""
    source_name = os.fspath(source)
    if source_name == "default":
        return _plan_default(domains, raw_dir, log)
    if source_name == "fixture":
        return _plan_text_dir(fixture_dir(), domains, "fixture")
    return _plan_text_dir(Path(source_name), domains, "dir")
