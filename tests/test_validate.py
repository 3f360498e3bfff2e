"""`mixopt validate`: the recommended, natural, uniform and random mixtures trained at two scales and
several seeds, the paired intervals and verdicts, resumption, and bad input; real torch training of
tiny models on the fixture corpus."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import yaml

from mixopt.cli import main
from mixopt.config import parse_validate_config
from mixopt.errors import ConfigError
from mixopt.stats import t_interval
from mixopt.tools.validate import candidate_mixtures, run_validate, summarize, verdict

DOMAINS = ["code", "docs", "legal"]
TINY = {"n_layer": 1, "n_head": 2, "d_model": 32, "d_ff": 64}
SCALE = {"preset": TINY, "tokens": 20 * 4 * 32, "batch_size": 4, "seq_len": 32, "eval_tokens": 256}


@pytest.fixture(scope="module")
def corpus_dir(fixture_corpus) -> str:
    return str(fixture_corpus)


def tiny_settings(corpus_dir: str, **overrides):
    return parse_validate_config({"corpus": corpus_dir, "proxy": SCALE,
                                  "large": {**SCALE, "preset": {**TINY, "d_model": 48}, "tokens": 30 * 4 * 32},
                                  "random": 1, "threads": 1, **overrides})


def test_candidates_are_the_same_whatever_the_seeds():
    names, rows = candidate_mixtures(DOMAINS, np.array([0.5, 0.3, 0.2]), {"natural_weights": [1, 1, 2]}, k=2)
    assert names == ["recommended", "natural", "uniform", "random-1", "random-2"]
    np.testing.assert_allclose(rows.sum(axis=1), 1.0)
    np.testing.assert_allclose(rows[1], [0.25, 0.25, 0.5])
    again = candidate_mixtures(DOMAINS, np.array([0.5, 0.3, 0.2]), {"natural_weights": [1, 1, 2]}, k=2)[1]
    assert np.array_equal(rows, again)
    names, _ = candidate_mixtures(DOMAINS, np.array([0.5, 0.3, 0.2]), {}, k=0)
    assert names == ["recommended", "uniform"]       # no natural mixture known: none trained


def test_seeds_config_keeps_the_single_seed_key():
    assert parse_validate_config({}).seeds == [0, 1, 2]
    assert parse_validate_config({"seed": 4}).seeds == [4]
    assert parse_validate_config({"seeds": [3, 1]}).seeds == [3, 1]
    for bad, field in [({"seeds": []}, "seeds"), ({"seeds": [2, 0, 2]}, "seeds"), ({"seeds": [-1]}, "seeds.0"),
                       ({"seeds": [1.5]}, "seeds.0"), ({"seed": 1, "seeds": [1]}, "seed"), ({"random": -1}, "random")]:
        with pytest.raises(ConfigError, match=f"validate config: .*{field}"):
            parse_validate_config(bad)


def test_summary_intervals_differences_and_verdicts_on_known_numbers():
    names = ["recommended", "natural", "uniform"]
    # large: recommended is lower than natural by 0.02, 0.03, 0.01 (mean 0.02, sd 0.01) under a seed shift
    # of 0, +0.5, -0.3 that moves every mixture alike; uniform is above recommended by 0.001, 0.05, -0.04
    shift = np.array([0.0, 0.5, -0.3])
    rec = 2.0 + shift
    large = np.stack([rec, rec + [0.02, 0.03, 0.01], rec + [0.001, 0.05, -0.04]])
    proxy = np.stack([rec, rec - [0.02, 0.021, 0.019], rec + 0.1])   # recommended worse than natural here
    summary = summarize(names, [0, 1, 2], {"proxy": proxy, "large": large})
    natural = summary["summary"]["large"]["differences"][0]
    assert natural["name"] == "recommended - natural"
    assert natural["mean"] == pytest.approx(-0.02)
    assert natural["sd"] == pytest.approx(0.01)
    half = 4.302652729749464 * 0.01 / math.sqrt(3)               # t(0.975, 2) * sd / sqrt(n)
    assert (natural["low"], natural["high"]) == pytest.approx((-0.02 - half, -0.02 + half))
    # the mixtures' own intervals carry the seed shift, the paired ones do not
    rec_row = summary["summary"]["large"]["mixtures"][0]
    assert rec_row["half_width"] > 10 * natural["half_width"]
    assert [m["rank"] for m in summary["summary"]["large"]["mixtures"]] == [1, 3, 2]
    verdicts = summary["verdicts"]
    assert verdicts[0].startswith("recommended is not distinguishable from natural at the large scale")  # CI spans 0
    assert "is not distinguishable from uniform at the large scale" in verdicts[1]
    assert verdicts[2].startswith("recommended is worse than natural by 0.0200 nats")    # proxy: +0.02 each seed
    assert verdicts[3].startswith("recommended beats uniform by 0.1000 nats")
    assert all("resolve differences of about" in line for line in verdicts)
    # pooled Spearman: of the seed means; per seed: of that seed's objectives
    assert summary["spearman"]["per_seed"] == pytest.approx({"0": -0.5, "1": 0.5, "2": -1.0})
    assert summary["spearman"]["pooled"] == pytest.approx(-0.5)
    # a clear win: the same differences with a tenth of their spread
    clear = {"baseline": "natural", **t_interval([-0.020, -0.021, -0.019]).as_dict()}
    assert verdict("large", clear, {"resolution": 0.002}).startswith("recommended beats natural by 0.0200 nats")
    # a run that diverged (NaN) leaves its seed out of that scale's pairs, means and ranks, not the others'
    large[1, 2] = np.nan
    failed = summarize(names, [0, 1, 2], {"proxy": proxy, "large": large})
    assert failed["summary"]["large"]["complete_seeds"] == [0, 1]
    assert failed["summary"]["large"]["differences"][0]["n"] == 2
    assert failed["summary"]["large"]["differences"][1]["n"] == 3
    assert failed["summary"]["large"]["noise"]["seeds"] == 2
    assert failed["summary"]["large"]["mixtures"][2]["seed_mean"] == pytest.approx(np.mean(large[2, :2]))
    one = {"baseline": "natural", **t_interval([-0.02]).as_dict()}
    assert "from one seed: no interval" in verdict("large", one, {})


def test_validate_trains_every_mixture_scale_and_seed_with_common_random_numbers(corpus_dir, tmp_path, monkeypatch):
    mixture = tmp_path / "recommendation.json"
    # recommended = natural exactly: at every seed the two must train identically (paired difference 0)
    mixture.write_text(json.dumps({"domains": DOMAINS, "weights": [0.5, 0.25, 0.25], "natural_weights": [2, 1, 1]}))
    settings = tiny_settings(corpus_dir, seeds=[0, 1])
    out = tmp_path / "v"
    logged = []
    result = run_validate(settings, mixture, out, log=logged.append)
    assert sum("training" in line for line in logged) == 4          # 2 scales x 2 seeds, one pack each
    frame = pl.read_parquet(out / "validate.parquet")
    assert frame.height == 4 * 2 * 2
    assert frame.group_by("name", "scale", "seed").len()["len"].to_list() == [1] * 16
    assert {"name", "scale", "seed", "objective", "status", "params", "tokens", "seconds"} <= set(frame.columns)
    assert {f"loss_{d}" for d in DOMAINS} | {f"w_{d}" for d in DOMAINS} <= set(frame.columns)
    assert set(frame["status"]) == {"ok"}
    for (scale, seed), group in frame.group_by("scale", "seed"):
        by_name = {row["name"]: row for row in group.iter_rows(named=True)}
        assert by_name["recommended"]["objective"] == by_name["natural"]["objective"]          # exactly
        assert by_name["recommended"]["objective"] != by_name["uniform"]["objective"]
    for scale in ("proxy", "large"):
        natural = result["summary"][scale]["differences"][0]
        assert natural["per_seed"] == [0.0, 0.0] and natural["mean"] == 0.0
        assert "not distinguishable from natural" in " ".join(result["verdicts"])
        seed_values = result["summary"][scale]["mixtures"][2]["per_seed"]     # uniform
        assert seed_values[0] != seed_values[1]                                # seeds differ
    assert set(result["spearman"]["per_seed"]) == {"0", "1"}
    assert -1.0 <= result["spearman"]["pooled"] <= 1.0
    text = (out / "validate.md").read_text()
    assert "recommended - natural" in text and "Spearman(proxy, large)" in text and "Verdicts:" in text
    assert (out / "validate.png").stat().st_size > 1000
    assert "data:image/png;base64," in (out / "validate.html").read_text()

    # resumed: nothing is trained again, and the figures are the same
    import workers.proxies

    def refuse(*args, **kwargs):
        raise AssertionError("a finished (scale, seed) was trained again")

    monkeypatch.setattr(workers.proxies, "train_proxies", refuse)
    logged.clear()
    again = run_validate(settings, mixture, out, log=logged.append)
    assert sum("finished already" in line for line in logged) == 4
    assert again["summary"] == result["summary"]
    monkeypatch.undo()

    # one more seed trains only that seed; a damaged cache file is trained again
    (out / "scale_large_seed0.json").write_text('{"key": ', encoding="utf-8")
    logged.clear()
    more = run_validate(tiny_settings(corpus_dir, seeds=[0, 1, 2]), mixture, out, log=logged.append)
    trained = sorted(line.split(":")[0] for line in logged if "training" in line)
    assert trained == ["large, seed 0", "large, seed 2", "proxy, seed 2"]
    first_two = more["summary"]["large"]["mixtures"][0]["per_seed"][:2]
    assert first_two == result["summary"]["large"]["mixtures"][0]["per_seed"]     # retraining is deterministic
    assert pl.read_parquet(out / "validate.parquet").height == 4 * 2 * 3


@pytest.mark.parametrize("config, recommendation, field", [
    ({"seeds": []}, None, "seeds"),
    ({"seeds": [0, 0]}, None, "seeds"),
    ({"seeds": [-1]}, None, "seeds.0"),
    ({"seed": -1}, None, "seeds.0"),
    ({"seeds": [0], "seed": 0}, None, "seed"),
    ({"seeds": [0]}, {"runs": []}, "domains"),
    ({"seeds": [0]}, {"domains": DOMAINS, "weights": [0.5, 0.5, 0.5]}, "weights"),
])
def test_bad_input_exits_2_with_one_error_line(config, recommendation, field, corpus_dir, tmp_path, capsys):
    path = tmp_path / "validate.yaml"
    path.write_text(yaml.safe_dump({"corpus": corpus_dir, "proxy": SCALE, "large": SCALE, **config}))
    mixture = tmp_path / "recommendation.json"
    mixture.write_text(json.dumps(recommendation or {"domains": DOMAINS, "weights": [0.5, 0.25, 0.25]}))
    code = main(["validate", "--config", str(path), "--mixture", str(mixture), "--out", str(tmp_path / "v")])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0], captured.err
    assert not (tmp_path / "v").exists()       # nothing trained, nothing written
