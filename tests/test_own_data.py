"""A study on its own data, end to end: a config of JSONL.gz, Parquet (one table split by its `source`
column) and Megatron domains with a BPE tokenizer trained at test time and an eval set that the
objective weighs; `mixopt data prepare --config` and `mixopt recommend` over it; the bad inputs as
exit 2 and one `error:` line naming the domain (or field) and the file.

The fast tests build the corpus in process and train no proxy (a synthetic runner, as in
test_cli.py); the bad inputs go through the real CLI on the session's local Ray. The slow test
runs the real CLI in a subprocess: the corpus built on Ray, real proxies, then `mixopt validate`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from mixopt.cli import main
from mixopt.config import load_config, parse_config
from mixopt.data import megatron
from mixopt.data.build import build_corpus
from mixopt.data.corpus import Corpus
from mixopt.data.sample import SampleSize, sample_size
from mixopt.data.tokenizer import load_tokenizer
from mixopt.errors import ConfigError, InputError
from mixopt.pipeline.context import build_space
from mixopt.pipeline.results import Recommendation, check_payload

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SOURCES = FIXTURES / "sources"
DOMAINS = {"web", "code", "arxiv", "docs", "legal"}  # docs and legal: the values of mixed.parquet's `source`


def own_data_config(root: Path, bpe: Path, **overrides) -> dict:
    """The acceptance's config over a copy of the source fixtures: JSONL.gz, Parquet, Megatron, a
    Parquet table split by `source`, a zstd JSON-lines eval set; a tiny proxy recipe."""
    raw = root / "raw"
    if not raw.exists():
        shutil.copytree(SOURCES, raw)
        tokenizer = load_tokenizer(bpe)
        text = (FIXTURES / "corpus" / "math" / "set.mm-part1.txt").read_text(encoding="utf-8")[:20_000]
        docs = [tokenizer.encode(p) + [tokenizer.eos_id] for p in text.split("\n\n") if p.strip()]
        megatron.write_dataset(raw / "arxiv" / "arxiv_text_document", [np.array(d) for d in docs], dtype="<u2")
    config = {
        "name": "own-data",
        "data": {
            "corpus": str(root / "corpus"),
            "tokenizer": str(bpe),
            "sources": {
                "web": {"paths": [str(raw / "web" / "*.jsonl.gz")]},
                "code": {"paths": [str(raw / "code.parquet")], "text_field": "content"},
                "arxiv": {"format": "megatron", "path": str(raw / "arxiv" / "arxiv_text_document")},
            },
            "split": [{"paths": [str(raw / "mixed.parquet")], "domain_field": "source", "text_field": "text"}],
            "eval": {"news": {"paths": [str(raw / "news.jsonl.zst")]}},
        },
        "space": {"target_tokens": 1.0e5, "max_epochs": 4.0},
        "proxy": {"preset": "cpu-0.5m", "tokens": 4096, "batch_size": 4, "seq_len": 32, "eval_tokens": 128,
                  "compile": False},
        "study": {"proxies": 6, "rounds": 1, "noise_repeats": 0, "proxies_per_task": 3},
        "objective": {"weights": {"news": 1.0}},
        "surrogate": {"kind": "linear"},
        "search": {"candidates": 2000, "top_k": 20},
        "ray": {"num_cpus": 2},
    }
    for section, values in overrides.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    return config


def write_config(root: Path, config: dict) -> Path:
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class SyntheticRunner:
    """Trains no proxy: per-set losses from the mixture (the runner protocol of RayProxyRunner).
    The domains' losses fall with their own weight; the eval set's loss falls with web's weight."""

    def __init__(self, domains: list[str], eval_sets: list[str]):
        self.domains, self.eval_sets = domains, eval_sets

    def run(self, mixtures, seeds, on_result):
        for i, w in enumerate(np.asarray(mixtures)):
            losses = dict(zip(self.domains, (2.0 + 0.3 / (w + 0.05) ** 0.4).tolist()))
            losses.update({name: 3.0 - w[self.domains.index("web")] for name in self.eval_sets})
            on_result(i, {"status": "ok", "loss": losses, "bpb": {k: v / np.log(2) for k, v in losses.items()},
                          "tokens": 4096, "seconds": 0.01, "attempt": 1})


@pytest.fixture(scope="module")
def built(tmp_path_factory, bpe):
    """The config written and its corpus built in process (recommend then finds it up to date)."""
    root = tmp_path_factory.mktemp("own")
    path = write_config(root, own_data_config(root, bpe))
    config = load_config(path)
    build_corpus(config.data.corpus, config.data, sample_size(config), executor="local")
    return root, path


# -- recommend, data prepare, report, export on the study's own corpus ------------------------------------
def test_recommend_optimises_an_eval_set_over_exactly_the_configured_domains(built, capsys):
    root, path = built
    corpus = Corpus.open(root / "corpus")
    assert set(corpus.domains) == DOMAINS and corpus.eval_sets == ["news"]
    out = root / "study"
    code = main(["recommend", "--config", str(path), "--out", str(out), "--quiet"],
                runner=SyntheticRunner(corpus.domains, corpus.eval_sets))
    assert code == 0, capsys.readouterr().err
    rec = json.loads((out / "recommendation.json").read_text())
    assert set(rec["domains"]) == DOMAINS and rec["eval_sets"] == ["news"]
    assert rec["objective"]["weights"] == {**{d: 0.0 for d in rec["domains"]}, "news": 1.0}
    runs = pl.read_parquet(out / "runs.parquet")
    assert {"loss_news", "bpb_news"} <= set(runs.columns) and not any(c == "w_news" for c in runs.columns)
    # the study's objective is the eval set's loss: the best run is the one with the lowest loss_news
    assert rec["best_observed"]["loss"] == pytest.approx(runs["loss_news"].min())
    assert abs(rec["predicted_loss"] - (3.0 - rec["mixture"]["web"])) < 0.02   # the surrogate fits loss_news
    # caps count each source's tokens less its held-out split (exact here: every domain was read whole)
    tokens = corpus.trainable_tokens()
    assert rec["space"]["tokens"] == [tokens[d] for d in rec["domains"]] == [
        corpus.domain_tokens()[d].tokens - corpus.tokens("val")[d] for d in rec["domains"]]

    loaded = Recommendation.from_json(out)
    assert loaded.loss_names == rec["domains"] + ["news"]
    np.testing.assert_allclose(loaded.objective_weights, [0.0] * 5 + [1.0])
    from mixopt.tools.report.load import load_study

    study = load_study(out)
    assert study.objective_label == "objective: mean loss over news (nats/token)"
    np.testing.assert_allclose(study.y, runs["loss_news"].to_numpy())
    from mixopt.tools.export import export_recommendation

    spec = json.loads(export_recommendation(out, "hf").read_text())
    assert set(spec["datasets"]) <= DOMAINS and spec["mixopt"]["objective"] == {"news": 1.0}

    # data prepare --config on the same config: up to date, and it says what the manifest holds
    capsys.readouterr()
    assert main(["data", "prepare", "--config", str(path), "--json"]) == 0
    prepared = json.loads(capsys.readouterr().out)
    assert prepared["built"] is False and prepared["eval_sets"] == ["news"] and prepared["vocab_size"] == 2000
    assert set(prepared["domains"]) == DOMAINS and all(t["exact"] for t in prepared["domain_tokens"].values())


def test_without_objective_weights_the_eval_set_is_measured_but_not_optimised(built, tmp_path):
    root, _ = built
    config = parse_config({**yaml.safe_load((root / "study.yaml").read_text()), "objective": {}})
    from mixopt import pipeline

    corpus = Corpus.open(config.data.corpus)
    rec = pipeline.recommend(config, tmp_path / "study", runner=SyntheticRunner(corpus.domains, corpus.eval_sets))
    assert rec.payload["objective"]["weights"] == pytest.approx({**{d: 1.0 / 5 for d in rec.domains}, "news": 0.0})
    assert rec.runs()["loss_news"].is_not_null().all()


def test_a_recommendation_names_its_eval_sets_and_the_objective_may_weigh_them():
    payload = {"domains": ["a", "b"], "weights": [0.5, 0.5], "eval_sets": ["held"],
               "objective": {"metric": "loss", "weights": {"a": 1.0, "held": 3.0}}}
    assert check_payload(payload)[0] == ["a", "b"]
    for bad, message in [({"eval_sets": ["a"]}, "'eval_sets' must be distinct names that are not domains"),
                         ({"eval_sets": "held"}, "'eval_sets' must be a list of names"),
                         ({"eval_sets": [], "objective": {"weights": {"held": 1.0}}}, "'objective.weights'")]:
        with pytest.raises(InputError, match=message):
            check_payload({**payload, **bad})


def test_caps_count_the_source_less_its_held_out_split(tmp_path, bpe, fixture_corpus):
    """A sampled domain's cap comes from its estimated total, not from the sample; a byte corpus
    read whole keeps the caps it had (its train split)."""
    lines = [json.dumps({"text": p}) + "\n" for f in sorted((FIXTURES / "corpus").rglob("*.txt"))
             for p in f.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    np.random.default_rng(0).shuffle(lines)
    (tmp_path / "para.jsonl").write_text("".join(lines), encoding="utf-8")
    config = parse_config({"data": {"corpus": str(tmp_path / "c"), "tokenizer": str(bpe),
                                    "sources": {"para": {"paths": [str(tmp_path / "para.jsonl")]},
                                                "books": {"paths": [str(SOURCES / "books" / "*.txt")]}}},
                           "space": {"target_tokens": 1e6}})
    corpus = build_corpus(config.data.corpus, config.data, SampleSize(train_tokens=40_000, val_tokens=2_000),
                          executor="local", unit_bytes=32768, task_bytes=32768).corpus
    estimate = corpus.domain_tokens()["para"]
    assert not estimate.exact and estimate.tokens > 3 * sum(corpus.tokens(s)["para"] for s in ("train", "val"))
    space = build_space(config, corpus)
    assert space.tokens.tolist() == [estimate.tokens - corpus.tokens("val")["para"], corpus.tokens("train")["books"]]
    byte_corpus = Corpus.open(fixture_corpus)
    assert byte_corpus.trainable_tokens() == byte_corpus.tokens("train")


def test_bpb_needs_byte_counts_and_the_objective_known_sets(built, tmp_path):
    root, _ = built
    payload = yaml.safe_load((root / "study.yaml").read_text())
    bpb = parse_config({**payload, "objective": {"metric": "bpb"}})
    corpus = Corpus.open(root / "corpus")
    assert build_space(bpb, corpus).domains == corpus.domains      # decoded ids give the Megatron domain bytes
    shutil.copytree(root / "corpus", tmp_path / "c")                # a manifest that knows no bytes for arxiv
    manifest = corpus.manifest.with_columns(
        pl.when(pl.col("domain") == "arxiv").then(0).otherwise(pl.col("bytes")).alias("bytes"))
    manifest.write_parquet(tmp_path / "c" / "manifest.parquet")
    with pytest.raises(ConfigError, match="objective.metric: bpb needs the text bytes .* none for 'arxiv'"):
        build_space(bpb, Corpus.open(tmp_path / "c"))
    with pytest.raises(ConfigError, match="objective.weights: 'newz' is neither a domain nor an eval set"):
        build_space(parse_config({**payload, "objective": {"weights": {"newz": 1.0}}}), corpus)


def test_data_prepare_keeps_out_and_source_and_takes_prepare_from_a_config(tmp_path, capsys):
    """--out/--source build an embedded corpus as before; --config with `prepare:` does the same at
    data.corpus; --config with --out is refused; a config with no way to build says so."""
    assert main(["data", "prepare", "--out", str(tmp_path / "a"), "--source", "fixture", "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["built"] and built["tokenizer"] == "bytes" and built["eval_sets"] == [] and len(built["domains"]) == 7
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": {"corpus": str(tmp_path / "b"), "prepare": "fixture"}}))
    assert main(["data", "prepare", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["train_tokens"] == built["train_tokens"]
    for args, message in [(["--config", str(config), "--out", str(tmp_path / "x")], "give --config, or --out"),
                          (["--config", str(_config_without_data(tmp_path))], "data: give sources .* or prepare")]:
        assert main(["data", "prepare", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.match(f"error: .*{message}", err[0]), err


def _config_without_data(tmp_path: Path) -> Path:
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump({"data": {"corpus": str(tmp_path / "none")}}))
    return path


# -- bad input through the CLI: exit 2, one error line naming the domain (or field) and the file -----------
def _bad_gzip(raw: Path) -> dict:
    import gzip

    data = gzip.compress(b"".join(json.dumps({"text": "x " * 300}).encode() + b"\n" for _ in range(50)))
    (raw / "bad.jsonl.gz").write_bytes(data[: len(data) // 2])
    return {"sources": {"bad": {"paths": [str(raw / "bad.jsonl.gz")]}}}


def _bad_zstd(raw: Path) -> dict:
    import zstandard

    data = zstandard.ZstdCompressor().compress(b'{"text": "hello"}\n' * 2000)
    (raw / "bad.jsonl.zst").write_bytes(data[:10] + b"\x00" * 30 + data[40:])
    return {"sources": {"bad": {"paths": [str(raw / "bad.jsonl.zst")]}}}


def _bad_parquet(raw: Path) -> dict:
    data = (SOURCES / "code.parquet").read_bytes()
    (raw / "bad.parquet").write_bytes(data[:100] + data[-50:])
    return {"sources": {"bad": {"paths": [str(raw / "bad.parquet")], "text_field": "content"}}}


def _missing_field(raw: Path) -> dict:
    (raw / "f.jsonl").write_text(json.dumps({"text": "fine " * 50}) + "\n" + json.dumps({"body": "no text"}) + "\n")
    return {"sources": {"bad": {"paths": [str(raw / "f.jsonl")]}}}


def _empty(raw: Path) -> dict:
    (raw / "empty.jsonl").write_text("\n\n")
    return {"sources": {"bad": {"paths": [str(raw / "empty.jsonl")]}}}


def _ids_beyond_vocabulary(raw: Path) -> dict:
    megatron.write_dataset(raw / "ids", [np.array([1, 2, 999, 0])])
    return {"sources": {"bad": {"format": "megatron", "path": str(raw / "ids")}}}


BAD_INPUTS = {  # case: (the data section's change, what the one line must say)
    "glob matches nothing": (lambda raw: {"sources": {"bad": {"paths": [str(raw / "nothing-*.jsonl")]}}},
                             "domain 'bad': .*nothing-\\*.jsonl matches no file"),
    "record without the text field": (_missing_field, "domain 'bad': .*f.jsonl at byte \\d+: no field 'text'"),
    "corrupt gzip": (_bad_gzip, "domain 'bad': .*bad.jsonl.gz: corrupt gzip"),
    "corrupt zstd": (_bad_zstd, "domain 'bad': .*bad.jsonl.zst: corrupt zstd"),
    "corrupt parquet": (_bad_parquet, "domain 'bad': .*bad.parquet is not a readable Parquet file"),
    "missing tokenizer": (lambda raw: {"tokenizer": str(raw / "missing.json")},
                          "data.tokenizer: .*missing.json does not exist"),
    "unreadable tokenizer": (lambda raw: {"tokenizer": str(FIXTURES / "corpus" / "NOTICE.md")},
                             "data.tokenizer: cannot read .*NOTICE.md"),
    "empty domain": (_empty, "domain 'bad': no documents in 1 files \\(empty.jsonl\\)"),
    "domain_field missing from a table": (
        lambda raw: {"split": [{"paths": [str(SOURCES / "code.parquet")], "domain_field": "source",
                                "text_field": "content"}]},
        "data.split\\[0\\]: .*code.parquet has no column 'source'"),
    "ids beyond the vocabulary": (_ids_beyond_vocabulary, "domain 'bad': .*ids.bin: token id 999 .* vocabulary of 256"),
    "objective names an unknown set": (lambda raw: {"objective": {"weights": {"newz": 1.0}}},
                                       "objective.weights: 'newz' is neither a domain nor an eval set"),
}


@pytest.mark.parametrize("command", ["data prepare", "recommend"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_naming_the_domain_and_the_file(case, command, tmp_path, ray_local,
                                                                         capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    change, message = BAD_INPUTS[case]
    data = {"corpus": str(tmp_path / "corpus"), "sources": {"books": {"paths": [str(SOURCES / "books" / "*.txt")]}},
            "eval": {"news": {"paths": [str(SOURCES / "news.jsonl.zst")]}}}
    config = {"data": data, "proxy": {"tokens": 4096, "batch_size": 4, "seq_len": 32, "eval_tokens": 128}}
    for key, value in change(raw).items():
        if key == "objective":
            config["objective"] = value
        elif key == "sources":
            data["sources"].update(value)
        else:
            data[key] = value
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    args = command.split() + ["--config", str(path)] + (["--out", str(tmp_path / "study")] if command == "recommend"
                                                        else [])
    code = main(args, runner=SyntheticRunner(["books"], ["news"]))
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert code == 2, captured
    assert len(errors) == 1 and captured.err.strip().splitlines()[-1] == errors[0], captured.err  # after progress
    assert re.search(message, errors[0]), errors[0]
    assert "Traceback" not in captured.err + captured.out
    corpus = tmp_path / "corpus"
    if case != "objective names an unknown set":      # nothing half-written (an objective is checked first)
        assert not corpus.exists() or list(corpus.iterdir()) == []


# -- the real thing: corpus on Ray, real proxies, validate ----------------------------------------------------
@pytest.mark.slow
def test_recommend_builds_the_corpus_on_ray_and_trains_on_it_then_validate(tmp_path, bpe):
    config = own_data_config(tmp_path, bpe)
    path = write_config(tmp_path, config)
    out = tmp_path / "study"
    done = subprocess.run([sys.executable, "-m", "mixopt", "recommend", "--config", str(path), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "building" in done.stderr and "news" in done.stderr           # the corpus was built first
    corpus = Corpus.open(tmp_path / "corpus")
    assert corpus.vocab_size == 2000 and corpus.tokenizer == str(bpe)
    rec = json.loads((out / "recommendation.json").read_text())
    assert set(rec["domains"]) == DOMAINS and rec["eval_sets"] == ["news"]
    assert rec["objective"]["weights"]["news"] == 1.0
    runs = pl.read_parquet(out / "runs.parquet").filter(pl.col("status") == "ok")
    assert runs.height == config["study"]["proxies"]
    news = runs["loss_news"].to_numpy()
    assert np.all(np.isfinite(news)) and np.all(news < np.log(2000) + 1) and np.ptp(news) > 0
    assert rec["best_observed"]["loss"] == pytest.approx(news.min())
    assert np.all(np.isfinite(runs["bpb_news"].to_numpy()))
    # a second recommend neither rebuilds nor trains
    again = subprocess.run([sys.executable, "-m", "mixopt", "recommend", "--config", str(path), "--out", str(out)],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    said = " ".join(again.stderr.split())            # progress lines wrap at the console's width
    assert again.returncode == 0 and "up to date" in said and "proxies to train" not in said

    tiny = {"preset": {"n_layer": 1, "n_head": 2, "d_model": 32, "d_ff": 64}, "tokens": 2048, "batch_size": 4,
            "seq_len": 32, "eval_tokens": 128, "compile": False}
    settings = {"corpus": str(tmp_path / "corpus"), "proxy": tiny, "large": {**tiny, "tokens": 4096}, "random": 0,
                "seeds": [0], "threads": 1}
    (tmp_path / "validate.yaml").write_text(yaml.safe_dump(settings))
    validated = subprocess.run([sys.executable, "-m", "mixopt", "validate", "--config", str(tmp_path / "validate.yaml"),
                                "--mixture", str(out / "recommendation.json"), "--out", str(tmp_path / "validate")],
                               cwd=REPO, capture_output=True, text=True, timeout=600)
    assert validated.returncode == 0, validated.stderr[-3000:]
    table = pl.read_parquet(tmp_path / "validate" / "validate.parquet")
    np.testing.assert_allclose(table["objective"].to_numpy(), table["loss_news"].to_numpy())
