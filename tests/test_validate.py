"""`mixopt validate`: the recommended, natural, uniform and random mixtures trained at two scales,
ranked, with the rankings' Spearman correlation; real torch training on the fixture corpus."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from mixopt.config import parse_validate_config
from mixopt.errors import ConfigError
from mixopt.stats import spearman
from mixopt.tools.validate import candidate_mixtures, run_validate

DOMAINS = ["code", "docs", "legal"]
TINY = {"n_layer": 1, "n_head": 2, "d_model": 32, "d_ff": 64}


@pytest.fixture(scope="module")
def corpus_dir(fixture_corpus) -> str:
    return str(fixture_corpus)


def test_candidates_and_spearman():
    names, rows = candidate_mixtures(DOMAINS, np.array([0.5, 0.3, 0.2]), {"natural_weights": [1, 1, 2]}, k=2, seed=0)
    assert names == ["recommended", "natural", "uniform", "random-1", "random-2"]
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    np.testing.assert_allclose(rows[1], [0.25, 0.25, 0.5])
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ConfigError, match="random"):
        parse_validate_config({"random": -1})


def test_validate_ranks_mixtures_at_two_scales_and_reuses_finished_work(corpus_dir, tmp_path):
    mixture = tmp_path / "recommendation.json"
    mixture.write_text(json.dumps({"domains": DOMAINS, "weights": [0.5, 0.3, 0.2], "natural_weights": [1, 1, 1]}))
    scale = {"preset": TINY, "tokens": 20 * 4 * 32, "batch_size": 4, "seq_len": 32, "eval_tokens": 256}
    settings = parse_validate_config({"corpus": corpus_dir, "proxy": scale,
                                      "large": {**scale, "preset": {**TINY, "d_model": 48}}, "random": 1, "threads": 1})
    result = run_validate(settings, mixture, tmp_path / "v")
    table = result["table"]
    assert [row["name"] for row in table] == ["recommended", "natural", "uniform", "random-1"]
    for s in ("proxy", "large"):
        assert sorted(row[f"{s}_rank"] for row in table) == [1, 2, 3, 4]
        best = min(table, key=lambda row: row[f"{s}_loss"])
        assert best[f"{s}_rank"] == 1
    assert -1.0 <= result["spearman_proxy_large"] <= 1.0
    frame = pl.read_parquet(tmp_path / "v" / "validate.parquet")
    assert frame.height == 8 and set(frame["scale"]) == {"proxy", "large"}
    assert "Spearman" in (tmp_path / "v" / "validate.md").read_text()
    logged = []
    again = run_validate(settings, mixture, tmp_path / "v", log=logged.append)
    assert sum("finished already" in line for line in logged) == 2
    assert again["table"] == table
    (tmp_path / "v" / "scale_proxy.json").write_text('{"key": ', encoding="utf-8")   # a damaged cache
    logged.clear()
    redone = run_validate(settings, mixture, tmp_path / "v", log=logged.append)
    assert [line.split(":")[0] for line in logged if "finished already" in line] == ["large"]
    assert redone["table"] == table
