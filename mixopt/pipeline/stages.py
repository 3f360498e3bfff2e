"""The static pipeline as separate stages over one study directory.

    sample   -> DIR/proposed.parquet   the next batch of mixtures to train (a round, or the seed-noise repeats)
    run      -> DIR/runs.parquet       trains the proposed proxies on Ray, appending each result (resumable)
    fit      -> DIR/surrogate/, DIR/fit.json   the surrogate in text/JSON form and its cross-validated scores
    propose  -> DIR/recommendation.json        searches the space with the surrogate

`mixopt recommend` (recommend_stages) is these stages in a loop: sample, run, ... until the study
is complete, then propose. Every stage reopens the study directory (mixopt/pipeline/context.py) and
replays the study from runs.parquet (mixopt/pipeline/replay.py), so the stages compose into
exactly the result of `recommend`. `recommend`, when it resumes, trains a round's failed runs
again before telling it; `run` does so only with retry_failed=True (`mixopt run --retry-failed`).

Nothing here starts Ray to train except `run_stage` and `recommend_stages`, and only when something
is to be trained and no other runner was given. Any stage that opens a study whose corpus is built
from the config's own sources (data.sources / split / eval) builds it on Ray first when it is
missing or stale (mixopt/pipeline/context.py: open_corpus).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mixopt.config import Config
from mixopt.errors import ConfigError, StoreError, StudyError
from mixopt.io import atomic_write_json, atomic_write_parquet, json_ready
from mixopt.pipeline.context import NOISE_ROUND, Reporter, StudyContext, open_study
from mixopt.pipeline.replay import Batch, advance, pending_runs, round_fraction
from mixopt.pipeline.results import (
    FIT_FILE,
    RECOMMENDATION_FILE,
    FitResult,
    Recommendation,
    RunResult,
    SampleResult,
    noise_report,
    recommendation_payload,
)
from mixopt.pipeline.store import STATUS_DIVERGED, STATUS_OK, run_key
from mixopt.stats import spearman, top1_regret

PROPOSED_FILE = "proposed.parquet"
CV_FOLDS = 5


# -- training a batch ---------------------------------------------------------------------------------
def train_batch(ctx: StudyContext, batch: Batch, todo: list[int], reporter: Reporter) -> dict:
    """Train the proxies at positions `todo` of the batch with the study's runner (Ray unless another
    was given), storing each result as it comes.

    Returns counts: {"trained", "ok", "failed"} (a proxy retried after divergence counts once)."""
    from mixopt.pipeline.runner import result_row, study_runner

    counts = {"trained": 0, "ok": 0, "failed": 0}
    reporter.proxies(len(batch), len(batch) - len(todo), batch.description)
    if not todo:
        reporter.proxies_finished()
        return counts
    if ctx.runner is None:
        ctx.runner = study_runner(ctx.config, str(ctx.corpus.directory.resolve()), ctx.domains, ctx.spec, reporter)
    runner = ctx.runner
    retries = ctx.config.study.retries
    spec, recipe = batch.spec, batch.recipe
    # another length than the study's (a multi-fidelity study's short runs) is named to the runner
    length = {} if recipe == ctx.recipe else {"spec": spec}

    def on_result(position: int, result: dict) -> None:
        index = todo[position]
        ctx.store.append([result_row(result, ctx.domains, batch.mixtures[index], batch.seeds[index],
                                     batch.run_ids[index], batch.round_index, spec, recipe)])
        will_retry = result["status"] == STATUS_DIVERGED and result.get("attempt", 1) <= retries
        if not will_retry:
            counts["trained"] += 1
            counts["ok" if result["status"] == STATUS_OK else "failed"] += 1
            reporter.proxy_done(result["status"])

    try:
        runner.run(batch.mixtures[todo], [batch.seeds[i] for i in todo], on_result, **length)
    finally:
        reporter.proxies_finished()
    return counts


# -- stage: sample -----------------------------------------------------------------------------------
def proposed_frame(ctx: StudyContext, batch: Batch, pending: list[int]):
    import polars as pl

    columns = {
        "run_id": batch.run_ids,
        "round": [batch.round_index] * len(batch),
        "seed": batch.seeds,
        "pending": [i in pending for i in range(len(batch))],
        "recipe": [batch.recipe] * len(batch),
        "config_hash": [ctx.config.digest()] * len(batch),
    }
    for j, domain in enumerate(ctx.domains):
        columns[f"w_{domain}"] = batch.mixtures[:, j].astype(np.float64)
    return pl.DataFrame(columns)


def sample_stage(config: Config, out_dir: str | Path, reporter: Reporter | None = None) -> SampleResult:
    """Write the study's next batch of mixtures to DIR/proposed.parquet (removed when complete)."""
    ctx = open_study(config, out_dir, reporter)
    batch = advance(ctx)
    path = ctx.out_dir / PROPOSED_FILE
    if batch is None:
        path.unlink(missing_ok=True)
        return SampleResult(ctx.out_dir, None, None, [], ctx.domains)
    pending = pending_runs(ctx, batch)
    table = proposed_frame(ctx, batch, pending)
    atomic_write_parquet(path, table)
    return SampleResult(ctx.out_dir, path, batch, pending, ctx.domains, table)


# -- stage: run ---------------------------------------------------------------------------------------
def read_proposed(ctx: StudyContext) -> Batch:
    import polars as pl

    path = ctx.out_dir / PROPOSED_FILE
    if not path.exists():
        raise StudyError(f"no proposed mixtures at {path}: run `mixopt sample --out {ctx.out_dir}` first")
    try:
        table = pl.read_parquet(path)
    except Exception as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    weight_columns = [f"w_{d}" for d in ctx.domains]
    missing = [c for c in ["run_id", "round", "seed", "recipe"] + weight_columns if c not in table.columns]
    if missing:
        raise StoreError(f"{path} lacks columns {missing[:4]}: it was written for other domains; "
                         "run `mixopt sample` again")
    round_index = int(table["round"][0]) if table.height else 0
    spec, recipe = ctx.spec_at(round_fraction(ctx, round_index))
    recipes = set(table["recipe"].to_list())
    if recipes and recipes != {recipe}:
        raise ConfigError(f"{path} was sampled for another proxy recipe than this config's; "
                          "run `mixopt sample` again with this config")
    mixtures = ctx.space.validate(table.select(weight_columns).to_numpy().astype(np.float64), str(path))
    seeds = [int(s) for s in table["seed"].to_list()]
    description = "seed-noise repeats" if round_index == NOISE_ROUND else f"round {round_index + 1}"
    expected = [run_key(w, s, recipe) for w, s in zip(mixtures, seeds)]
    if expected != table["run_id"].to_list():
        raise StoreError(f"{path}: run_id does not match the mixtures and seeds; run `mixopt sample` again")
    return Batch(mixtures, seeds, round_index, expected, description, spec, recipe)


def run_stage(config: Config, out_dir: str | Path, reporter: Reporter | None = None, retry_failed: bool = False,
              runner=None) -> RunResult:
    """Train the proxies listed in DIR/proposed.parquet that the store does not hold yet (with
    `runner`; None: on Ray)."""
    reporter = reporter or Reporter()
    ctx = open_study(config, out_dir, reporter, runner)
    batch = read_proposed(ctx)
    todo = pending_runs(ctx, batch, retry_failed)
    counts = train_batch(ctx, batch, todo, reporter)
    # complete when this was the last batch and it is now settled (without replaying later rounds,
    # whose asking fits the surrogate)
    last = (batch.round_index == NOISE_ROUND
            or (batch.round_index == len(ctx.study.round_sizes) - 1 and not config.study.noise_repeats))
    complete = last and not pending_runs(ctx, batch)
    return RunResult(ctx.out_dir, batch.description, len(batch), counts["trained"], counts["ok"],
                     counts["failed"], len(ctx.store), complete)


# -- stage: fit ---------------------------------------------------------------------------------------
def fit_stage(config: Config, out_dir: str | Path, reporter: Reporter | None = None) -> FitResult:
    """Fit the surrogate on every finished run told so far, as the study's recommend() does; save it
    (LightGBM text / JSON) under DIR/surrogate and its cross-validated scores in DIR/fit.json."""
    reporter = reporter or Reporter()
    ctx = open_study(config, out_dir, reporter)
    complete = advance(ctx) is None
    study = ctx.study
    if study.Y is None:
        raise StudyError(f"no finished round in {ctx.store.path}: run `mixopt sample` and `mixopt run` first")
    weights = study.objective
    with reporter.busy(f"fitting the {config.surrogate.kind} surrogate and ranking the runs out of fold"):
        try:
            fit = study.fit_surrogate()
        except StudyError as exc:
            raise StudyError(f"{exc} (see {ctx.store.path} for the errors)") from None
        info = fit.model.save(ctx.out_dir / "surrogate")
    cv = {"folds": None, "rmse": None, "spearman": None, "top1_regret": None}
    if fit.cv_predicted is not None:
        predicted, observed = fit.cv_predicted, (fit.Y @ weights)[fit.top]   # the full-length runs
        cv = {"folds": min(CV_FOLDS, len(fit.X)), "rmse": float(np.sqrt(np.mean((predicted - observed) ** 2))),
              "spearman": spearman(predicted, observed), "top1_regret": top1_regret(predicted, observed),
              "observed_std": float(np.std(observed, ddof=1))}
    payload = json_ready({
        "surrogate": {**info, "cv_rmse": dict(getattr(fit.model, "cv_scores_", {}))},
        "cv": cv,
        "fit": study.fit_target,
        "columns": [ctx.loss_names[c] for c in fit.columns] if fit.columns is not None else "objective",
        "objective": {"metric": ctx.metric, "weights": dict(zip(ctx.loss_names, weights.tolist()))},
        "n_runs": int(len(study.Y)),
        "n_fit": int(len(fit.X)),
        "n_short_fitted": int(np.sum(~fit.top)),
        "complete": complete,
        "config_hash": config.digest(),
        "seconds": round(time.time() - ctx.started, 2),
    })
    atomic_write_json(ctx.out_dir / FIT_FILE, payload)
    return FitResult(ctx.out_dir, payload)


# -- stage: propose (and the end of recommend) ------------------------------------------------------
def finish(ctx: StudyContext, reporter: Reporter) -> Recommendation:
    """Fit, search, and write recommendation.json and surrogate/; the Recommendation."""
    with reporter.busy(f"fitting the surrogate and searching ({ctx.config.search.method})"):
        try:
            result = ctx.study.recommend()
        except StudyError as exc:
            raise StudyError(f"{exc}; see {ctx.store.path} for the errors") from None
        surrogate_info = result.surrogate.save(ctx.out_dir / "surrogate")
    noise = noise_report(ctx.store, ctx.space, result.objective, ctx.metric, ctx.config.study.seed, ctx.recipe)
    payload = json_ready(recommendation_payload(ctx.config, ctx.corpus, ctx.space, result, surrogate_info, noise,
                                                ctx.store, ctx.started, run_ids=ctx.told_run_ids))
    atomic_write_json(ctx.out_dir / RECOMMENDATION_FILE, payload)
    return Recommendation(
        domains=ctx.space.domains,
        weights=result.weights,
        predicted_loss=result.predicted,
        natural_weights=result.natural,
        natural_predicted_loss=result.natural_predicted,
        n_runs=result.n_runs,
        config_hash=ctx.config.digest(),
        out_dir=ctx.out_dir,
        payload=payload,
    )


def propose_stage(config: Config, out_dir: str | Path, reporter: Reporter | None = None) -> Recommendation:
    """Search with the surrogate of a complete study and write DIR/recommendation.json (the same
    file, to the bit, that `mixopt recommend` writes from the same runs)."""
    reporter = reporter or Reporter()
    ctx = open_study(config, out_dir, reporter)
    batch = advance(ctx)
    if batch is not None:
        pending = pending_runs(ctx, batch)
        raise StudyError(f"the study is not complete: {batch.description} has {len(pending)} of {len(batch)} "
                         f"proxies to train; run `mixopt sample` and `mixopt run --out {ctx.out_dir}` first")
    return finish(ctx, reporter)


def recommend_stages(config: Config, out_dir: str | Path, reporter: Reporter | None = None,
                     runner=None) -> Recommendation:
    """The whole static pipeline: every batch trained in turn (failed runs retried on resume, with
    `runner`; None: on Ray), then propose."""
    reporter = reporter or Reporter()
    ctx = open_study(config, out_dir, reporter, runner)
    advance(ctx, train=lambda batch, todo: train_batch(ctx, batch, todo, reporter), retry_failed=True)
    return finish(ctx, reporter)
