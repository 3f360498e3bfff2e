"""`mixopt jacobian`: a finished study's per-domain Jacobian at its recommendation, from its runs and
proxies at two lengths, and how `mixopt train --jacobian` hands it to auto. Real torch training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mixopt.config import parse_train_config
from mixopt.errors import InputError
from mixopt.large_run import build_mixer

DOMAINS = ["code", "docs", "legal"]
TINY = {"n_layer": 1, "n_head": 2, "d_model": 32, "d_ff": 64}


@pytest.fixture(scope="module")
def corpus_dir(fixture_corpus) -> str:
    return str(fixture_corpus)


def _settings(corpus_dir, steps=24):
    return parse_train_config({"corpus": corpus_dir, "eval_tokens": 128, "final_eval_tokens": 256, "threads": 1,
                               "model": {"preset": TINY, "tokens": steps * 4 * 32, "batch_size": 4, "seq_len": 32}})


def _study_dir(corpus_dir, tmp_path, proxies=8):
    """A finished study's files: recommendation.json (a tiny proxy recipe) and runs.parquet."""
    from mixopt.pipeline.store import RunStore

    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), size=proxies)
    transfer = np.array([[0.6, 0.2, 0.0], [0.0, 0.5, 0.1], [0.1, 0.0, 0.7]])
    losses = 3.0 - X @ transfer + 0.01 * rng.standard_normal((proxies, 3))
    RunStore(tmp_path / "runs.parquet", DOMAINS).append([
        {"run_id": f"r{i}", "status": "ok" if i < proxies - 1 else "diverged",
         **{f"w_{d}": float(X[i, j]) for j, d in enumerate(DOMAINS)},
         **{f"loss_{d}": float(losses[i, j]) for j, d in enumerate(DOMAINS)}} for i in range(proxies)])
    recipe = {"preset": TINY, "tokens": 16 * 4 * 32, "batch_size": 4, "seq_len": 32, "lr": 3e-3, "eval_tokens": 256,
              "device": "cpu"}
    mixture = tmp_path / "recommendation.json"
    mixture.write_text(json.dumps({"domains": DOMAINS, "weights": [0.5, 0.3, 0.2], "proxy": recipe,
                                   "corpus": {"directory": corpus_dir}}))
    return mixture


def test_jacobian_of_a_study_reaches_auto_in_the_run_domains_order(corpus_dir, tmp_path):
    """`mixopt jacobian` trains proxies on the recommendation at the study's length and half of it
    (longer lowers every domain's loss), fits the study's finished runs, writes jacobian.json with
    p . J[:, j] = the rate along the length; `mixopt train --jacobian` hands it to auto reordered
    to the run's domains, and to no other mixer."""
    from mixopt.tools.jacobian import read_jacobian, study_jacobian

    mixture = _study_dir(corpus_dir, tmp_path)
    result = study_jacobian(mixture, threads=1)
    assert result["proxies"] == 7 and result["path"] == str(tmp_path / "jacobian.json")
    along = np.array(result["along"])
    assert np.all(along < 0)
    J = np.array(result["jacobian"])
    np.testing.assert_allclose(np.array([0.5, 0.3, 0.2]) @ J, along, rtol=1e-9, atol=1e-12)
    order = ["legal", "code", "docs"]
    reordered = read_jacobian(tmp_path / "jacobian.json", order)
    np.testing.assert_allclose(reordered, J[np.ix_([2, 0, 1], [2, 0, 1])])
    mixer = build_mixer(_settings(corpus_dir), order, None, method="auto", jacobian=reordered)
    np.testing.assert_allclose(mixer.options["jacobian"], reordered)         # what auto was configured with
    with pytest.raises(InputError, match="only the auto mixer"):
        build_mixer(_settings(corpus_dir), order, None, method="static", jacobian=reordered)
    with pytest.raises(InputError, match="domains"):
        read_jacobian(tmp_path / "jacobian.json", ["code", "docs"])
    (tmp_path / "other.json").write_text(json.dumps({"domains": DOMAINS, "jacobian": J.tolist()}))
    with pytest.raises(InputError, match="not a `mixopt jacobian` file"):
        read_jacobian(tmp_path / "other.json", DOMAINS)
    logged = []
    again = study_jacobian(mixture, threads=1, log=logged.append)
    assert any("already" in line for line in logged)
    assert not any("proxies on the recommendation at" in line for line in logged)
    assert again["losses"] == result["losses"] and again["jacobian"] == result["jacobian"]
    fresh = study_jacobian(mixture, threads=1, repeats=1, log=logged.append)
    assert any("proxies on the recommendation at" in line for line in logged) and len(fresh["losses"]["full"]) == 1


def test_jacobian_needs_a_study_with_enough_finished_runs(corpus_dir, tmp_path):
    from mixopt.tools.jacobian import study_jacobian

    mixture = _study_dir(corpus_dir, tmp_path, proxies=5)
    with pytest.raises(InputError, match="4 finished proxies"):
        study_jacobian(mixture, threads=1)
    (tmp_path / "runs.parquet").unlink()
    with pytest.raises(InputError, match="runs.parquet"):
        study_jacobian(mixture, threads=1)
    with pytest.raises(InputError, match="repeats"):
        study_jacobian(mixture, repeats=0)
