"""recommendation.json has one reader, Recommendation.from_json: the same checks, and errors that name
the file and the field, whichever command reads it (export, report, validate, jacobian, train,
pipeline.load)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mixopt import DataError, InputError, pipeline
from mixopt.config import parse_validate_config
from mixopt.pipeline.results import Recommendation, check_payload
from mixopt.tools.export import export_recommendation
from mixopt.tools.jacobian import study_jacobian
from mixopt.tools.report import load_study
from mixopt.tools.validate import run_validate

FULL = {
    "domains": ["web", "code", "math"],
    "weights": [0.5, 0.3, 0.2],
    "predicted_loss": 3.1,
    "natural_weights": [0.6, 0.3, 0.1],
    "natural_predicted_loss": 3.2,
    "n_runs": 12,
    "config_hash": "abc",
    "objective": {"metric": "bpb", "weights": {"web": 1.0, "code": 3.0}},
    "space": {"lower": [0.0, 0.1, 0.0], "upper": [1.0, 0.5, 0.25]},
}


def write(directory: Path, payload) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "recommendation.json"
    path.write_text(json.dumps(payload))
    return path


def test_a_study_recommendation_reads_back_typed(tmp_path):
    path = write(tmp_path / "study", FULL)
    rec = Recommendation.from_json(path.parent)
    assert rec.out_dir == path.parent and Recommendation.from_json(path).payload == FULL
    assert rec.domains == FULL["domains"] and rec.weights.tolist() == FULL["weights"]
    assert rec.predicted_loss == 3.1 and rec.natural_predicted_loss == 3.2 and rec.n_runs == 12
    assert rec.natural_weights.tolist() == FULL["natural_weights"] and rec.config_hash == "abc"
    assert rec.mixture == {"web": 0.5, "code": 0.3, "math": 0.2}
    assert rec.metric == "bpb"
    np.testing.assert_allclose(rec.objective_weights, [0.25, 0.75, 0.0])
    np.testing.assert_allclose(rec.upper, [1.0, 0.5, 0.25])
    assert pipeline.load(path.parent).weights.tolist() == rec.weights.tolist()


def test_a_hand_written_mixture_needs_only_domains_and_weights(tmp_path):
    rec = Recommendation.from_json(write(tmp_path, {"domains": ["a", "b", "c"], "weights": [0.2, 0.3, 0.5]}))
    assert rec.predicted_loss is None and rec.natural_weights is None and rec.n_runs is None
    assert rec.metric == "loss"
    np.testing.assert_allclose(rec.objective_weights, [1 / 3] * 3)
    np.testing.assert_allclose(rec.lower, 0.0) and np.testing.assert_allclose(rec.upper, 1.0)
    assert rec.proportions.sum() == pytest.approx(1.0, abs=1e-15)


BROKEN = {
    "no weights": ({"domains": ["a", "b"]}, "no 'weights' field"),
    "length": ({"domains": ["a", "b"], "weights": [1.0]}, "1 values for 2 domains"),
    "sum": ({"domains": ["a", "b"], "weights": [1.0, 2.0]}, "sum to 1"),
    "negative": ({"domains": ["a", "b"], "weights": [1.5, -0.5]}, "non-negative"),
    "duplicate domains": ({"domains": ["a", "a"], "weights": [0.5, 0.5]}, "unique"),
    "natural": ({**FULL, "natural_weights": [0.5, 0.5]}, "'natural_weights' must hold 3 numbers"),
    "bounds": ({**FULL, "space": {"upper": [1.0, None, 1.0]}}, "'space.upper' must hold 3 finite numbers"),
    "metric": ({**FULL, "objective": {"metric": "accuracy"}}, "'objective.metric' must be one of"),
    "objective": ({**FULL, "objective": {"weights": {"web": 0.0}}}, "'objective.weights' must be finite"),
    "not an object": ([0.5, 0.5], "JSON object"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_file_is_refused_with_the_file_and_the_field(case, tmp_path):
    payload, message = BROKEN[case]
    path = write(tmp_path, payload)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + re.escape(message)):
        Recommendation.from_json(path)
    with pytest.raises(InputError, match="^mixture: " + re.escape(str(path)) + ".*" + re.escape(message)):
        Recommendation.from_json(path, label="mixture")
    with pytest.raises(InputError, match=re.escape(message)):
        check_payload(payload)                       # a dict (the exporters' input) is held to the same checks


def test_missing_and_unreadable_files_name_the_path(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"study directory {tmp_path / 'nowhere'} does not exist")):
        Recommendation.from_json(tmp_path / "nowhere" / "recommendation.json")
    with pytest.raises(DataError, match=re.escape(f"no recommendation at {tmp_path / 'recommendation.json'}")):
        Recommendation.from_json(tmp_path)
    (tmp_path / "recommendation.json").write_text('{"domains": [')
    with pytest.raises(InputError, match="^mixture: .*recommendation.json is not valid JSON"):
        Recommendation.from_json(tmp_path, label="mixture")


def test_every_reader_refuses_the_same_file_for_the_same_reason(tmp_path):
    """export, report, validate, jacobian and pipeline.load all read through from_json."""
    message = "'natural_weights' must hold 3 numbers"
    path = write(tmp_path / "study", BROKEN["natural"][0])
    readers = {
        "pipeline.load": lambda: pipeline.load(path.parent),
        "export": lambda: export_recommendation(path.parent, "yaml"),
        "report": lambda: load_study(path.parent),
        "validate": lambda: run_validate(parse_validate_config({}), path, tmp_path / "validate"),
        "jacobian": lambda: study_jacobian(path),
    }
    for name, read in readers.items():
        with pytest.raises((DataError, InputError), match=re.escape(str(path)) + ".*" + re.escape(message)):
            read()
        assert not (path.parent / "mixture.yaml").exists(), name
