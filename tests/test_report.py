"""`mixopt report`: a study directory built from the real pieces (space, study, store, surrogate,
recommendation payload) over a synthetic loss, rendered to one self-contained HTML page."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import struct
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import polars as pl
import pytest

import mixopt.pipeline.results as results
import mixopt.surrogate as surrogates
from mixopt import DataError, MixtureSpace, Study
from mixopt.config import Config
from mixopt.io import atomic_write_json
from mixopt.pipeline.context import NOISE_ROUND
from mixopt.pipeline.runner import result_row
from mixopt.pipeline.store import RunStore, recipe_hash, run_key
from mixopt.stats import spearman
from mixopt.surrogate import LightGBMSurrogate
from mixopt.tools.report import load_study, response_mixtures, write_report
from mixopt.tools.report.plots import plot_cv

DOMAINS = ["web", "code", "books", "math"]
TOKENS = [4e9, 1e9, 5e8, 2e8]              # with target 1e10 and 4 epochs: caps 1, 0.4, 0.2, 0.08
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STATIC_PLOTS = ["cv_predicted_vs_observed.png", "mixture.png", "response_curves.png"]
ONLINE_PLOTS = ["online_weights.png", "online_losses.png"]


@dataclasses.dataclass
class FakeProxySpec:
    """Stands in for workers.spec.ProxySpec (recommendation_payload stores it with dataclasses.asdict)."""
    preset: str = "tiny"
    tokens: int = 2_000_000
    lr: float = 3e-3


def synthetic_losses(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per-domain losses (nats/token) of proxies trained on mixtures X: each domain's loss falls with
    its own weight and a little with related domains; another seed shifts every loss by about the
    same amount plus a small per-mixture jitter (common random numbers)."""
    X = np.atleast_2d(X)
    transfer = np.array([[1.0, 0.2, 0.5, 0.1],
                         [0.2, 1.0, 0.1, 0.4],
                         [0.6, 0.1, 1.0, 0.1],
                         [0.1, 0.5, 0.1, 1.0]])
    effective = X @ transfer.T
    base = np.array([3.2, 1.6, 3.4, 2.1])
    losses = base + 0.45 / (effective + 0.03) ** 0.35
    if seed:
        rng = np.random.default_rng(seed)
        losses = losses - 0.05 + rng.normal(0, 0.004, size=losses.shape)
    return losses


def make_study(directory: Path, budget: int = 24, fail: int = 2, noise_repeats: int = 2, rounds: int = 2,
               surrogate: str = "lightgbm", online: bool = False, metric: str = "loss", record_cv: bool = True) -> dict:
    """A study directory as `mixopt recommend` leaves it: runs.parquet, surrogate/, recommendation.json
    (from mixopt.pipeline.results.recommendation_payload; record_cv=False: without the out-of-fold
    predictions run by run, as older studies), and train_log.parquet when online=True."""
    directory.mkdir(parents=True, exist_ok=True)
    started = time.time()
    space = MixtureSpace(DOMAINS, TOKENS, target_tokens=1e10, max_epochs=4.0)
    config = Config(
        name="synthetic",
        study={"proxies": budget, "rounds": rounds, "seed": 0, "noise_repeats": noise_repeats},
        surrogate={"kind": surrogate},
        search={"candidates": 2000, "top_k": 50},
        objective={"metric": metric},
    )
    spec = FakeProxySpec()
    recipe = recipe_hash(dataclasses.asdict(spec))
    store = RunStore(directory / "runs.parquet", DOMAINS)
    study = Study(space, budget=budget, seed=0, rounds=rounds, surrogate=surrogate,
                  search_options={"candidates": 2000, "top_k": 50}, loss_names=DOMAINS)

    def train(X, seed, round_index, failures=0):
        losses = synthetic_losses(X, seed)
        rows = []
        for i, (w, loss) in enumerate(zip(X, losses)):
            if i >= len(X) - failures:
                result = {"status": "failed", "error": "RuntimeError: CUDA out of memory", "attempt": 2}
                losses[i] = np.nan
            else:
                result = {"status": "ok", "loss": dict(zip(DOMAINS, loss)),
                          "bpb": dict(zip(DOMAINS, loss / np.log(2) / 3.5)), "tokens": spec.tokens, "seconds": 2.0}
            rows.append(result_row(result, DOMAINS, w, seed, run_key(w, seed, recipe), round_index, spec, recipe))
        store.append(rows)
        return losses if metric == "loss" else losses / np.log(2) / 3.5

    round_index, first, told_ids = 0, None, []
    # one LightGBM thread: the tables are tiny, and two spin-waiting threads on a busy shared
    # machine made these fits ten times slower
    with mock.patch.dict(surrogates.SURROGATES, {"lightgbm": lambda seed: LightGBMSurrogate(seed=seed, threads=1)}):
        while not study.done:
            X = study.ask()
            first = X if first is None else first
            study.tell(X, train(X, 0, round_index, failures=fail if round_index == 0 else 0))
            told_ids += [run_key(w, 0, recipe) for w in X]
            round_index += 1
        if noise_repeats:
            train(first[:noise_repeats], 1000, NOISE_ROUND)
        result = study.recommend()
    surrogate_info = result.surrogate.save(directory / "surrogate")
    noise = results.noise_report(store, space, result.objective, metric, 0)
    corpus = SimpleNamespace(directory=directory / "corpus", version="test-v1")
    with mock.patch.object(results, "proxy_spec", lambda _config: spec):
        payload = results.recommendation_payload(config, corpus, space, result, surrogate_info, noise, store, started,
                                                 run_ids=told_ids if record_cv else None)
    atomic_write_json(directory / "recommendation.json", payload)
    if online:
        write_train_log(directory / "train_log.parquet")
    return payload


def write_train_log(path: Path, steps: int = 2000, every: int = 50) -> None:
    """A train_log.parquet as the online training command writes it."""
    step = np.arange(0, steps + 1, every)
    drift = np.stack([np.zeros_like(step, dtype=float), step / steps, 0.6 * np.sin(step / 300.0), -step / steps],
                     axis=1)
    logits = np.log([0.55, 0.2, 0.15, 0.1]) + drift
    weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    table = {"step": step, "tokens": step * 16 * 256, "phase": np.where(step < 400, "warmup", "adapt")}
    for j, d in enumerate(DOMAINS):
        table[f"w_{d}"] = weights[:, j]
        table[f"loss_{d}"] = [3.0, 1.5, 3.3, 2.0][j] + 2.5 * np.exp(-step / 600.0) - 0.1 * weights[:, j]
    table["train_loss"] = np.mean([table[f"loss_{d}"] for d in DOMAINS], axis=0) + 0.05
    pl.DataFrame(table).write_parquet(path)


def embedded_pngs(html_text: str) -> dict[str, bytes]:
    """alt text -> PNG bytes of every <img> embedded as base64."""
    return {alt: base64.b64decode(data) for alt, data in
            re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_text)}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("study")
    make_study(directory)
    return directory


@pytest.fixture(scope="module")
def report(study_dir) -> Path:
    return write_report(study_dir)


def test_report_embeds_every_static_plot_as_a_real_png(study_dir, report):
    assert report == study_dir / "report" / "index.html"
    text = report.read_text()
    images = embedded_pngs(text)
    assert len(images) == len(STATIC_PLOTS)
    for name in STATIC_PLOTS:
        data = (report.parent / name).read_bytes()
        assert data in images.values(), f"{name} is not embedded"
        width, height = png_size(data)
        assert width >= 500 and height >= 350, (name, width, height)
        assert len(data) > 15_000, f"{name} looks empty ({len(data)} bytes)"
    assert "<script" not in text.lower()
    for name in ONLINE_PLOTS:
        assert not (report.parent / name).exists()
    assert "Online training" not in text


def test_report_states_the_scores_the_recommendation_and_the_noise(study_dir, report):
    text = report.read_text()
    match = re.search(r"Spearman ρ = (-?[\d.]+), RMSE = ([\d.e-]+) nats/token, "
                      r"against a spread \(std\) of ([\d.e-]+)", text)
    assert match, "the CV caption lacks its scores"
    rho, rmse, spread = map(float, match.groups())
    study = load_study(study_dir)
    assert spread == pytest.approx(np.std(study.y, ddof=1), rel=1e-2)
    assert rho > 0.6 and 0 < rmse < spread     # on this smooth synthetic loss the surrogate ranks well
    payload = json.loads((study_dir / "recommendation.json").read_text())
    for domain, weight in zip(payload["domains"], payload["weights"]):
        assert f"<td>{domain}</td>" in text and f"{weight:.4f}" in text
    assert "seed noise" in text and "spread of the objective" in text
    assert f"{payload['noise']['seed_noise_std']:.4g}" in text


def cv_caption_spearman(report: Path) -> float:
    match = re.search(r"Spearman ρ = (-?[\d.]+), RMSE", report.read_text())
    assert match, "the CV caption lacks its Spearman"
    return float(match.group(1))


def test_the_cv_plot_draws_the_predictions_the_study_recorded(study_dir, report, tmp_path):
    """The report's cross-validated figure is recommendation.json's, run by run; a study that recorded
    none is cross-validated again by the report."""
    cv = json.loads((study_dir / "recommendation.json").read_text())["surrogate"]["cv"]
    study = load_study(study_dir)
    assert sorted(cv["run_ids"]) == sorted(study.run_ids)          # every finished main-seed run, once
    assert cv_caption_spearman(report) == pytest.approx(cv["spearman"], abs=5e-4)
    assert "as recommendation.json records it" in report.read_text()
    older = tmp_path / "older"
    payload = make_study(older, record_cv=False)
    assert "run_ids" not in payload["surrogate"]["cv"]
    text = write_report(older).read_text()
    assert "as recommendation.json records it" not in text and "fitted on the other folds" in text


def test_cross_validated_predictions_track_the_synthetic_truth(study_dir):
    """The CV plot's ingredients: on this smooth synthetic loss a linear surrogate ranks well."""
    from mixopt.surrogate import cross_val_predict, make_surrogate

    study = load_study(study_dir)
    assert len(study.X) == 24 - 2 and len(study.repeat_X) == 2  # failed runs and repeats kept apart
    predicted = cross_val_predict(lambda: make_surrogate("linear"), study.X, study.y)[:, 0]
    assert spearman(predicted, study.y) > 0.8


def test_online_plots_appear_only_with_a_train_log(tmp_path):
    make_study(tmp_path, budget=12, surrogate="linear", online=True)
    out = write_report(tmp_path, tmp_path / "elsewhere" / "page.html")
    assert out == tmp_path / "elsewhere" / "page.html" and not (tmp_path / "report").exists()
    text = out.read_text()
    images = embedded_pngs(text)
    assert len(images) == len(STATIC_PLOTS) + len(ONLINE_PLOTS)
    for name in STATIC_PLOTS + ONLINE_PLOTS:
        width, height = png_size((out.parent / name).read_bytes())
        assert width >= 500 and height >= 300
    assert "Online training" in text


def test_one_or_two_runs_skip_the_cv_plot_with_a_note(tmp_path):
    make_study(tmp_path, budget=4, fail=2, noise_repeats=0, rounds=1, surrogate="linear")
    text = write_report(tmp_path).read_text()
    assert "cross-validation needs at least 3" in text
    assert not (tmp_path / "report" / "cv_predicted_vs_observed.png").exists()
    assert (tmp_path / "report" / "mixture.png").exists()
    assert (tmp_path / "report" / "response_curves.png").exists()


def test_a_study_whose_runs_all_failed(tmp_path):
    payload = make_study(tmp_path, budget=6, fail=0, noise_repeats=0, surrogate="linear")
    runs = pl.read_parquet(tmp_path / "runs.parquet")
    failed = runs.with_columns(pl.lit("failed").alias("status"), pl.lit("worker died").alias("error"))
    failed.write_parquet(tmp_path / "runs.parquet")
    stale = [tmp_path / "report" / name for name in ["cv_predicted_vs_observed.png", "online_weights.png"]]
    for path in stale:   # plots of an earlier report that this one cannot draw
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(PNG_SIGNATURE)
    text = write_report(tmp_path).read_text()
    assert not any(path.exists() for path in stale)
    assert len(embedded_pngs(text)) == 1
    assert "No proxy run of this study finished" in text and "worker died" in text
    assert (tmp_path / "report" / "mixture.png").exists()
    # without a recommendation the error says that nothing finished and names the file
    (tmp_path / "recommendation.json").unlink()
    with pytest.raises(DataError, match=r"recommendation\.json.*no proxy run of the study finished.*failed: 6"):
        write_report(tmp_path)
    assert payload["n_runs"] == 6


def test_bpb_objective_reads_the_bpb_columns(tmp_path):
    make_study(tmp_path, budget=10, fail=0, noise_repeats=0, surrogate="linear", metric="bpb")
    study = load_study(tmp_path)
    runs = pl.read_parquet(tmp_path / "runs.parquet")
    expected = runs.select([f"bpb_{d}" for d in DOMAINS]).to_numpy().mean(axis=1)
    np.testing.assert_allclose(np.sort(study.y), np.sort(expected))
    plot = plot_cv(study)
    assert plot.png is not None and "bits/byte" in plot.caption


def test_missing_and_broken_inputs_raise_data_error_naming_the_file(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nowhere"))):
        write_report(tmp_path / "nowhere")
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "empty" / "recommendation.json"))):
        write_report(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "recommendation.json").write_text('{"domains": ["a", "b"], "weights": [0.5, ')
    with pytest.raises(DataError, match=r"recommendation\.json is not valid JSON"):
        write_report(broken)
    (broken / "recommendation.json").write_text(json.dumps({"domains": ["a", "b"], "weights": [0.5, 0.5]}))
    with pytest.raises(DataError, match=re.escape(str(broken / "runs.parquet"))):
        write_report(broken)
    (broken / "runs.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"cannot read .*runs\.parquet"):
        write_report(broken)
    pl.DataFrame({"status": ["ok"], "round": [0], "w_a": [0.5]}).write_parquet(broken / "runs.parquet")
    with pytest.raises(DataError, match=r"runs\.parquet lacks columns \['w_b'"):
        write_report(broken)


def test_response_mixtures_rescale_the_other_domains_proportionally():
    base = np.array([0.5, 0.3, 0.2])
    mixtures = response_mixtures(base, 1, np.array([0.0, 0.3, 0.9]))
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0)
    np.testing.assert_allclose(mixtures[1], base)
    np.testing.assert_allclose(mixtures[0], [0.5 / 0.7, 0.0, 0.2 / 0.7])
    np.testing.assert_allclose(mixtures[2, [0, 2]] / mixtures[2, [0, 2]].sum(), [0.5 / 0.7, 0.2 / 0.7])
