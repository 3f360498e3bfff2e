import numpy as np
import polars as pl
import pytest

from mixopt.errors import StoreError
from mixopt.io import atomic_write_json, json_ready, read_reusable_json
from mixopt.pipeline.store import RunStore, run_key


def row(run_id, status="ok", loss=1.0):
    return {"run_id": run_id, "round": 0, "seed": 0, "preset": "p", "tokens": 10, "seconds": 1.0,
            "status": status, "attempt": 1, "recipe": "r", "w_a": 0.5, "w_b": 0.5,
            "loss_a": loss if status == "ok" else None, "loss_b": loss, "bpb_a": None, "bpb_b": None}


def test_append_persists_and_reloads(tmp_path):
    store = RunStore(tmp_path / "runs.parquet", ["a", "b"])
    store.append([row("x"), row("y", status="failed")])
    reopened = RunStore(tmp_path / "runs.parquet", ["a", "b"])
    assert len(reopened) == 2
    assert reopened.finished()["run_id"].to_list() == ["x"]
    assert reopened.table.schema["loss_a"] == pl.Float64


def test_store_is_append_only_and_first_ok_row_wins(tmp_path):
    store = RunStore(tmp_path / "runs.parquet", ["a", "b"])
    store.append([row("x", status="failed")])
    store.append([row("x", loss=2.0)])
    store.append([row("x", loss=3.0)])
    assert len(store) == 3
    assert store.finished()["loss_b"].to_list() == [2.0]
    assert store.lookup(["missing", "x"])["run_id"].to_list() == ["x"]


def test_store_refuses_a_table_of_other_domains(tmp_path):
    RunStore(tmp_path / "runs.parquet", ["a", "b"]).append([row("x")])
    with pytest.raises(StoreError, match="another study"):
        RunStore(tmp_path / "runs.parquet", ["a", "c"])


def test_runs_of_another_corpus_version_are_not_resumed(tmp_path):
    path = tmp_path / "runs.parquet"
    RunStore(path, ["a", "b"], corpus_version="v1").append([row("x")])
    assert RunStore(path, ["a", "b"], corpus_version="v1").finished()["corpus_version"].to_list() == ["v1"]
    with pytest.raises(StoreError, match="another version of the corpus .v1; this corpus is v2"):
        RunStore(path, ["a", "b"], corpus_version="v2")
    assert len(RunStore(path, ["a", "b"])) == 1          # readers that name no version still read it


def test_a_store_written_before_corpus_versions_opens_with_them_unknown(tmp_path):
    path = tmp_path / "runs.parquet"
    RunStore(path, ["a", "b"]).append([row("x")])
    pl.read_parquet(path).drop("corpus_version").write_parquet(path)
    store = RunStore(path, ["a", "b"], corpus_version="v2")
    assert store.finished()["corpus_version"].to_list() == [None]
    store.append([row("y")])
    assert store.table["corpus_version"].to_list() == [None, "v2"]


def test_store_refuses_a_damaged_file(tmp_path):
    (tmp_path / "runs.parquet").write_bytes(b"not parquet")
    with pytest.raises(StoreError, match="cannot read"):
        RunStore(tmp_path / "runs.parquet", ["a", "b"])


def test_unknown_status_is_rejected(tmp_path):
    with pytest.raises(StoreError, match="status"):
        RunStore(tmp_path / "runs.parquet", ["a", "b"]).append([row("x", status="weird")])


def test_run_key_depends_on_mixture_seed_and_recipe():
    w = np.array([0.25, 0.75])
    assert run_key(w, 0, "r") == run_key(w.copy(), 0, "r")
    assert len({run_key(w, 0, "r"), run_key(w, 1, "r"), run_key(w, 0, "s"), run_key(w[::-1], 0, "r")}) == 4


def test_a_reusable_result_is_read_back_only_for_its_own_key(tmp_path):
    path = tmp_path / "scale.json"
    key = {"spec": {"tokens": 1024, "shape": (2, 3)}, "domains": ["a", "b"]}
    assert read_reusable_json(path, key) is None                                    # nothing yet
    atomic_write_json(path, json_ready({"key": key, "losses": [1.5, 2.5]}))
    assert read_reusable_json(path, key)["losses"] == [1.5, 2.5]                    # tuples read back as lists
    assert read_reusable_json(path, {**key, "domains": ["a", "c"]}) is None         # another run's
    path.write_text('{"key": {"spec"', encoding="utf-8")
    assert read_reusable_json(path, key) is None                                    # damaged: redo the work
    path.write_text("[1, 2]", encoding="utf-8")
    assert read_reusable_json(path, key) is None
