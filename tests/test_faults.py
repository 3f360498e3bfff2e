"""Fault injection: bad configs at the CLI, fuzzed configs, a full disk, an unwritable output path,
corrupted shards, a diverging proxy and a worker process that dies (os._exit) under a real Ray.

The driver killed with SIGKILL and resumed is in test_pipeline_e2e.py; docs/reliability.md lists
every promise and the test that holds it."""

import errno
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixopt.config import load_config, parse_config
from mixopt.data.prepare import prepare_corpus
from mixopt.errors import ConfigError, MixoptError, StoreError
from mixopt.pipeline.store import RunStore

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mixopt", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def assert_one_error_line(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


# -- five kinds of bad config, through the real command line ----------------------------------------

BAD_CONFIGS = {
    "yaml syntax error": ("study:\n  proxies: [1, 2\n", ["YAML syntax error", "line"]),
    "unknown key": ("study:\n  proxies: 8\n  proxiez: 9\n", ["study.proxiez", "unknown key"]),
    "negative number": ("space:\n  max_epochs: -3\n", ["space.max_epochs"]),
    "NaN": ("proxy:\n  lr: .nan\n", ["proxy", "lr"]),
    "missing corpus": ("data:\n  corpus: /nonexistent/corpus\n", ["/nonexistent/corpus"]),
}


@pytest.mark.parametrize("kind", list(BAD_CONFIGS))
def test_bad_config_exits_2_with_one_error_line(kind, tmp_path):
    text, words = BAD_CONFIGS[kind]
    out = tmp_path / "study"
    result = run_cli("recommend", "--config", str(write_config(tmp_path, text)), "--out", str(out))
    assert_one_error_line(result, *words)
    assert not (out / "runs.parquet").exists()


def test_missing_config_file_exits_2(tmp_path):
    result = run_cli("recommend", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o"))
    assert_one_error_line(result, "nope.yaml", "does not exist")


def test_unwritable_output_path_exits_2_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("recommend", "--config", "configs/smoke.yaml", "--out", str(blocker / "study"))
    assert_one_error_line(result, "--out", "a-file")


def test_truncated_shard_is_named_at_the_door(tmp_path):
    corpus = tmp_path / "corpus"
    prepare_corpus(corpus, source="fixture")
    shard = sorted(corpus.rglob("*.bin"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])  # truncated mid-token-stream
    config = write_config(tmp_path, f"data:\n  corpus: {corpus}\n  verify: size\n")
    result = run_cli("recommend", "--config", str(config), "--out", str(tmp_path / "study"))
    assert_one_error_line(result, shard.name)


# -- the config loader under fuzzing: a Config or a ConfigError, nothing else -----------------------

SECTIONS = ["data", "space", "proxy", "study", "objective", "surrogate", "search", "ray", "name", "bogus"]
FIELDS = ["corpus", "target_tokens", "max_epochs", "min_weights", "max_weights", "proxies", "rounds", "seed",
          "lr", "tokens", "preset", "weights", "metric", "kind", "method", "candidates", "top_k", "num_cpus",
          "noise_repeats", "proxies_per_task", "cpus_per_task", "address", "x"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["cpu-0.5m", "loss", "bpb", "auto", "topk", "constrained"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(FIELDS + ["code", "math"]), inner, max_size=3),
), max_leaves=6)
configs = st.dictionaries(st.sampled_from(SECTIONS), st.one_of(
    values, st.dictionaries(st.sampled_from(FIELDS), values, max_size=4)), max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_fuzzed_config_is_accepted_or_rejected_with_a_config_error(payload):
    try:
        config = parse_config(payload, "fuzz.yaml")
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip()
        return
    # whatever is accepted is finite and in range where the schema says so
    assert config.study.proxies >= 2 and math.isfinite(config.space.max_epochs) and config.space.max_epochs > 0
    assert all(isinstance(v, (int, float, str, bool, dict, list, type(None))) for v in config.proxy.values())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzzed_yaml_text_never_escapes_as_another_exception(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text)
    try:
        config = load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert str(path) in message and "\n" not in message.strip(), message   # one line that names the file
        return
    # accepted: the text was a YAML mapping of sections (or empty), and the defaults filled the rest
    assert isinstance(yaml.safe_load(text), (dict, type(None))) and config.study.proxies >= 2


# -- a full disk while the runs table is written ----------------------------------------------------

def ok_row(run_id: str, domains) -> dict:
    row = {"run_id": run_id, "round": 0, "seed": 0, "preset": "p", "tokens": 1, "seconds": 0.1, "status": "ok",
           "attempt": 1, "recipe": "r"}
    for d in domains:
        row[f"w_{d}"] = 1 / len(domains)
        row[f"loss_{d}"] = 2.0
    return row


def test_full_disk_keeps_the_stored_runs_and_names_the_file(tmp_path, monkeypatch):
    domains = ["a", "b"]
    store = RunStore(tmp_path / "runs.parquet", domains)
    store.append([ok_row("first", domains)])
    before = (tmp_path / "runs.parquet").read_bytes()

    def no_space(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", no_space)
    with pytest.raises(StoreError, match=r"runs\.parquet.*No space left on device"):
        store.append([ok_row("second", domains)])
    monkeypatch.undo()
    assert (tmp_path / "runs.parquet").read_bytes() == before          # the old table, intact
    assert [p.name for p in tmp_path.iterdir()] == ["runs.parquet"]  # no half-written temporary left
    assert RunStore(tmp_path / "runs.parquet", domains).table["run_id"].to_list() == ["first"]
    assert isinstance(StoreError("x"), MixoptError)


# -- faults inside Ray workers: divergence and a worker that dies ------------------------------------

def tiny_spec(**changes):
    from workers.spec import ProxySpec

    base = dict(preset={"n_layer": 1, "n_head": 2, "d_model": 32, "d_ff": 64}, tokens=12 * 4 * 32, batch_size=4,
                seq_len=32, lr=3e-3, eval_tokens=256, device="cpu")
    base.update(changes)
    return ProxySpec(**base)


def collect(runner, mixtures, seeds):
    results = []
    runner.run(mixtures, seeds, lambda index, result: results.append((index, result)))
    return results


@pytest.mark.slow
def test_diverging_proxy_is_recorded_then_retried_at_a_lower_lr(fixture_corpus, ray_local):
    from mixopt.pipeline.runner import RayProxyRunner

    domains = ["code", "legal", "math"]
    runner = RayProxyRunner(str(fixture_corpus), domains, tiny_spec(lr=1e4), proxies_per_task=2,
                            retries=1, diverged_lr_factor=1e-6)
    mixtures = np.array([[0.6, 0.2, 0.2], [0.2, 0.2, 0.6]])
    results = collect(runner, mixtures, [0, 0])
    by_attempt = {(i, r["attempt"]): r["status"] for i, r in results}
    assert by_attempt == {(0, 1): "diverged", (1, 1): "diverged", (0, 2): "ok", (1, 2): "ok"}


@pytest.mark.slow
def test_worker_killed_mid_proxy_fails_its_pack_and_the_study_goes_on(fixture_corpus, ray_local, tmp_path):
    from mixopt.pipeline.runner import RayProxyRunner

    domains = ["code", "legal", "math"]
    marker = tmp_path / "worker-died"
    dying = RayProxyRunner(str(fixture_corpus), domains, tiny_spec(crash_once_marker=str(marker)),
                           proxies_per_task=1, retries=0)
    results = collect(dying, np.array([[0.5, 0.3, 0.2]]), [0])
    assert marker.exists()  # the worker really ran os._exit
    assert [r["status"] for _, r in results] == ["failed"] and "WorkerCrashedError" in results[0][1]["error"]

    # with a retry declared, Ray reruns the task on a new worker and the proxy succeeds
    marker.unlink()
    retried = RayProxyRunner(str(fixture_corpus), domains, tiny_spec(crash_once_marker=str(marker)),
                             proxies_per_task=1, retries=1)
    results = collect(retried, np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]), [0, 0])
    assert marker.exists() and sorted(r["status"] for _, r in results) == ["ok", "ok"]
