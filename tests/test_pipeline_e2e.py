"""End to end: the smoke config through the real CLI, a real local Ray cluster (2 CPUs), real
torch proxies on the fixture corpus, real LightGBM; then resume and SIGKILL survival."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def smoke_config(tmp_path: Path, proxy: dict | None = None, **study) -> Path:
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    config["data"]["corpus"] = str(tmp_path / "corpus")
    config["study"].update(study)
    config["proxy"].update(proxy or {})
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def mixopt_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mixopt", *args]


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(mixopt_command(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def check_outputs(out: Path, config: dict) -> tuple[dict, pl.DataFrame]:
    recommendation = json.loads((out / "recommendation.json").read_text())
    runs = pl.read_parquet(out / "runs.parquet")
    domains = recommendation["domains"]
    weights = np.array(recommendation["weights"])
    assert len(domains) == 7 and weights.shape == (7,)
    assert abs(weights.sum() - 1) < 1e-9
    upper = np.array(recommendation["space"]["upper"])
    assert np.all(weights >= -1e-12) and np.all(weights <= upper + 1e-9)
    assert np.isfinite(recommendation["predicted_loss"]) and np.isfinite(recommendation["natural_predicted_loss"])
    assert recommendation["n_runs"] == config["study"]["proxies"]
    expected_rows = config["study"]["proxies"] + config["study"]["noise_repeats"]
    finished = runs.filter(pl.col("status") == "ok")
    assert finished["run_id"].n_unique() == expected_rows
    for column in [*(f"w_{d}" for d in domains), *(f"loss_{d}" for d in domains),
                   "seed", "preset", "tokens", "seconds", "status"]:
        assert column in runs.columns
    losses = finished.select([f"loss_{d}" for d in domains]).to_numpy()
    assert np.all(np.isfinite(losses)) and np.all(losses > 0) and np.all(losses < np.log(256) + 1)
    # different mixtures give different losses (the proxies really trained on their mixtures)
    assert np.ptp(losses.mean(axis=1)) > 1e-3
    # the gain over natural is stated with its interval; without a significant one, natural is kept
    gain = recommendation["gain"]
    assert gain["low"] <= gain["estimate"] <= gain["high"] and gain["level"] == 0.95
    # the estimate keeps the calibrated share of the surrogate's predicted difference, as stated
    assert 0 <= gain["calibration"] <= 1
    predicted_difference = gain["candidate_predicted_loss"] - recommendation["natural_predicted_loss"]
    assert gain["estimate"] == pytest.approx(gain["calibration"] * predicted_difference, abs=1e-9)
    if gain["significant"]:
        assert gain["high"] < 0 and np.allclose(weights, [gain["candidate"][d] for d in domains])
        assert gain["verdict"].startswith("significant gain over natural")
    else:
        assert np.allclose(weights, recommendation["natural_weights"])
        assert gain["verdict"].startswith("no significant gain: keep natural")
    cv = recommendation["surrogate"]["cv"]
    assert cv["runs"] == config["study"]["proxies"] and -1 <= cv["spearman"] <= 1 and 0 <= cv["top1_regret"] <= 1
    assert sorted(cv["run_ids"]) == sorted(finished.filter(pl.col("round") >= 0)["run_id"].unique().to_list())
    return recommendation, runs


def test_smoke_study_end_to_end_then_resume_does_no_training(tmp_path):
    config_path = smoke_config(tmp_path)
    config = yaml.safe_load(config_path.read_text())
    out = tmp_path / "study"
    first = run_cli("recommend", "--config", str(config_path), "--out", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Recommended mixture" in first.stdout and "predicted loss" in first.stdout
    assert "significant gain" in first.stdout and "out of fold: Spearman" in first.stdout
    recommendation, runs = check_outputs(out, config)

    again = run_cli("recommend", "--config", str(config_path), "--out", str(out), "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads(again.stdout)
    assert pl.read_parquet(out / "runs.parquet").height == runs.height  # nothing trained twice
    assert resumed["weights"] == recommendation["weights"]
    assert resumed["predicted_loss"] == recommendation["predicted_loss"]


def test_sigkill_after_first_runs_then_resume_loses_nothing(tmp_path):
    # one proxy per task, so that runs are stored one by one; shorter proxies keep the test quick
    config_path = smoke_config(tmp_path, proxy={"tokens": 65536}, proxies_per_task=1, noise_repeats=0)
    config = yaml.safe_load(config_path.read_text())
    out = tmp_path / "study"
    runs_path = out / "runs.parquet"
    driver = subprocess.Popen(
        mixopt_command("recommend", "--config", str(config_path), "--out", str(out), "--quiet"),
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    deadline = time.time() + 300
    stored = 0
    while time.time() < deadline and driver.poll() is None:
        if runs_path.exists():
            stored = pl.read_parquet(runs_path).height
            if stored >= 2:
                break
        time.sleep(0.2)
    assert driver.poll() is None, "the study finished before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = pl.read_parquet(runs_path)  # readable after SIGKILL
    assert before.height >= 2
    assert before.height < config["study"]["proxies"]

    resumed = run_cli("recommend", "--config", str(config_path), "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = pl.read_parquet(runs_path)
    # every run stored before the kill is kept exactly, and none is trained twice
    assert after.head(before.height).equals(before)
    assert after["run_id"].n_unique() == after.height == config["study"]["proxies"]
    recommendation, _ = check_outputs(out, config)

    # the same runs give the same recommendation as a study that was never interrupted
    replay = run_cli("recommend", "--config", str(config_path), "--out", str(out), "--json")
    assert replay.returncode == 0
    assert json.loads(replay.stdout)["weights"] == recommendation["weights"]
