"""The `mixopt` command line: --help everywhere, the stages (sample, run, fit, propose) composing
into exactly what `recommend` gives, --json / --quiet output, and bad input as exit 2 with one
`error:` line.

The stage tests run in-process on the real fixture corpus, store, study, surrogate and search;
only the proxies are trained by another runner, given to `main` and `pipeline` in place of Ray: a
deterministic synthetic loss (Ray training is covered by test_pipeline_e2e.py and test_jobs.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import typer
import yaml

from mixopt.cli import app, main
from mixopt.data.corpus import Corpus
from mixopt.pipeline.results import SampleResult
from mixopt.stats import spearman
from workers.spec import ProxySpec

REPO = Path(__file__).resolve().parents[1]


# -- help --------------------------------------------------------------------------------------------
def command_paths(command=None, prefix=()) -> list[tuple[str, ...]]:
    """Every command and group of the app, as argument prefixes: (), ("sample",), ("data", "prepare"), ..."""
    command = command or typer.main.get_command(app)
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        paths.extend(command_paths(sub, prefix + (name,)))
    return paths


def test_every_command_and_group_has_help(capsys):
    paths = command_paths()
    names = {p[-1] for p in paths if p}
    assert {"recommend", "sample", "run", "fit", "propose", "export", "report", "data", "prepare",
            "train", "jacobian", "validate"} <= names
    for path in paths:
        assert main([*path, "--help"]) == 0, path
        out = capsys.readouterr().out
        assert "Usage: mixopt" in out and len(out.strip().splitlines()) > 4, path
        if path:
            text = " ".join(out.split())
            # the command's own description is there, not just the usage line
            summary = typer.main.get_command(app)
            for name in path:
                summary = summary.commands[name]
            first = (summary.help or "").split("\n")[0]
            assert first and " ".join(first.split())[:40] in text, path


def test_train_holds_the_recommendation_unless_told_otherwise(capsys):
    assert main(["train", "--help"]) == 0
    default = re.search(r"--online\b.*?\[default: (\w+)\]", capsys.readouterr().out, re.S)
    assert default and default.group(1) == "static"


def test_python_dash_m_and_bare_command_show_help():
    done = subprocess.run([sys.executable, "-m", "mixopt"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Usage: mixopt" in done.stdout and "propose" in done.stdout


# -- stages ------------------------------------------------------------------------------------------
class SyntheticRunner:
    """Trains no proxy: per-domain losses that fall with the domain's own weight (the runner
    protocol of mixopt.pipeline.runner.RayProxyRunner)."""

    def __init__(self, domains):
        self.domains = domains
        self.calls = 0

    def run(self, mixtures, seeds, on_result):
        self.calls += 1
        for i, (w, seed) in enumerate(zip(np.asarray(mixtures), seeds)):
            loss = 2.0 + 0.3 / (w + 0.05) ** 0.4 + (0.01 if seed else 0.0)
            on_result(i, {"status": "ok", "loss": dict(zip(self.domains, loss.tolist())),
                          "bpb": dict(zip(self.domains, (loss / np.log(2)).tolist())),
                          "tokens": 1000, "seconds": 0.01, "attempt": 1})


@pytest.fixture
def config_path(tmp_path, fixture_corpus) -> Path:
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    config["data"] = {"corpus": str(fixture_corpus)}
    config["study"].update(proxies=8, rounds=2, noise_repeats=2)
    config["surrogate"] = {"kind": "linear"}
    config["search"] = {"candidates": 2000, "top_k": 20}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def objective_of_runs(study_dir: Path, run_ids: list[str]) -> np.ndarray:
    """The objective each of these runs measured, from runs.parquet and recommendation.json's weights."""
    weights = json.loads((study_dir / "recommendation.json").read_text())["objective"]["weights"]
    runs = pl.read_parquet(study_dir / "runs.parquet").filter(pl.col("status") == "ok").unique("run_id")
    by_id = {row["run_id"]: sum(w * row[f"loss_{name}"] for name, w in weights.items() if w > 0)
             for row in runs.iter_rows(named=True)}
    return np.array([by_id[run_id] for run_id in run_ids])


@pytest.fixture
def runner(fixture_corpus) -> SyntheticRunner:
    return SyntheticRunner(Corpus.open(fixture_corpus).domains)     # the config trains every domain


def run_json(capsys, *args, runner=None) -> dict:
    code = main([*args, "--json"], runner=runner)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_stages_compose_into_what_recommend_gives(tmp_path, config_path, runner, capsys):
    cfg = ["--config", str(config_path)]
    staged = tmp_path / "staged"
    out = ["--out", str(staged)]

    first = run_json(capsys, "sample", *cfg, *out)
    assert first["round"] == 0 and first["pending"] == first["batch_size"] == 4
    proposed = pl.read_parquet(staged / "proposed.parquet")
    assert proposed.height == 4 and {"run_id", "seed", "round", "w_code"} <= set(proposed.columns)
    # sampling again without training proposes the same mixtures (deterministic replay)
    assert run_json(capsys, "sample", *cfg, *out)["mixtures"] == first["mixtures"]

    trained = run_json(capsys, "run", *cfg, *out, runner=runner)
    assert trained["trained"] == 4 and trained["ok"] == 4 and not trained["complete"]
    assert run_json(capsys, "run", *cfg, *out, runner=runner)["trained"] == 0          # resumable: nothing twice

    # a partial study can be fitted but not proposed from
    assert run_json(capsys, "fit", *cfg, *out)["complete"] is False
    assert main(["propose", *cfg, *out]) == 2
    assert capsys.readouterr().err.strip().startswith("error: the study is not complete")

    second = run_json(capsys, "sample", *cfg, *out)
    assert second["round"] == 1 and second["pending"] == 4
    assert {m["run_id"] for m in second["mixtures"]}.isdisjoint(m["run_id"] for m in first["mixtures"])
    run_json(capsys, "run", *cfg, *out, runner=runner)
    noise = run_json(capsys, "sample", *cfg, *out)
    assert noise["round"] == -1 and noise["pending"] == 2
    assert all(m["seed"] == 1000 for m in noise["mixtures"])
    assert run_json(capsys, "run", *cfg, *out, runner=runner)["complete"] is True
    assert run_json(capsys, "sample", *cfg, *out) == {"complete": True, "path": None, "pending": 0, "mixtures": []}
    assert not (staged / "proposed.parquet").exists()

    fitted = run_json(capsys, "fit", *cfg, *out)
    assert fitted["complete"] is True and fitted["n_fit"] == 8 and fitted["surrogate"]["kind"] == "linear"
    assert fitted["cv"]["folds"] == 5 and fitted["cv"]["rmse"] > 0 and -1 <= fitted["cv"]["spearman"] <= 1
    assert 0 <= fitted["cv"]["top1_regret"] <= 1
    assert json.loads((staged / "fit.json").read_text()) == fitted
    assert (staged / "surrogate").is_dir() and any((staged / "surrogate").iterdir())

    proposal = run_json(capsys, "propose", *cfg, *out)
    # fit and propose score the same out-of-fold predictions, recorded run by run: the recorded
    # Spearman is that of those predictions against the objective the runs measured
    cv = json.loads((staged / "recommendation.json").read_text())["surrogate"]["cv"]
    assert cv["spearman"] == pytest.approx(fitted["cv"]["spearman"]) and len(cv["run_ids"]) == cv["runs"] == 8
    measured = objective_of_runs(staged, cv["run_ids"])
    assert cv["spearman"] == pytest.approx(spearman(np.array(cv["predicted"]), measured))

    # the whole pipeline in one command, in a fresh directory
    whole = tmp_path / "whole"
    recommended = run_json(capsys, "recommend", *cfg, "--out", str(whole), runner=runner)
    assert recommended["weights"] == proposal["weights"]
    assert recommended["predicted_loss"] == proposal["predicted_loss"]
    assert json.loads((staged / "recommendation.json").read_text())["weights"] == proposal["weights"]
    ids = lambda d: sorted(pl.read_parquet(d / "runs.parquet")["run_id"].to_list())  # noqa: E731
    assert ids(staged) == ids(whole) and len(ids(whole)) == 10

    # a resumed recommend trains nothing: the runner is not called
    calls = runner.calls
    assert run_json(capsys, "recommend", *cfg, "--out", str(whole), runner=runner)["weights"] == proposal["weights"]
    assert runner.calls == calls

    # --quiet prints the result only; export and report speak JSON too
    assert main(["sample", *cfg, *out, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "complete" and captured.err == ""
    exported = run_json(capsys, "export", str(staged), "--format", "hf")
    assert exported == {"path": str(staged / "mixture.hf.json"), "format": "hf"}
    assert main(["export", str(staged), "--format", "yaml", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(staged / "mixture.yaml")


def test_pipeline_stage_api_is_typed_and_idempotent(tmp_path, config_path, runner):
    from mixopt import pipeline

    out = tmp_path / "study"
    first = pipeline.sample(config_path, out)
    assert isinstance(first, SampleResult) and first.frame().height == 4
    assert isinstance(first.frame(), pl.DataFrame)
    rec = pipeline.recommend(config_path, out, runner=runner)
    assert isinstance(rec.runs(), pl.DataFrame) and rec.runs().height == 10
    calls = runner.calls
    again = pipeline.recommend(config_path, out, runner=runner)          # resumed: nothing left to train
    assert again.weights.tolist() == rec.weights.tolist() and again.runs().height == 10 and runner.calls == calls
    loaded = pipeline.load(out)
    assert loaded.weights.tolist() == rec.weights.tolist()
    mixer = pipeline.online_mixer(rec, method="static", steps=10)
    np.testing.assert_allclose(mixer.ask(), rec.weights, atol=1e-9)
    np.testing.assert_allclose(mixer.upper, rec.payload["space"]["upper"])    # the study's repetition caps
    assert pipeline.online_mixer(rec, steps=10).options["perturb"] == 0.3            # real-training tilts
    assert pipeline.online_mixer(rec, steps=10, perturb=0.5).options["perturb"] == 0.5


class LengthAwareRunner(SyntheticRunner):
    """SyntheticRunner whose runs honour the recipe they are given: a shorter run (spec.tokens under
    the config's) has higher losses, the same for every mixture."""

    def __init__(self, domains, tokens):
        super().__init__(domains)
        self.tokens = tokens
        self.lengths = []

    def run(self, mixtures, seeds, on_result, spec=None):
        tokens = self.tokens if spec is None else spec.tokens
        self.lengths.append((len(mixtures), tokens))

        def shifted(index, result):
            extra = 0.5 * (1 - tokens / self.tokens)
            on_result(index, dict(result, tokens=tokens, loss={d: v + extra for d, v in result["loss"].items()}))
        super().run(mixtures, seeds, shifted)


def test_fidelity_trains_short_runs_first_and_records_their_tokens(tmp_path, config_path, fixture_corpus, capsys):
    config = yaml.safe_load(config_path.read_text())
    config["study"]["fidelity"] = {"short_proxies": 8, "short_tokens": 0.25}
    path = tmp_path / "fidelity.yaml"
    path.write_text(yaml.safe_dump(config))
    tokens = config["proxy"]["tokens"]
    runner = LengthAwareRunner(Corpus.open(fixture_corpus).domains, tokens)
    out = tmp_path / "study"
    recommended = run_json(capsys, "recommend", "--config", str(path), "--out", str(out), runner=runner)
    short = ProxySpec(**config["proxy"]).shortened(0.25).tokens
    # the short round first, then the two full-length rounds, then the seed-noise repeats at full length
    assert runner.lengths == [(8, short), (4, tokens), (4, tokens), (2, tokens)]
    runs = pl.read_parquet(out / "runs.parquet")
    assert sorted(runs.group_by("tokens").len().rows()) == sorted([(short, 8), (tokens, 10)])
    assert runs.filter(pl.col("tokens") == short)["round"].unique().to_list() == [0]
    payload = json.loads((out / "recommendation.json").read_text())
    assert payload["n_runs"] == 8 and payload["fidelity"]["short_tokens"] == short
    assert payload["fidelity"]["compute_in_full_runs"] == pytest.approx(8 + 8 * short / tokens)
    assert 0 < payload["fidelity"]["short_runs_fitted"] <= 8
    # the seed noise compares full-length runs only: the 2 repeats against their full-length twins
    assert payload["noise"]["repeats"] == 2
    # resumed: nothing trained again, the same answer
    calls = runner.calls
    again = run_json(capsys, "recommend", "--config", str(path), "--out", str(out), runner=runner)
    assert again["weights"] == recommended["weights"] and runner.calls == calls
    # the staged commands see the same study: complete, and fit scores the full-length runs
    assert run_json(capsys, "sample", "--config", str(path), "--out", str(out))["complete"] is True
    fitted = run_json(capsys, "fit", "--config", str(path), "--out", str(out))
    assert fitted["n_short_fitted"] == payload["fidelity"]["short_runs_fitted"]
    assert fitted["cv"]["spearman"] == pytest.approx(payload["surrogate"]["cv"]["spearman"])
    full_length = set(runs.filter((pl.col("tokens") == tokens) & (pl.col("round") >= 0))["run_id"].to_list())
    assert set(payload["surrogate"]["cv"]["run_ids"]) == full_length      # scored on the full-length runs
    assert main(["report", str(out), "--quiet"]) == 0


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["export", "{study}", "--format", "parquet"],
    ["export", "{study}", "--format", "hf", "--precision", "many"],
    ["recommend", "--config", "{config}", "--out", "{file}/study"],
    ["sample", "--config", "{config}", "--out", "{file}"],
    ["run", "--config", "{config}", "--out", "{tmp}/empty"],
    ["propose", "--config", "{config}", "--out", "{tmp}/empty"],
    ["fit", "--config", "{config}", "--out", "{tmp}/empty"],
    ["recommend", "--config", "{tmp}/missing.yaml", "--out", "{tmp}/x"],
    ["recommend", "--out", "{tmp}/x"],
    ["sample", "--config", "{config}", "--out", "{tmp}/x", "--bogus"],
    ["report", "{tmp}/nowhere"],
    ["frobnicate"],
])
def test_bad_input_exits_2_with_one_error_line(args, tmp_path, config_path, capsys):
    study = tmp_path / "study"
    study.mkdir()
    (study / "recommendation.json").write_text(json.dumps({"domains": ["a", "b"], "weights": [0.25, 0.75]}))
    regular_file = tmp_path / "a-file"
    regular_file.write_text("not a directory")
    names = {"study": study, "config": config_path, "file": regular_file, "tmp": tmp_path}
    code = main([a.format(**names) for a in args])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
