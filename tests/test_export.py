"""`mixopt export`: Megatron-LM --data-path lists, Hugging Face interleave_datasets arguments, YAML."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixopt import DataError, InputError
from mixopt.tools.export import (
    export_recommendation,
    hf_interleave_spec,
    megatron_data_path,
    parse_megatron_data_path,
    render_export,
    round_weights,
    yaml_mixture,
)

DOMAINS = ["web", "code", "books", "math", "legal"]
WEIGHTS = [0.4123456789, 0.3, 0.1876543211, 0.1, 0.0]   # legal: zero weight


def payload(domains=DOMAINS, weights=WEIGHTS, **extra) -> dict:
    """The fields of recommendation.json that exports read (see mixopt.pipeline.results.recommendation_payload)."""
    return {
        "domains": list(domains),
        "weights": list(weights),
        "mixture": dict(zip(domains, weights)),
        "predicted_loss": 3.1606,
        "natural_predicted_loss": 3.1811,
        "objective": {"metric": "loss", "weights": {d: 1 / len(domains) for d in domains}},
        "n_runs": 24,
        "epochs_at_target": [1.1, 3.0, 1.9, 3.4, 0.0][: len(domains)],
        "surrogate": {"kind": "lightgbm", "files": ["lightgbm-0.txt"], "cv_rmse": {}},
        "config_hash": "1a2a111a881675fb",
        "config": {"study": {"seed": 7}},
        "mixopt_version": "0.1.0",
        **extra,
    }


def write(directory: Path, content) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "recommendation.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# -- rounding ---------------------------------------------------------------------------------------
def test_rounded_weights_sum_to_exactly_one_unit_count():
    rng = np.random.default_rng(0)
    for _ in range(200):
        weights = rng.dirichlet(np.full(rng.integers(2, 20), 0.3))
        for precision in (2, 4, 6):
            units = round_weights(weights, precision)
            assert sum(units) == 10**precision
            assert min(units) >= 0
            assert np.max(np.abs(np.array(units) / 10**precision - weights)) < 10**-precision
    # the remainder goes to the largest fractional parts, never driving a weight negative
    assert round_weights([0.333333, 0.333333, 0.333334], 2) == [33, 33, 34]
    assert round_weights([0.9999996, 0.0000004], 6) == [1_000_000, 0]


# -- Megatron-LM --------------------------------------------------------------------------------
def test_megatron_list_alternates_weight_and_prefix_and_parses_back():
    text = megatron_data_path(payload(), prefix_template="/data/mix/{domain}_text_document")
    tokens = text.split()
    assert len(tokens) == 8                                  # 4 non-zero domains, legal left out
    assert all(re.fullmatch(r"\d+(\.\d+)?", t) for t in tokens[0::2])
    assert all(t.startswith("/data/mix/") and t.endswith("_text_document") for t in tokens[1::2])
    prefixes, weights = parse_megatron_data_path(text)
    assert prefixes == [f"/data/mix/{d}_text_document" for d in ["web", "code", "books", "math"]]
    np.testing.assert_allclose(weights, [0.412346, 0.3, 0.187654, 0.1])
    assert sum(round(w * 10**6) for w in weights) == 10**6
    assert "legal" not in text and "#" not in text           # no comments: Megatron would read them as tokens
    assert text.splitlines()[1] == "0.3 /data/mix/code_text_document"


def test_megatron_explicit_prefixes_and_bad_prefixes():
    text = megatron_data_path(payload(), prefixes={"web": "cc/en_text_document"})
    assert text.splitlines()[0].split() == ["0.412346", "cc/en_text_document"]
    with pytest.raises(InputError, match="whitespace"):
        megatron_data_path(payload(), prefix_template="my data/{domain}")
    with pytest.raises(InputError, match="prefix_template"):
        megatron_data_path(payload(), prefix_template="{name}_text_document")
    with pytest.raises(InputError, match="unknown domains"):
        megatron_data_path(payload(), prefixes={"wiki": "x"})
    with pytest.raises(InputError, match="differ"):
        megatron_data_path(payload(), prefix_template="same")


def test_megatron_core_reads_the_list_when_installed(tmp_path):
    """Megatron's own parser (megatron-core is not a dependency: skipped where it is not installed)."""
    utils = pytest.importorskip("megatron.core.datasets.utils")
    write(tmp_path, payload())
    text = export_recommendation(tmp_path, "megatron").read_text()
    expected = ([f"{d}_text_document" for d in ["web", "code", "books", "math"]], [0.412346, 0.3, 0.187654, 0.1])
    assert utils.get_blend_from_list(text.split()) == expected          # --data-args-path: f.read().split()
    assert utils.get_blend_from_list(" ".join(text.split()).split(" ")) == expected   # --data-path $(cat FILE)


def test_parse_megatron_follows_get_blend_from_list():
    assert parse_megatron_data_path("30 a 70 b") == (["a", "b"], [30.0, 70.0])
    assert parse_megatron_data_path("a b c") == (["a", "b", "c"], None)
    assert parse_megatron_data_path("a b") == (["a", "b"], None)


# -- Hugging Face datasets ---------------------------------------------------------------------
def interleave(datasets, spec, by_name):
    return datasets.interleave_datasets([by_name[d] for d in spec["datasets"]], probabilities=spec["probabilities"],
                                        seed=spec["seed"], stopping_strategy=spec["stopping_strategy"])


def test_hf_export_drives_a_real_interleave_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    write(tmp_path, payload())
    path = export_recommendation(tmp_path, "hf")
    assert path == tmp_path / "mixture.hf.json"
    spec = json.loads(path.read_text())
    assert spec["datasets"] == ["web", "code", "books", "math"]
    assert spec["seed"] == 7
    assert spec["stopping_strategy"] == "all_exhausted"      # code and math are read 3+ epochs at target
    assert sum(round(p * 10**6) for p in spec["probabilities"]) == 10**6
    assert abs(sum(spec["probabilities"]) - 1.0) < 1e-12
    assert spec["mixopt"]["left_out_zero_weight"] == ["legal"]

    sizes = {"web": 4000, "code": 1000, "books": 2000, "math": 300, "legal": 500}
    by_name = {d: datasets.Dataset.from_dict({"text": [f"{d} {i}" for i in range(n)], "domain": [d] * n})
               for d, n in sizes.items()}
    mixed = interleave(datasets, spec, by_name)
    counts = Counter(mixed["domain"])
    total = sum(counts.values())
    assert "legal" not in counts
    # all_exhausted ends once every domain has been read: after max_j(len_j / p_j) rows (books here)
    assert total == pytest.approx(max(sizes[d] / p for d, p in zip(spec["datasets"], spec["probabilities"])), rel=0.03)
    assert all(counts[d] >= sizes[d] for d in spec["datasets"])
    for domain, p in zip(spec["datasets"], spec["probabilities"]):
        assert counts[domain] / total == pytest.approx(p, abs=0.012), (domain, counts[domain] / total, p)


def test_hf_export_without_repeats_stops_at_the_first_exhausted_domain():
    datasets = pytest.importorskip("datasets")
    spec = hf_interleave_spec(payload(epochs_at_target=[0.5, 0.9, 0.3, 1.0, 0.0]), seed=3)
    assert spec["stopping_strategy"] == "first_exhausted"
    assert hf_interleave_spec(payload(epochs_at_target=None))["stopping_strategy"] == "first_exhausted"
    size = 10_000
    by_name = {d: datasets.Dataset.from_dict({"domain": [d] * size}) for d in DOMAINS}
    counts = Counter(interleave(datasets, spec, by_name)["domain"])
    total = sum(counts.values())
    assert "legal" not in counts and max(counts.values()) == size  # web runs out first; nothing repeats
    for domain, p in zip(spec["datasets"], spec["probabilities"]):
        assert counts[domain] / total == pytest.approx(p, abs=0.012)
    # the zero-weight domain is left out for a reason: datasets rejects p = 0 under all_exhausted
    with pytest.raises(ValueError, match="probability 0"):
        datasets.interleave_datasets([by_name[d] for d in DOMAINS], probabilities=[0.4, 0.3, 0.2, 0.1, 0.0],
                                     seed=0, stopping_strategy="all_exhausted")


def test_hf_arguments_are_checked():
    with pytest.raises(InputError, match="stopping_strategy"):
        hf_interleave_spec(payload(), stopping_strategy="longest")
    with pytest.raises(InputError, match="seed"):
        hf_interleave_spec(payload(), seed=-1)
    with pytest.raises(InputError, match="precision"):
        hf_interleave_spec(payload(), precision=0)
    assert hf_interleave_spec(payload(config={}))["seed"] == 0


# -- YAML -------------------------------------------------------------------------------------------
def test_yaml_round_trips_every_domain_with_provenance(tmp_path):
    write(tmp_path / "study", payload())
    out = export_recommendation(tmp_path / "study" / "recommendation.json", "yaml", tmp_path / "exports" / "mix.yaml")
    assert out == tmp_path / "exports" / "mix.yaml"
    document = yaml.safe_load(out.read_text())
    assert list(document["mixture"]) == DOMAINS                  # order kept, zero weight kept
    assert document["mixture"] == {"web": 0.412346, "code": 0.3, "books": 0.187654, "math": 0.1, "legal": 0.0}
    assert document["provenance"]["predicted_loss"] == 3.1606
    assert document["provenance"]["config_hash"] == "1a2a111a881675fb"
    assert yaml_mixture(payload(), precision=3).count("\n") > 5


def test_all_formats_agree_on_the_weights():
    p = payload()
    megatron = dict(zip(*reversed(parse_megatron_data_path(render_export(p, "megatron", prefix_template="{domain}")))))
    hf = json.loads(render_export(p, "hf"))
    yml = yaml.safe_load(render_export(p, "yaml"))["mixture"]
    assert {v: k for k, v in megatron.items()} == dict(zip(hf["datasets"], hf["probabilities"]))
    assert {d: w for d, w in yml.items() if w > 0} == dict(zip(hf["datasets"], hf["probabilities"]))


def test_export_paths_and_default_names(tmp_path):
    write(tmp_path, payload())
    assert export_recommendation(tmp_path, "megatron") == tmp_path / "mixture.megatron.txt"
    target = export_recommendation(tmp_path, "megatron", tmp_path / "out" / "data_args.txt", prefix_template="{domain}")
    assert target.read_text().splitlines()[0] == "0.412346 web"
    (tmp_path / "dir").mkdir()
    assert export_recommendation(tmp_path, "yaml", tmp_path / "dir") == tmp_path / "dir" / "mixture.yaml"
    with pytest.raises(InputError, match="format"):
        export_recommendation(tmp_path, "csv")


# -- bad inputs -------------------------------------------------------------------------------------
def test_bad_recommendations_raise_data_error_naming_the_file(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "missing"))):
        export_recommendation(tmp_path / "missing", "hf")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "recommendation.json"))):
        export_recommendation(tmp_path, "hf")
    path = write(tmp_path / "broken", '{"domains": ["a"')
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*not valid JSON"):
        export_recommendation(path, "yaml")
    cases = {
        "no_weights": ({"domains": ["a", "b"]}, "no 'weights' field"),
        "length": ({"domains": ["a", "b"], "weights": [1.0]}, "1 values for 2 domains"),
        "sum": ({"domains": ["a", "b"], "weights": [0.5, 0.6]}, "sum to 1"),
        "negative": ({"domains": ["a", "b"], "weights": [1.5, -0.5]}, "non-negative"),
        "strings": ({"domains": ["a", "b"], "weights": ["0.5", "0.5"]}, "list of numbers"),
        "list": ([0.5, 0.5], "JSON object"),
    }
    for name, (content, message) in cases.items():
        path = write(tmp_path / name, content)
        with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + re.escape(message)):
            export_recommendation(tmp_path / name, "megatron")
