"""A study's own data: sources in the config, formats, a real BPE tokenizer, sampling and its
estimate, Megatron datasets, bad input, reproducible package versions of the default corpus."""

import collections
import gzip
import io
import json
import os
import shutil
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixopt.config import parse_config
from mixopt.data import megatron, readers
from mixopt.data.build import build_corpus, check_objective, prepare_from_config
from mixopt.data.corpus import MANIFEST_NAME, Corpus
from mixopt.data.prepare import PREPARE_NAME, prepare_corpus
from mixopt.data.sample import SampleSize, sample_size, validation_tokens
from mixopt.data.tokenizer import load_tokenizer
from mixopt.data.units import ReadSpec, find_text_files, plan_units
from mixopt.errors import ConfigError, DataError

FIXTURES = Path(__file__).parent / "fixtures"
SOURCES = FIXTURES / "sources"
CORPUS = FIXTURES / "corpus"
WHOLE = SampleSize(train_tokens=None)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def data_config(payload: dict):
    return parse_config({"data": payload}).data


def segments(corpus: Corpus, name: str, eos: int, splits=("train", "val")) -> list[tuple[int, ...]]:
    """The documents (or document pieces) of a domain's shards: runs of ids ended by eos."""
    out = []
    for split in splits:
        for shard in corpus.stream(name, split).shards:
            ids = np.asarray(shard, dtype=np.int64)
            ends = np.flatnonzero(ids == eos)
            assert len(ends) and ends[-1] == len(ids) - 1, f"{name}/{split}: a shard must end with a document end"
            out.extend(tuple(piece[:-1]) for piece in np.split(ids, ends + 1)[:-1])
    return out


def jsonl_texts(path: Path, field: str = "text") -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [readers.get_field(json.loads(line), field) for line in handle if line.strip()]


def fixture_megatron(prefix: Path, tokenizer) -> list[list[int]]:
    """A Megatron dataset of the math fixture's paragraphs, each ending with end-of-text (as
    Megatron's preprocessing writes with --append-eod)."""
    text = (CORPUS / "math" / "set.mm-part1.txt").read_text(encoding="utf-8")[:20_000]
    docs = [tokenizer.encode(p) + [tokenizer.eos_id] for p in text.split("\n\n") if p.strip()]
    megatron.write_dataset(prefix, [np.array(d) for d in docs], dtype="<u2")
    return docs


@pytest.fixture
def all_formats(tmp_path, bpe):
    """A config of the issue's shape over every source format (the fixture files, copied)."""
    raw = tmp_path / "raw"
    shutil.copytree(SOURCES, raw)
    tokenizer = load_tokenizer(bpe)
    docs = fixture_megatron(raw / "arxiv" / "arxiv_text_document", tokenizer)
    payload = {
        "corpus": str(tmp_path / "corpus"),
        "tokenizer": str(bpe),
        "sources": {
            "web": {"paths": [str(raw / "web" / "*.jsonl.gz")]},
            "code": {"paths": [str(raw / "code.parquet")], "text_field": "content"},
            "books": {"paths": [str(raw / "books" / "**" / "*.txt")]},
            "chat": {"paths": [str(raw / "chat")]},
            "arxiv": {"format": "megatron", "path": str(raw / "arxiv" / "arxiv_text_document")},
        },
        "split": [{"paths": [str(raw / "mixed.parquet")], "domain_field": "source", "text_field": "text"}],
        "eval": {"news": {"paths": [str(raw / "news.jsonl.zst")]}},
    }
    return data_config(payload), raw, docs


# ----------------------------------------------------------------------------------------------
# The config section
# ----------------------------------------------------------------------------------------------


def test_the_issue_example_validates_and_bad_sections_name_the_field():
    data = data_config({
        "corpus": "data/my-corpus", "tokenizer": "tok/tokenizer.json",
        "sources": {
            "web": {"paths": ["raw/web/*.jsonl.gz"]},
            "code": {"paths": ["raw/code/*.parquet"], "text_field": "content"},
            "books": {"paths": ["raw/books/**/*.txt"]},
            "arxiv": {"format": "megatron", "path": "raw/arxiv/arxiv_text_document"},
        },
        "split": [{"paths": ["raw/mixed/*.parquet"], "domain_field": "source", "text_field": "text"}],
        "eval": {"news": {"paths": ["raw/eval/news.jsonl"]}},
    })  # fmt: skip
    assert list(data.sources) == ["web", "code", "books", "arxiv"] and data.sources["arxiv"].format == "megatron"
    assert data.split[0].domain_field == "source" and list(data.eval) == ["news"]
    assert data_config({"sources": {"web": {"paths": "raw/*.jsonl"}}}).sources["web"].paths == ["raw/*.jsonl"]
    assert data_config({"prepare": "fixture"}).tokenizer == "bytes"  # what works today is unchanged
    cases = [
        ({"prepare": "default", "sources": {"web": {"paths": ["x"]}}}, "data: .*either prepare"),
        ({"tokenizer": "tok.json"}, "data: .*tokenizer applies"),
        ({"sources": {"web": {"paths": ["x"], "dtype": "uint16"}}}, r"data\.sources\.web: .*dtype does not apply"),
        ({"sources": {"a": {"format": "megatron"}}}, r"data\.sources\.a: .*path is required"),
        ({"sources": {"a": {"format": "tokens", "path": "t.bin"}}}, r"data\.sources\.a: .*dtype is required"),
        ({"sources": {"a": {"format": "tokens", "path": "t.bin", "dtype": "int8"}}}, r"data\.sources\.a\.dtype"),
        ({"sources": {"a b": {"paths": ["x"]}}}, "sources.a b"),
        ({"split": [{"paths": ["x.parquet"]}]}, r"data\.split\.0\.domain_field: Field required"),
        ({"sources": {"a": {"paths": ["x"]}}, "eval": {"a": {"paths": ["y"]}}}, "both a source and an eval set"),
    ]
    for payload, message in cases:
        with pytest.raises(ConfigError, match=message) as caught:
            data_config(payload)
        assert "\n" not in str(caught.value)


def test_sample_size_follows_the_study():
    config = parse_config({
        "data": {"sources": {"web": {"paths": ["x"]}, "code": {"paths": ["y"]}}},
        "space": {"max_epochs": 2.0, "max_weights": {"code": 0.25}},
        "proxy": {"tokens": 262144, "batch_size": 8, "seq_len": 128, "eval_tokens": 16384},
    })  # fmt: skip
    size = sample_size(config)
    assert size.val_tokens == validation_tokens(16384, 128) == 128 * 129
    assert size.train_for("web") == 262144 * 2 and size.train_for("code") == 262144 // 2
    assert size.need_for("code") == 262144 // 2 + 128 * 129 and size.need_for("news", "eval") == 128 * 129


# ----------------------------------------------------------------------------------------------
# Formats and tokens
# ----------------------------------------------------------------------------------------------


def test_every_format_builds_and_shard_tokens_equal_encode(all_formats, bpe):
    from tokenizers import Tokenizer

    data, raw, megatron_docs = all_formats
    tokenizer = load_tokenizer(bpe)
    result = build_corpus(data.corpus, data, WHOLE, executor="local")
    corpus = result.corpus
    assert corpus.domains == ["web", "code", "books", "chat", "arxiv", "docs", "legal"]
    assert corpus.eval_sets == ["news"]
    assert corpus.vocab_size == tokenizer.vocab_size == 2000 and corpus.dtype == np.dtype("<u2")
    assert corpus.tokenizer == str(bpe)
    assert corpus.manifest.filter(pl.col("domain") == "news")["split"].to_list() == ["val"]

    mixed = pq.read_table(raw / "mixed.parquet").to_pylist()
    chat = pa.ipc.open_stream(pa.memory_map(str(raw / "chat" / "data-00000-of-00001.arrow"))).read_all()
    import zstandard

    news = zstandard.ZstdDecompressor().decompress((raw / "news.jsonl.zst").read_bytes()).decode().splitlines()
    documents = {
        "web": [t for f in sorted((raw / "web").glob("*.gz")) for t in jsonl_texts(f)],
        "code": pq.read_table(raw / "code.parquet").column("content").to_pylist(),
        "books": [p.read_text(encoding="utf-8") for p in sorted((raw / "books").glob("*.txt"))],
        "chat": chat.column("text").to_pylist(),
        "docs": [r["text"] for r in mixed if r["source"] == "docs"],
        "legal": [r["text"] for r in mixed if r["source"] == "legal"],
        "news": [json.loads(line)["text"] for line in news],
    }
    tokens = corpus.domain_tokens()
    hf = Tokenizer.from_file(str(bpe))
    for name, texts in documents.items():
        # Every run of ids between two end-of-text ids is the encoding of a contiguous piece of
        # one document (long documents are cut at line ends for the validation split), and the
        # pieces hold the documents' text exactly once.
        joined = "\x00".join(texts)
        found = segments(corpus, name, tokenizer.eos_id, ("val",) if name == "news" else ("train", "val"))
        for ids in found:
            text = hf.decode(list(ids))
            assert text in joined and tuple(hf.encode(text).ids) == ids, name
        assert sum(len(hf.decode(list(ids))) for ids in found) == sum(len(t) for t in texts), name
        assert tokens[name].exact and tokens[name].tokens == sum(len(ids) + 1 for ids in found), name  # read whole
    # Pre-tokenized ids are copied as stored (each document ends with its end-of-text id).
    copied = segments(corpus, "arxiv", tokenizer.eos_id)
    assert collections.Counter(copied) == collections.Counter(tuple(d[:-1]) for d in megatron_docs)
    assert tokens["arxiv"].tokens == sum(len(d) for d in megatron_docs)
    assert corpus.bytes_per_token()["arxiv"] > 1.0  # decoded for bits per byte
    record = json.loads((Path(data.corpus) / PREPARE_NAME).read_text())
    assert record["eos_id"] == tokenizer.eos_id and record["domain_details"]["legal"]["source"].endswith("=legal")
    assert record["domain_details"]["docs"]["role"] == "train" and record["eval_sets"] == ["news"]


def test_nested_fields_with_dots(tmp_path):
    rows = [{"doc": {"body": f"Document {i}. " + "words and more words " * 40}, "id": i} for i in range(30)]
    (tmp_path / "nested.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.table({"doc": [r["doc"] for r in rows]}), tmp_path / "nested.parquet")
    data = data_config({"corpus": str(tmp_path / "c"), "sources": {
        "a": {"paths": [str(tmp_path / "nested.jsonl")], "text_field": "doc.body"},
        "b": {"paths": [str(tmp_path / "nested.parquet")], "text_field": "doc.body"},
    }})  # fmt: skip
    corpus = build_corpus(data.corpus, data, WHOLE, executor="local").corpus
    expected = collections.Counter(tuple(r["doc"]["body"].encode()) for r in rows)
    for name in ("a", "b"):
        assert collections.Counter(segments(corpus, name, 0)) == expected  # bytes: 0x00 ends a document


def test_vocabularies_over_65536_use_uint32_shards(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)}
    vocab["<|endoftext|>"] = 70_000
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(tmp_path / "big.json"))
    rng = np.random.default_rng(0)
    docs = [" ".join(f"w{i}" for i in rng.integers(0, 70_000, size=100)) for _ in range(40)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    data = data_config(
        {
            "corpus": str(tmp_path / "c"),
            "tokenizer": str(tmp_path / "big.json"),
            "sources": {"big": {"paths": [str(tmp_path / "d.jsonl")]}},
        }
    )
    corpus = build_corpus(data.corpus, data, WHOLE, executor="local").corpus
    assert corpus.vocab_size == 70_001 and corpus.dtype == np.dtype("<u4")
    assert corpus.manifest["dtype"].unique().to_list() == ["uint32"]
    shard = corpus.directory / corpus.manifest["path"][0]
    assert shard.stat().st_size == 4 * corpus.manifest["tokens"][0]
    got = collections.Counter(segments(corpus, "big", 70_000))
    assert got == collections.Counter(tuple(int(w[1:]) for w in d.split()) for d in docs)
    assert max(max(s) for s in got) >= 65_536
    assert Corpus.open(corpus.directory, verify="sha256").stream("big").windows(np.array([0.5]), 16).max() < 70_001


def test_an_old_manifest_reads_as_uint16_training_domains(tmp_path):
    corpus = prepare_corpus(tmp_path / "c", source="fixture", domains=["math", "code"]).corpus
    old = corpus.manifest.drop(["dtype", "role", "domain_tokens", "domain_tokens_low", "domain_tokens_high"])
    old.write_parquet(tmp_path / "c" / MANIFEST_NAME)
    reopened = Corpus.open(tmp_path / "c", verify="sha256")
    assert reopened.domains == ["math", "code"] and reopened.eval_sets == [] and reopened.dtype == np.dtype("<u2")
    assert reopened.domain_tokens()["math"].tokens == sum(corpus.tokens(s)["math"] for s in ("train", "val"))


# ----------------------------------------------------------------------------------------------
# Megatron and flat token files
# ----------------------------------------------------------------------------------------------


def test_megatron_pair_round_trips_per_the_format(tmp_path):
    docs = [np.array([5, 6, 7, 0]), np.array([9, 0]), np.array([1, 2, 3, 4, 5, 0])]
    bin_path, idx_path = megatron.write_dataset(tmp_path / "ds", docs, dtype="<u2")
    raw = idx_path.read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00"
    assert struct.unpack("<QBQQ", raw[9:34]) == (1, 8, 3, 4)  # version, uint16 code, sequences, documents + 1
    assert np.frombuffer(raw, "<i4", 3, 34).tolist() == [4, 2, 6]
    assert np.frombuffer(raw, "<i8", 3, 46).tolist() == [0, 8, 12]
    assert np.frombuffer(raw, "<i8", 4, 70).tolist() == [0, 1, 2, 3]
    assert bin_path.stat().st_size == 2 * 12
    index = megatron.read_index(tmp_path / "ds")
    assert index.documents == 3 and index.tokens == 12 and index.document_tokens().tolist() == [4, 2, 6]
    assert [d.tolist() for d in index.read_documents(0, 3)] == [d.tolist() for d in docs]
    idx_path.write_bytes(raw[:40])
    with pytest.raises(DataError, match="truncated"):
        megatron.read_index(tmp_path / "ds")


def test_megatron_core_reads_our_pair_and_we_read_its_pair(tmp_path):
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset")
    import torch

    docs = [np.arange(1, 40) % 251, np.array([3, 1, 4, 1, 5, 9, 2, 6]), np.arange(500) % 97]
    megatron.write_dataset(tmp_path / "ours", docs, dtype="<u2")
    theirs = indexed.IndexedDataset(str(tmp_path / "ours"))
    assert len(theirs) == 3 and [theirs[i].tolist() for i in range(3)] == [d.tolist() for d in docs]

    builder = indexed.IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=np.int32)
    for doc in docs:
        builder.add_document(torch.tensor(doc), [len(doc)])
    builder.finalize(str(tmp_path / "theirs.idx"))
    index = megatron.read_index(tmp_path / "theirs")
    assert index.dtype == np.dtype("<i4") and [d.tolist() for d in index.read_documents(0, 3)] == [
        d.tolist() for d in docs
    ]


def test_flat_token_file_is_split_at_eos_across_units(tmp_path):
    rng = np.random.default_rng(1)
    docs = [np.append(rng.integers(1, 250, size=int(n)), 0) for n in rng.integers(1, 400, size=300)]
    np.concatenate(docs).astype("<u2").tofile(tmp_path / "flat.bin")
    data = data_config(
        {
            "corpus": str(tmp_path / "c"),
            "sources": {
                "flat": {"format": "tokens", "path": str(tmp_path / "flat.bin"), "dtype": "uint16", "eos_id": 0}
            },
        }
    )
    corpus = build_corpus(data.corpus, data, WHOLE, executor="local", unit_bytes=512).corpus  # 256-id units
    assert collections.Counter(segments(corpus, "flat", 0)) == collections.Counter(tuple(d[:-1]) for d in docs)
    assert corpus.domain_tokens()["flat"].tokens == sum(len(d) for d in docs)


# ----------------------------------------------------------------------------------------------
# Sampling and the estimate
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paragraph_domain(tmp_path_factory):
    """One JSON lines file of the fixture corpus's paragraphs, shuffled (about 1.5 MB)."""
    root = tmp_path_factory.mktemp("para")
    lines = []
    for path in sorted(CORPUS.rglob("*.txt")):
        for paragraph in path.read_text(encoding="utf-8").split("\n\n"):
            if paragraph.strip():
                lines.append(json.dumps({"text": paragraph}) + "\n")
    np.random.default_rng(0).shuffle(lines)
    (root / "para.jsonl").write_text("".join(lines), encoding="utf-8")
    return root


def test_estimate_holds_the_exact_count_within_its_interval(paragraph_domain, bpe, tmp_path):
    data = data_config(
        {
            "corpus": str(tmp_path / "c"),
            "tokenizer": str(bpe),
            "sources": {"para": {"paths": [str(paragraph_domain / "para.jsonl")]}},
        }
    )
    options = dict(executor="local", unit_bytes=32768, task_bytes=32768)  # units of some dozens of paragraphs
    whole = build_corpus(tmp_path / "whole", data, WHOLE, **options).corpus.domain_tokens()["para"]
    assert whole.exact
    covered, sampled_units = 0, []
    for seed in range(20):
        result = build_corpus(
            tmp_path / f"s{seed}", data, SampleSize(train_tokens=60_000, val_tokens=2_000), seed=seed, **options
        )
        estimate = result.corpus.domain_tokens()["para"]
        details = json.loads((tmp_path / f"s{seed}" / PREPARE_NAME).read_text())["domain_details"]["para"]["estimate"]
        assert not estimate.exact and estimate.low < estimate.tokens < estimate.high
        covered += estimate.low <= whole.tokens <= estimate.high
        sampled_units.append(details["units_read"] / details["units"])
        assert sum(result.corpus.tokens("train").values()) >= 60_000
        if seed == 0:
            assert estimate.low <= whole.tokens <= estimate.high  # the stated uncertainty holds
        shutil.rmtree(tmp_path / f"s{seed}")
    assert covered >= 18, f"95% intervals covered the exact count in {covered} of 20 seeds"
    assert max(sampled_units) < 0.3  # a sample, not the whole domain


def test_sampling_opens_only_the_units_it_reads(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    text = (CORPUS / "speeches" / "1862_abraham_lincoln_r.txt").read_text(encoding="utf-8")
    for index in range(40):
        with gzip.open(raw / f"part-{index:02d}.jsonl.gz", "wt", encoding="utf-8") as handle:
            for paragraph in text.split("\n\n")[index % 5 :: 3]:
                handle.write(json.dumps({"text": paragraph}) + "\n")
    opened = []
    real_open = gzip.open
    monkeypatch.setattr(gzip, "open", lambda path, *a, **k: opened.append(Path(path).name) or real_open(path, *a, **k))
    data = data_config({"corpus": str(tmp_path / "c"), "sources": {"s": {"paths": [str(raw / "*.jsonl.gz")]}}})
    result = build_corpus(
        data.corpus, data, SampleSize(train_tokens=50_000, val_tokens=1_000), executor="local", task_bytes=1
    )
    estimate = json.loads((tmp_path / "c" / PREPARE_NAME).read_text())["domain_details"]["s"]["estimate"]
    assert 10 <= estimate["units_read"] < 40 and len(opened) == estimate["units_read"] == len(set(opened))
    assert not result.corpus.domain_tokens()["s"].exact


def test_parquet_units_are_row_groups_read_from_the_footer():
    spec = ReadSpec("domain 'code'", "text", str(SOURCES), "content")
    files = find_text_files([str(SOURCES / "code.parquet")], "domain 'code'")
    units = plan_units(files, spec)
    assert [(u.start, u.first_row) for u in units] == [(0, 0), (1, 3)] and all(u.measure > 0 for u in units)
    rows = [r for u in units for r in readers.read_text_unit(u, spec)]
    assert [r.key for r in rows] == [f"code.parquet#{i}" for i in range(6)]


def test_ray_and_in_process_builds_are_identical(ray_local, paragraph_domain, bpe, tmp_path):
    data = data_config(
        {
            "corpus": str(tmp_path / "c"),
            "tokenizer": str(bpe),
            "sources": {"para": {"paths": [str(paragraph_domain / "para.jsonl")]}},
        }
    )
    size = SampleSize(train_tokens=60_000, val_tokens=2_000)
    local = build_corpus(tmp_path / "local", data, size, executor="local", unit_bytes=8192, task_bytes=16384).corpus
    on_ray = build_corpus(tmp_path / "ray", data, size, executor="ray", unit_bytes=8192, task_bytes=16384).corpus
    columns = [
        "domain",
        "split",
        "path",
        "tokens",
        "sha256",
        "domain_tokens",
        "domain_tokens_low",
        "domain_tokens_high",
    ]
    assert local.manifest.select(columns).equals(on_ray.manifest.select(columns))


# ----------------------------------------------------------------------------------------------
# Idempotence and failures
# ----------------------------------------------------------------------------------------------


def test_second_build_does_nothing_until_an_input_or_the_sample_changes(tmp_path):
    shutil.copytree(SOURCES / "books", tmp_path / "books")
    data = data_config(
        {"corpus": str(tmp_path / "c"), "sources": {"books": {"paths": [str(tmp_path / "books" / "*.txt")]}}}
    )
    assert build_corpus(data.corpus, data, WHOLE, executor="local").did_work
    lines = []
    assert not build_corpus(data.corpus, data, WHOLE, executor="local", log=lines.append).did_work
    assert any("up to date" in line for line in lines)
    os.utime(tmp_path / "books" / "hamlet.txt", ns=(1, 1))  # same bytes, another modification time
    assert build_corpus(data.corpus, data, WHOLE, executor="local").did_work
    assert build_corpus(data.corpus, data, SampleSize(train_tokens=None, val_tokens=500), executor="local").did_work
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["books", MANIFEST_NAME, PREPARE_NAME]


def test_a_failed_rebuild_leaves_the_old_corpus_as_it_was(tmp_path):
    shutil.copytree(SOURCES / "books", tmp_path / "books")
    data = data_config(
        {"corpus": str(tmp_path / "c"), "sources": {"books": {"paths": [str(tmp_path / "books" / "*.txt")]}}}
    )
    before = build_corpus(data.corpus, data, WHOLE, executor="local").corpus.manifest
    (tmp_path / "books" / "macbeth.txt").write_bytes(b"\xff\xfe not UTF-8\n" * 200)
    with pytest.raises(DataError, match="macbeth.txt"):
        build_corpus(data.corpus, data, WHOLE, executor="local")
    assert Corpus.open(tmp_path / "c", verify="sha256").manifest.equals(before)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["books", MANIFEST_NAME, PREPARE_NAME]


def _write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _bad_gzip(raw: Path) -> str:
    data = gzip.compress(b"".join(json.dumps({"text": "x " * 300}).encode() + b"\n" for _ in range(50)))
    (raw / "bad.jsonl.gz").write_bytes(data[: len(data) // 2])
    return str(raw / "bad.jsonl.gz")


def _bad_zstd(raw: Path) -> str:
    import zstandard

    data = zstandard.ZstdCompressor().compress(b'{"text": "hello"}\n' * 2000)
    (raw / "bad.jsonl.zst").write_bytes(data[:10] + b"\x00" * 30 + data[40:])
    return str(raw / "bad.jsonl.zst")


def _bad_parquet(raw: Path) -> str:
    data = (SOURCES / "code.parquet").read_bytes()
    (raw / "bad.parquet").write_bytes(data[:100] + data[-50:])
    return str(raw / "bad.parquet")


def _missing_field(raw: Path) -> dict:
    _write_jsonl(raw / "f.jsonl", [{"text": "fine " * 50}, {"body": "no text"}])
    return {"paths": [str(raw / "f.jsonl")]}


def _empty(raw: Path) -> dict:
    (raw / "empty.jsonl").write_text("\n\n")
    return {"paths": [str(raw / "empty.jsonl")]}


def _ids_beyond_vocabulary(raw: Path) -> dict:
    np.array([1, 2, 300, 0], dtype="<u2").tofile(raw / "t.bin")
    return {"format": "tokens", "path": str(raw / "t.bin"), "dtype": "uint16"}


BAD_SOURCES = {
    "glob matches nothing": (
        lambda raw: {"paths": [str(raw / "nothing-*.jsonl")]},
        "nothing-\\*.jsonl matches no file",
    ),
    "record without the text field": (_missing_field, "f.jsonl at byte \\d+: no field 'text'"),
    "corrupt gzip": (lambda raw: {"paths": [_bad_gzip(raw)]}, "bad.jsonl.gz: corrupt gzip"),
    "corrupt zstd": (lambda raw: {"paths": [_bad_zstd(raw)]}, "bad.jsonl.zst: corrupt zstd"),
    "corrupt parquet": (lambda raw: {"paths": [_bad_parquet(raw)]}, "bad.parquet is not a readable Parquet file"),
    "empty domain": (_empty, "no documents in 1 files \\(empty.jsonl\\)"),
    "missing text column": (
        lambda raw: {"paths": [str(SOURCES / "code.parquet")]},
        "code.parquet has no column 'text'",
    ),
    "ids beyond the vocabulary": (_ids_beyond_vocabulary, "t.bin: token id 300 .* vocabulary of 256"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_input_is_one_line_naming_the_domain_and_the_file(tmp_path, case):
    raw = tmp_path / "raw"
    raw.mkdir()
    make, message = BAD_SOURCES[case]
    good = {"paths": [str(SOURCES / "books" / "*.txt")]}
    data = data_config({"corpus": str(tmp_path / "c"), "sources": {"books": good, "bad": make(raw)}})
    with pytest.raises(DataError, match=f"domain 'bad': .*{message}") as caught:
        build_corpus(data.corpus, data, WHOLE, executor="local")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "c").exists() or list((tmp_path / "c").iterdir()) == []  # nothing half-written


def test_other_bad_inputs_name_what_is_wrong(tmp_path, bpe):
    books = {"paths": [str(SOURCES / "books" / "*.txt")]}
    code = str(SOURCES / "code.parquet")
    megatron_source = {"format": "megatron", "path": str(tmp_path / "none")}
    cases = [
        ({"tokenizer": str(tmp_path / "missing.json")}, "data.tokenizer: .*missing.json does not exist"),
        ({"tokenizer": str(FIXTURES / "corpus" / "NOTICE.md")}, "data.tokenizer: cannot read .*NOTICE.md"),
        (
            {"split": [{"paths": [code], "domain_field": "source", "text_field": "content"}]},
            r"data\.split\[0\]: .*code.parquet has no column 'source'",
        ),
        (
            {"tokenizer": str(bpe), "sources": {"b": books, "m": {**megatron_source, "vocab_size": 50257}}},
            "domain 'm': vocab_size 50257 differs from the tokenizer's 2000",
        ),
        ({"sources": {"b": books, "m": megatron_source}}, "domain 'm': .*none.bin does not exist"),
    ]
    for payload, message in cases:
        data = data_config({"corpus": str(tmp_path / "c"), "sources": {"b": books}, **payload})
        with pytest.raises(DataError, match=message):
            build_corpus(data.corpus, data, WHOLE, executor="local")
    megatron.write_dataset(tmp_path / "m", [np.array([1, 2, 999, 0])])
    data = data_config(
        {
            "corpus": str(tmp_path / "c"),
            "sources": {"b": books, "m": {"format": "megatron", "path": str(tmp_path / "m")}},
        }
    )
    with pytest.raises(DataError, match="domain 'm': .*m.bin: token id 999 .* vocabulary of 256"):
        build_corpus(data.corpus, data, WHOLE, executor="local")
    assert not (tmp_path / "c").exists() or list((tmp_path / "c").iterdir()) == []


def test_an_objective_naming_an_unknown_set_is_a_config_error():
    check_objective({"web": 1.0, "news": 2.0}, ["web", "code"], ["news"])
    check_objective(None, ["web"])
    with pytest.raises(
        ConfigError, match="objective.weights: 'newz' is neither a domain nor an eval set .*eval sets: news"
    ):
        check_objective({"newz": 1.0}, ["web", "code"], ["news"])


def test_prepare_from_config_keeps_the_embedded_corpora_working(tmp_path):
    data = data_config({"corpus": str(tmp_path / "c"), "prepare": "fixture"})
    result = prepare_from_config(data)
    assert result.did_work and result.corpus.tokenizer == "bytes" and len(result.corpus.domains) == 7
    assert not prepare_from_config(data).did_work
    assert prepare_from_config(data_config({"corpus": str(tmp_path / "c")})).corpus.domains == result.corpus.domains


# ----------------------------------------------------------------------------------------------
# The default corpus: package versions (no network: packages faked in the raw cache)
# ----------------------------------------------------------------------------------------------


def _fake_metamath_deb(path: Path, text: str) -> None:
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:xz") as tar:
        data = text.encode()
        info = tarfile.TarInfo("./usr/share/metamath/databases/set.mm")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    members = [(b"debian-binary", b"2.0\n"), (b"data.tar.xz", payload.getvalue())]
    with open(path, "wb") as handle:
        handle.write(b"!<arch>\n")
        for name, data in members:
            handle.write(name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) * 2 + b"100644".ljust(8))
            handle.write(str(len(data)).encode().ljust(10) + b"`\n" + data + (b"\n" if len(data) % 2 else b""))


def test_default_corpus_records_prints_and_compares_package_versions(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setattr(
        subprocess, "run", lambda command, **kwargs: (_ for _ in ()).throw(FileNotFoundError(command[0]))
    )
    raw = tmp_path / "raw"
    (raw / "deb").mkdir(parents=True)
    (raw / "pip").mkdir()
    statements = "".join(f"th{i} $p |- ph{i} $= ( wi ) AB $.\n$( comment {i} $)\n" for i in range(600))
    _fake_metamath_deb(raw / "deb" / "metamath-databases_1.0-1_all.deb", statements)
    with zipfile.ZipFile(raw / "pip" / "chitchat_dataset-0.9.0-py3-none-any.whl", "w") as wheel:
        chats = {
            f"c{i}": {"messages": [[{"sender": "a", "text": f"Message {i}.{j}"}] for j in range(80)]} for i in range(30)
        }
        wheel.writestr("chitchat_dataset/dataset.json", json.dumps(chats))

    lines = []
    prepare_corpus(tmp_path / "c", source="default", raw_dir=raw, domains=["math", "dialogue"], log=lines.append)
    packages = json.loads((tmp_path / "c" / PREPARE_NAME).read_text())["packages"]
    assert packages == {"debian:metamath-databases": "1.0-1", "pypi:chitchat-dataset": "0.9.0"}
    assert "packages: debian:metamath-databases=1.0-1, pypi:chitchat-dataset=0.9.0" in lines

    lines.clear()  # an up-to-date corpus still prints what it was built from
    assert not prepare_corpus(
        tmp_path / "c", source="default", raw_dir=raw, domains=["math", "dialogue"], log=lines.append
    ).did_work
    assert "packages: debian:metamath-databases=1.0-1, pypi:chitchat-dataset=0.9.0" in lines

    lines.clear()  # Debian moved the package: the rebuild says so
    os.remove(raw / "deb" / "metamath-databases_1.0-1_all.deb")
    _fake_metamath_deb(raw / "deb" / "metamath-databases_1.0-2_all.deb", statements.replace("comment", "remark"))
    prepare_corpus(
        tmp_path / "c", source="default", raw_dir=raw, domains=["math", "dialogue"], force=True, log=lines.append
    )
    assert (
        "package debian:metamath-databases changed: 1.0-1 -> 1.0-2 (this corpus differs from the one it replaces)"
        in lines
    )
    assert not any("chitchat-dataset changed" in line for line in lines)
    assert json.loads((tmp_path / "c" / PREPARE_NAME).read_text())["packages"]["debian:metamath-databases"] == "1.0-2"
