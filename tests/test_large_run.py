"""The large run: batch source, training loop under a mixer, resume, Ray mixer actor, the `mixopt train`
command. Real torch training on the fixture corpus."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import polars as pl
import pytest

from mixopt import online
from mixopt.config import parse_train_config
from mixopt.errors import ConfigError, InputError
from mixopt.large_run import RemoteMixer, build_mixer, mixer_actor, run_space, train_run
from workers.data import MixtureBatchSource

DOMAINS = ["code", "docs", "legal"]
TINY = {"n_layer": 1, "n_head": 2, "d_model": 32, "d_ff": 64}


@pytest.fixture(scope="module")
def corpus_dir(fixture_corpus) -> str:
    return str(fixture_corpus)


def _settings(corpus_dir, steps=24, **extra):
    payload = {"corpus": corpus_dir, "model": {"preset": TINY, "tokens": steps * 4 * 32, "batch_size": 4,
                                                 "seq_len": 32, "lr": 3e-3},
               "eval_tokens": 128, "final_eval_tokens": 256, "threads": 1,
               "online": {"options": {"auto": {"rounds": 6}, "aioli": {"lp_rounds": 1, "lp_steps": 2}}}}
    payload.update(extra)
    return parse_train_config(payload)


# ------------------------------------------------------------------ batch source
def test_batch_source_follows_changing_weights_and_resumes_exactly(corpus_dir):
    from mixopt.data.corpus import Corpus

    corpus = Corpus.open(corpus_dir)
    source = MixtureBatchSource(corpus, DOMAINS, batch_size=8, seq_len=16, seed=3, weights=[0.5, 0.25, 0.25])
    for _ in range(40):
        counts = source.counts(source.step)
        assert counts.sum() == 8 and np.all(np.abs(counts - 8 * source.weights) < 1)
        assert source.next_batch().shape == (8, 17)
    np.testing.assert_allclose(source.rows_taken / source.rows_taken.sum(), [0.5, 0.25, 0.25], atol=0.02)
    source.set_weights([0.0, 0.0, 1.0])
    before = source.rows_taken.copy()
    source.next_batch()
    assert (source.rows_taken - before).tolist() == [0, 0, 8]
    # resuming from the JSON state gives the very same batches
    state = json.loads(json.dumps(source.state_dict()))
    expected = [source.next_batch() for _ in range(3)]
    twin = MixtureBatchSource(corpus, DOMAINS, batch_size=8, seq_len=16, seed=3)
    twin.load_state_dict(state)
    for batch in expected:
        np.testing.assert_array_equal(twin.next_batch(), batch)


def test_batch_source_is_an_iterable_dataset_reading_a_weights_function(corpus_dir):
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    from mixopt.data.corpus import Corpus

    current = {"w": [1.0, 0.0, 0.0]}
    source = MixtureBatchSource(Corpus.open(corpus_dir), DOMAINS, 4, 16, seed=0,
                                weights_fn=lambda: current["w"], refresh_every=2)
    assert isinstance(source, IterableDataset)
    iterator = iter(DataLoader(source, batch_size=None))
    first = next(iterator)
    assert isinstance(first, torch.Tensor) and first.shape == (4, 17)
    current["w"] = [0.0, 1.0, 0.0]
    next(iterator)                                   # step 1: not refreshed yet
    assert source.weights.tolist() == [1.0, 0.0, 0.0]
    next(iterator)                                   # step 2: refreshed
    assert source.weights.tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(InputError, match="weights"):
        source.set_weights([1.0, -1.0, 1.0])


# ------------------------------------------------------------------ training loop
def test_train_run_logs_the_schema_the_report_reads(corpus_dir, tmp_path):
    from mixopt.data.corpus import Corpus

    settings = _settings(corpus_dir)
    study = {"config": {"space": {"max_weights": {"code": 0.5}}}}
    space = run_space(settings, DOMAINS, Corpus.open(corpus_dir).tokens("train"), study)
    mixer = build_mixer(settings, DOMAINS, prior=[0.6, 0.2, 0.2], method="auto", space=space)
    result = train_run(settings, DOMAINS, mixer, tmp_path / "run")
    log = pl.read_parquet(tmp_path / "run" / "train_log.parquet")
    for column in ["step", "tokens", "phase", "train_loss", *(f"w_{d}" for d in DOMAINS),
                   *(f"loss_{d}" for d in DOMAINS)]:
        assert column in log.columns
    assert log["step"].to_list()[-1] == settings.steps
    weights = log.select([f"w_{d}" for d in DOMAINS]).to_numpy()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(weights[0], [0.5, 0.25, 0.25])           # the prior, brought inside the study's bound
    assert weights[:, 0].max() <= 0.5 + 1e-9 and result["max_weights"]["code"] == 0.5
    assert result["status"] == "ok" and result["steps"] == settings.steps
    assert result["mixer"]["method"] == "auto" and result["mixer"]["options"]["perturb"] == 0.3   # what ran
    first = log.filter(pl.col("segment_steps") > 0).row(0, named=True)
    assert result["mean_loss"] < np.log(256)                            # learned something at all
    assert np.mean([log[f"loss_{d}"][-1] for d in DOMAINS]) < np.mean([first[f"loss_{d}"] for d in DOMAINS])
    assert (tmp_path / "run" / "weights.png").stat().st_size > 0
    # the mixer state is saved as JSON and reloads
    reloaded = online.load(tmp_path / "run" / "checkpoint" / "mixer.json")
    assert reloaded.done and reloaded.method == "auto"


class _Interrupt(Exception):
    pass


class _StopAfter:
    """A mixer that raises after `tells` tells (a killed training job)."""

    def __init__(self, mixer, tells):
        self.mixer, self.left = mixer, tells

    def __getattr__(self, name):
        return getattr(self.mixer, name)

    def tell(self, losses):
        self.mixer.tell(losses)
        self.left -= 1
        if self.left == 0:
            raise _Interrupt()


def test_a_killed_run_resumes_with_its_mixer_and_ends_where_an_uninterrupted_one_does(corpus_dir, tmp_path):
    settings = _settings(corpus_dir, steps=30)
    whole = train_run(settings, DOMAINS, build_mixer(settings, DOMAINS, None, method="aioli",),
                      tmp_path / "whole")
    with pytest.raises(_Interrupt):
        train_run(settings, DOMAINS, _StopAfter(build_mixer(settings, DOMAINS, None, method="aioli"), 5),
                  tmp_path / "resumed")
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "meta.json").read_text())
    assert 0 < state["step"] < settings.steps
    resumed = train_run(settings, DOMAINS, build_mixer(settings, DOMAINS, None, method="aioli"), tmp_path / "resumed")
    assert resumed["steps"] == whole["steps"] and resumed["probe_steps"] == whole["probe_steps"] > 0
    for d in DOMAINS:
        assert resumed["loss"][d] == pytest.approx(whole["loss"][d], rel=1e-5)
    a = pl.read_parquet(tmp_path / "whole" / "train_log.parquet")
    b = pl.read_parquet(tmp_path / "resumed" / "train_log.parquet")
    np.testing.assert_allclose(a.select([f"w_{d}" for d in DOMAINS]).to_numpy(),
                               b.select([f"w_{d}" for d in DOMAINS]).to_numpy(), atol=1e-9)


def test_end_phase_schedule_holds_the_upweighted_prior_at_the_end(corpus_dir):
    settings = _settings(corpus_dir, steps=40, online={"method": "auto", "options": {"auto": {"rounds": 4}},
                                                         "end_phase": {"fraction": 0.25, "upweight": {"legal": 3.0}}})
    mixer = build_mixer(settings, DOMAINS, prior=[0.5, 0.25, 0.25])
    assert isinstance(mixer, online.Schedule)
    losses = np.array([3.0, 3.0, 3.0])
    last = None
    while not mixer.done:
        p = mixer.ask()
        if mixer.step >= 30:
            last = p
        losses = losses - 0.01 * p * mixer.next_steps
        mixer.tell(losses)
    np.testing.assert_allclose(last, np.array([0.5, 0.25, 0.75]) / 1.5)


def test_online_mixers_keep_the_repetition_caps_and_bounds_of_the_run(corpus_dir):
    # the run reads 24 * 4 * 32 = 3072 tokens; code has 300 of them: at most 4 epochs -> 1200 / 3072
    options = {"auto": {"rounds": 6}, "aioli": {"lp_rounds": 1, "lp_steps": 2}}
    settings = _settings(corpus_dir, online={"options": options, "max_weights": {"legal": 0.5}})
    study = {"config": {"space": {"max_epochs": 2.0, "max_weights": {"docs": 0.35, "legal": 0.9},
                                  "min_weights": {"legal": 0.1}}}}
    tokens = {"code": 300, "docs": 10_000, "legal": 10_000}
    space = run_space(settings, DOMAINS, tokens, study)
    np.testing.assert_allclose(space.upper, [2 * 300 / 3072, 0.35, 0.5])    # the train config's legal wins
    np.testing.assert_allclose(space.lower, [0.0, 0.0, 0.1])
    assert run_space(settings, DOMAINS, tokens).upper[0] == pytest.approx(4 * 300 / 3072)
    for method in ("auto", "aioli", "stratified", "static"):
        mixer = build_mixer(settings, DOMAINS, prior=[0.6, 0.2, 0.2], method=method, space=space)
        losses = np.full(3, 3.0)
        while not mixer.done:
            p = mixer.ask()
            assert np.all(p <= space.upper + 1e-9) and np.all(p >= space.lower - 1e-9), (method, p)
            losses = losses - 0.01 * p * mixer.next_steps
            mixer.tell(losses)
    with pytest.raises(InputError, match="no mixture is feasible"):
        run_space(settings, DOMAINS, {"code": 100, "docs": 100, "legal": 100})
    with pytest.raises(InputError, match="no training tokens"):
        run_space(settings, DOMAINS, {"code": 100, "docs": 100})
    bad = _settings(corpus_dir, online={"max_weights": {"books": 0.5}})
    with pytest.raises(InputError, match="books"):
        run_space(bad, DOMAINS, tokens)


def test_training_runs_give_auto_the_gentle_tilts_unless_the_config_sets_them(corpus_dir):
    """Real training takes online.TRAINING_OPTIONS (auto: perturb 0.3, the narrower control) under the
    config's own options; create() alone keeps the simulator defaults (perturb 1, a factor of 4)."""
    simulator = online.create("auto", 3, 100).options
    assert simulator["perturb"] == 1.0 and simulator["max_tilt"] == pytest.approx(math.log(4.0))
    plain = build_mixer(_settings(corpus_dir, online={"options": {"auto": {"rounds": 6}}}), DOMAINS, None)
    assert plain.options["perturb"] == 0.3 and plain.options["rounds"] == 6
    assert plain.options["max_tilt"] == pytest.approx(math.log(3.0)) and plain.options["leak"] == 0.05
    set_here = _settings(corpus_dir, online={"options": {"auto": {"perturb": 0.8}}})
    assert build_mixer(set_here, DOMAINS, None).options["perturb"] == 0.8
    scheduled = _settings(corpus_dir, online={"end_phase": {"fraction": 0.25, "upweight": {"legal": 2.0}}})
    schedule = build_mixer(scheduled, DOMAINS, None)
    schedule.ask()
    assert schedule.mixer.options["perturb"] == 0.3
    assert online.training_options("aioli", {"lp_rounds": 2}) == {"lp_rounds": 2}


def test_bad_train_config_and_bad_method_raise_typed_errors(corpus_dir):
    with pytest.raises(ConfigError, match="model.learning_rate"):
        parse_train_config({"model": {"learning_rate": 1.0}})
    with pytest.raises(ConfigError, match="eval_tokens"):
        parse_train_config({"eval_tokens": 0})
    with pytest.raises(InputError, match="online"):
        build_mixer(_settings(corpus_dir), DOMAINS, None, method="best")


def test_train_command_rejects_bad_input(corpus_dir, tmp_path):
    import typer
    from typer.testing import CliRunner

    from mixopt.cli.large_run import train

    app = typer.Typer()
    app.command()(train)
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({"corpus": corpus_dir, "model": {"preset": TINY, "tokens": 4096}}))
    result = CliRunner().invoke(app, ["--config", str(config), "--online", "bogus", "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, InputError) and "online" in str(result.exception)
    result = CliRunner().invoke(app, ["--config", str(config), "--online", "static", "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, InputError) and "mixture" in str(result.exception)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"domains": ["code"], "weights": [1.0, 2.0]}))
    result = CliRunner().invoke(app, ["--config", str(config), "--mixture", str(bad), "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, InputError)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"domains": DOMAINS, "weights": [0.5, 0.3, 0.2]}))
    jacobian = tmp_path / "jacobian.json"
    jacobian.write_text(json.dumps({"format": "mixopt-jacobian/1", "domains": DOMAINS,
                                    "jacobian": (-np.eye(3)).tolist()}))
    result = CliRunner().invoke(app, ["--config", str(config), "--mixture", str(good), "--online", "static",
                                      "--jacobian", str(jacobian), "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, InputError) and "only the auto mixer" in str(result.exception)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ Ray: one mixer, two workers
@pytest.mark.slow    # starts its own Ray cluster
def test_two_workers_share_one_named_mixer_actor():
    import ray

    from mixopt.pipeline.runner import init_ray

    init_ray(num_cpus=1)
    try:
        steps = 12
        mixer = online.create("auto", domains=DOMAINS, steps=steps, seed=0, rounds=4)
        handle = mixer_actor("mixer-test", mixer, workers=2)
        seen = {0: [], 1: []}
        errors = []

        def worker(rank):
            try:
                remote = RemoteMixer(mixer_actor("mixer-test"), DOMAINS, steps)   # found by name
                losses = np.array([3.0, 3.0, 3.0]) + rank
                while not remote.done:
                    p = remote.ask()
                    seen[rank].append((p.tolist(), remote.next_steps))
                    losses = losses - 0.1 * p
                    remote.tell(losses)
            except Exception as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(rank,)) for rank in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors
        assert seen[0] == seen[1] and len(seen[0]) >= 2                  # the same proportions for both
        state = ray.get(handle.state.remote())
        assert state["step"] == steps and state["round"] == len(seen[0])  # told once per round, not twice
        twin = online.create("auto", domains=DOMAINS, steps=steps, seed=0, rounds=4)
        losses = np.array([3.5, 3.5, 3.5])                               # the mean of both workers' losses
        for p, n in seen[0]:
            np.testing.assert_allclose(twin.ask(), p)
            assert twin.next_steps == n
            losses = losses - 0.1 * np.asarray(p)
            twin.tell(losses)
    finally:
        ray.shutdown()


def test_mixer_service_passes_on_the_steps_its_workers_trained():
    """Workers that evaluate on their own interval tell the steps they trained; they must agree."""
    import asyncio

    from mixopt.large_run import MixerService

    async def scenario():
        service = MixerService(online.create("auto", domains=DOMAINS, steps=100, seed=0).state_dict(), workers=2)
        await service.ask(0)
        await service.tell(0, [3.0, 3.0, 3.0], 0)
        with pytest.raises(InputError, match="another told 0"):
            await service.tell(0, [3.0, 3.0, 3.0], 5)
        assert await service.tell(0, [3.0, 3.0, 3.0], 0) == 1
        await service.ask(1)
        await service.tell(1, [2.9, 3.0, 3.0], 7)
        assert await service.tell(1, [2.9, 3.0, 3.0], 7) == 2
        single = MixerService(service.mixer.state_dict(), workers=1)
        await single.ask(0)
        with pytest.raises(InputError, match="exceed the 93 steps left"):
            await single.tell(0, [2.8, 3.0, 3.0], 94)
        assert await single.tell(0, [2.8, 3.0, 3.0], 93) == 1            # told again, and taken
        return service.mixer, single.mixer

    mixer, single = asyncio.run(scenario())
    assert mixer.step == 7 and mixer.round == 2
    assert single.step == 100 and single.done
