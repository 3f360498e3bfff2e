"""The static pipeline as separate stages over one study directory.

    sample   -> DIR/proposed.parquet   the next batch of mixtures to train (a round, or the seed-noise repeats)
    run      -> DIR/runs.parquet       trains the proposed proxies on Ray, appending each result (resumable)
    fit      -> DIR/surrogate/, DIR/fit.json   the surrogate in text/JSON form and its cross-validated scores
    propose  -> DIR/recommendation.json        searches the space with the surrogate

`mixopt recommend` (run_recommend) is these stages in a loop: sample, run, ... until the study is
complete, then propose. Every stage replays the study from runs.parquet: asking is deterministic
given the seed and what has been told, so each round's mixtures (and their run_ids) are the same
whichever way the study is driven, and the stages compose into exactly the result of `recommend`.

A round is *settled* when each of its runs has a final row in the store: "ok", "failed", or
"diverged" past its retries. A settled round is told to the study (failed runs as NaN rows) and the
next one is asked. `recommend`, when it resumes, trains a round's failed runs again before telling
it; `run` does so only with retry_failed=True (`mixopt run --retry-failed`).

Nothing here starts Ray except `run_stage` (and run_recommend), and only when something is to be
trained.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixopt.config import Config, proxy_spec
from mixopt.errors import ConfigError, InputError, StoreError, StudyError
from mixopt.io import atomic_write_json, atomic_write_parquet, json_ready
from mixopt.space import MixtureSpace
from mixopt.stats import spearman
from mixopt.store import STATUS_DIVERGED, STATUS_FAILED, STATUS_OK, RunStore, recipe_hash, run_key
from mixopt.study import Study

NOISE_SEED_OFFSET = 1000
NOISE_ROUND = -1
PROPOSED_FILE = "proposed.parquet"
FIT_FILE = "fit.json"
RECOMMENDATION_FILE = "recommendation.json"
CV_FOLDS = 5


# -- the study directory, opened --------------------------------------------------------------------
@dataclass
class StudyContext:
    """One configuration over one study directory: corpus, space, store and the replayed Study."""

    config: Config
    out_dir: Path
    spec: object                 # workers.spec.ProxySpec
    recipe: str
    corpus: object               # mixopt.data.corpus.Corpus
    space: MixtureSpace
    store: RunStore
    study: Study
    started: float
    first_round: np.ndarray | None = None
    noise_told: bool = False     # the seed-noise repeats are settled (they are measured, not told)
    runner: object | None = None

    @property
    def metric(self) -> str:
        return self.config.objective.metric

    @property
    def domains(self) -> list[str]:
        return self.space.domains


@dataclass
class Batch:
    """Proxies to train together: one round of the study, or the seed-noise repeats."""

    mixtures: np.ndarray         # (n, K)
    seeds: list[int]
    round_index: int             # 0, 1, ... ; NOISE_ROUND for the repeats
    run_ids: list[str]
    description: str

    def __len__(self) -> int:
        return len(self.run_ids)


def prepare_out_dir(out_dir: str | Path) -> Path:
    """The study directory, created with its parents; InputError naming --out when that fails."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out_dir}: cannot create the study directory ({exc.strerror or exc})") from None
    probe = out_dir / f".mixopt-write-test.{time.time_ns()}.tmp"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"--out {out_dir}: the study directory is not writable ({exc.strerror or exc})") from None
    return out_dir


def make_study(config: Config, space: MixtureSpace) -> Study:
    return Study(
        space,
        budget=config.study.proxies,
        objective=config.objective.weights,
        seed=config.study.seed,
        rounds=config.study.rounds,
        surrogate=config.surrogate.kind,
        search=config.search.method,
        search_options={"candidates": config.search.candidates, "top_k": config.search.top_k},
        loss_names=space.domains,
    )


def open_study(config: Config, out_dir: str | Path, reporter=None) -> StudyContext:
    """Check --out, open (preparing if configured) the corpus, build the space, open the store."""
    from mixopt.recommend import Reporter, build_space, open_corpus

    reporter = reporter or Reporter()
    started = time.time()
    out_dir = prepare_out_dir(out_dir)
    spec = proxy_spec(config)
    recipe = recipe_hash(dataclasses.asdict(spec))
    corpus = open_corpus(config, reporter)
    space = build_space(config, corpus)
    store = RunStore(out_dir / "runs.parquet", space.domains)
    return StudyContext(config=config, out_dir=out_dir, spec=spec, recipe=recipe, corpus=corpus, space=space,
                        store=store, study=make_study(config, space), started=started)


# -- replaying the study from the store ------------------------------------------------------------
def _settled_ids(ctx: StudyContext) -> set[str]:
    """run_ids with a final row: ok, failed, or diverged past the configured retries."""
    import polars as pl

    table = ctx.store.table
    final = table.filter(
        (pl.col("status") == STATUS_OK)
        | (pl.col("status") == STATUS_FAILED)
        | ((pl.col("status") == STATUS_DIVERGED) & (pl.col("attempt") > ctx.config.study.retries))
    )
    return set(final["run_id"].to_list())


def _ok_ids(ctx: StudyContext) -> set[str]:
    return set(ctx.store.finished()["run_id"].to_list())


def make_batch(ctx: StudyContext, mixtures: np.ndarray, seed: int, round_index: int, description: str) -> Batch:
    seeds = [int(seed)] * len(mixtures)
    run_ids = [run_key(w, s, ctx.recipe) for w, s in zip(mixtures, seeds)]
    return Batch(np.asarray(mixtures, dtype=np.float64), seeds, round_index, run_ids, description)


def losses(ctx: StudyContext, run_ids: list[str]) -> np.ndarray:
    """(n, K) per-domain values of the objective's metric for these runs; NaN rows where not ok."""
    metric = ctx.metric
    by_id = {row["run_id"]: row for row in ctx.store.lookup(run_ids).iter_rows(named=True)}
    return np.array(
        [[by_id[r][f"{metric}_{d}"] if r in by_id else np.nan for d in ctx.domains] for r in run_ids],
        dtype=np.float64,
    ).reshape(len(run_ids), len(ctx.domains))


def advance(ctx: StudyContext, train: Callable[[Batch, list[int]], None] | None = None,
            retry_failed: bool = False) -> Batch | None:
    """Replay the study through every settled round, telling their losses.

    Stops at the first batch with runs still to train (a round, then the seed-noise repeats):
    with `train` None it returns that batch; otherwise it calls train(batch, todo) (todo: positions
    in the batch to train), tells the round and goes on. retry_failed: runs that failed count as
    still to train. Returns None when every batch is settled (the study is complete)."""
    while True:
        batch = next_batch(ctx)
        if batch is None:
            return None
        done = _ok_ids(ctx) if retry_failed else _settled_ids(ctx)
        todo = [i for i, run_id in enumerate(batch.run_ids) if run_id not in done]
        if todo:
            if train is None:
                return batch
            train(batch, todo)
        _tell(ctx, batch)


def next_batch(ctx: StudyContext) -> Batch | None:
    """The batch the study asks for now (without training anything), or None when complete."""
    study, config = ctx.study, ctx.config
    if not study.done:
        mixtures = study.ask()
        if ctx.first_round is None:
            ctx.first_round = mixtures
        round_index = study.rounds_told
        return make_batch(ctx, mixtures, config.study.seed, round_index,
                          f"round {round_index + 1}/{len(study.round_sizes)}")
    if config.study.noise_repeats and not ctx.noise_told:
        repeats = ctx.first_round[: config.study.noise_repeats]
        return make_batch(ctx, repeats, config.study.seed + NOISE_SEED_OFFSET, NOISE_ROUND, "seed-noise repeats")
    return None


def _tell(ctx: StudyContext, batch: Batch) -> None:
    if batch.round_index == NOISE_ROUND:
        ctx.noise_told = True
        return
    ctx.study.tell(batch.mixtures, losses(ctx, batch.run_ids))


def pending_runs(ctx: StudyContext, batch: Batch, retry_failed: bool = False) -> list[int]:
    done = _ok_ids(ctx) if retry_failed else _settled_ids(ctx)
    return [i for i, run_id in enumerate(batch.run_ids) if run_id not in done]


# -- training on Ray ---------------------------------------------------------------------------------
def _runner(ctx: StudyContext, reporter):
    if ctx.runner is None:
        from mixopt.runner import RayProxyRunner, init_ray

        config = ctx.config
        if config.ray.address:
            where = f"connecting to Ray at {config.ray.address}"
        elif os.environ.get("RAY_ADDRESS"):
            where = f"joining the job's Ray cluster ({os.environ['RAY_ADDRESS']})"
        else:
            where = f"starting a local Ray cluster ({config.ray.num_cpus or os.cpu_count()} CPUs)"
        reporter.stage(where)
        init_ray(config.ray.address, config.ray.num_cpus)
        ctx.runner = RayProxyRunner(
            str(ctx.corpus.directory.resolve()),
            ctx.domains,
            ctx.spec,
            proxies_per_task=config.study.proxies_per_task,
            cpus_per_task=config.study.cpus_per_task,
            gpus_per_task=config.study.gpus_per_task,
            retries=config.study.retries,
            diverged_lr_factor=config.study.diverged_lr_factor,
        )
    return ctx.runner


def train_batch(ctx: StudyContext, batch: Batch, todo: list[int], reporter) -> dict:
    """Train the proxies at positions `todo` of the batch on Ray, storing each result as it comes.

    Returns counts: {"trained", "ok", "failed"} (a proxy retried after divergence counts once)."""
    from mixopt.runner import result_row

    counts = {"trained": 0, "ok": 0, "failed": 0}
    reporter.proxies(len(batch), len(batch) - len(todo), batch.description)
    if not todo:
        reporter.proxies_finished()
        return counts
    runner = _runner(ctx, reporter)
    retries = ctx.config.study.retries

    def on_result(position: int, result: dict) -> None:
        index = todo[position]
        ctx.store.append([result_row(result, ctx.domains, batch.mixtures[index], batch.seeds[index],
                                     batch.run_ids[index], batch.round_index, ctx.spec, ctx.recipe)])
        will_retry = result["status"] == STATUS_DIVERGED and result.get("attempt", 1) <= retries
        if not will_retry:
            counts["trained"] += 1
            counts["ok" if result["status"] == STATUS_OK else "failed"] += 1
            reporter.proxy_done(result["status"])

    try:
        runner.run(batch.mixtures[todo], [batch.seeds[i] for i in todo], on_result)
    finally:
        reporter.proxies_finished()
    return counts


# -- stage: sample -----------------------------------------------------------------------------------
@dataclass
class SampleResult:
    out_dir: Path
    path: Path | None            # proposed.parquet, None when the study is complete
    batch: Batch | None
    pending: list[int] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    table: object = None         # polars DataFrame: what proposed.parquet holds

    @property
    def complete(self) -> bool:
        return self.batch is None

    def frame(self):
        """The proposed batch as a polars DataFrame (run_id, round, seed, pending, w_<domain>, ...);
        empty when the study is complete."""
        import polars as pl

        return self.table if self.table is not None else pl.DataFrame()

    def to_json(self) -> dict:
        if self.batch is None:
            return {"complete": True, "path": None, "pending": 0, "mixtures": []}
        return {
            "complete": False,
            "path": str(self.path),
            "round": self.batch.round_index,
            "description": self.batch.description,
            "pending": len(self.pending),
            "batch_size": len(self.batch),
            "mixtures": [
                {"run_id": self.batch.run_ids[i], "seed": self.batch.seeds[i],
                 "weights": dict(zip(self.domains, self.batch.mixtures[i].tolist())),
                 "pending": i in self.pending}
                for i in range(len(self.batch))
            ],
        }

    def summary(self) -> str:
        if self.batch is None:
            return f"study complete: nothing to train (next: mixopt fit / mixopt propose --out {self.out_dir})"
        return (f"{self.batch.description}: {len(self.pending)} of {len(self.batch)} proxies to train, "
                f"written to {self.path}")


def proposed_frame(ctx: StudyContext, batch: Batch, pending: list[int]):
    import polars as pl

    columns = {
        "run_id": batch.run_ids,
        "round": [batch.round_index] * len(batch),
        "seed": batch.seeds,
        "pending": [i in pending for i in range(len(batch))],
        "recipe": [ctx.recipe] * len(batch),
        "config_hash": [ctx.config.digest()] * len(batch),
    }
    for j, domain in enumerate(ctx.domains):
        columns[f"w_{domain}"] = batch.mixtures[:, j].astype(np.float64)
    return pl.DataFrame(columns)


def sample_stage(config: Config, out_dir: str | Path, reporter=None) -> SampleResult:
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
@dataclass
class RunResult:
    out_dir: Path
    description: str
    proposed: int
    trained: int
    ok: int
    failed: int
    runs_stored: int
    complete: bool               # the study needs no more training

    def to_json(self) -> dict:
        return {"description": self.description, "proposed": self.proposed, "trained": self.trained,
                "ok": self.ok, "failed": self.failed, "skipped": self.proposed - self.trained,
                "runs_stored": self.runs_stored, "complete": self.complete,
                "runs": str(self.out_dir / "runs.parquet")}

    def summary(self) -> str:
        if self.trained == 0:
            head = f"{self.description}: all {self.proposed} proposed proxies already in the store"
        else:
            head = (f"{self.description}: trained {self.trained} of {self.proposed} proposed proxies "
                    f"({self.ok} ok, {self.failed} failed)")
        tail = ("; the study is complete (next: mixopt propose)" if self.complete
                else "; more to train (next: mixopt sample)")
        return f"{head}; {self.runs_stored} rows in {self.out_dir / 'runs.parquet'}{tail}"


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
        raise StoreError(f"{path} lacks columns {missing[:4]}: it was written for other domains; run `mixopt sample` again")
    recipes = set(table["recipe"].to_list())
    if recipes and recipes != {ctx.recipe}:
        raise ConfigError(f"{path} was sampled for another proxy recipe than this config's; "
                          "run `mixopt sample` again with this config")
    mixtures = ctx.space.validate(table.select(weight_columns).to_numpy().astype(np.float64), str(path))
    seeds = [int(s) for s in table["seed"].to_list()]
    expected = [run_key(w, s, ctx.recipe) for w, s in zip(mixtures, seeds)]
    if expected != table["run_id"].to_list():
        raise StoreError(f"{path}: run_id does not match the mixtures and seeds; run `mixopt sample` again")
    round_index = int(table["round"][0]) if table.height else 0
    description = "seed-noise repeats" if round_index == NOISE_ROUND else f"round {round_index + 1}"
    return Batch(mixtures, seeds, round_index, expected, description)


def run_stage(config: Config, out_dir: str | Path, reporter=None, retry_failed: bool = False) -> RunResult:
    """Train the proxies listed in DIR/proposed.parquet that the store does not hold yet."""
    from mixopt.recommend import Reporter

    reporter = reporter or Reporter()
    ctx = open_study(config, out_dir, reporter)
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
@dataclass
class FitResult:
    out_dir: Path
    payload: dict                # what fit.json holds

    def to_json(self) -> dict:
        return self.payload

    def summary(self) -> str:
        cv = self.payload.get("cv") or {}
        scores = (f"{cv.get('folds')}-fold CV of the objective: RMSE {cv['rmse']:.4g}, Spearman {cv['spearman']:.3f}"
                  if cv.get("rmse") is not None else "no cross-validation (too few runs)")
        state = "" if self.payload["complete"] else " (the study is not complete: more rounds to train)"
        return (f"{self.payload['surrogate']['kind']} surrogate on {self.payload['n_fit']} finished runs: {scores}; "
                f"wrote {self.out_dir / 'surrogate'} and {self.out_dir / FIT_FILE}{state}")


def fit_stage(config: Config, out_dir: str | Path, reporter=None) -> FitResult:
    """Fit the surrogate on every finished run told so far, as the study's recommend() does; save it
    (LightGBM text / JSON) under DIR/surrogate and its cross-validated scores in DIR/fit.json."""
    from mixopt import surrogate as surrogates
    from mixopt.recommend import Reporter

    reporter = reporter or Reporter()
    ctx = open_study(config, out_dir, reporter)
    complete = advance(ctx) is None
    study = ctx.study
    if study.Y is None:
        raise StudyError(f"no finished round in {ctx.store.path}: run `mixopt sample` and `mixopt run` first")
    weights = study.objective
    finished = np.all(np.isfinite(study.Y), axis=1)
    if finished.sum() < 2:
        raise StudyError(f"only {int(finished.sum())} of {len(study.Y)} proxy runs succeeded; need at least 2 "
                         f"(see {ctx.store.path} for the errors)")
    X, Y = study.X[finished], study.Y[finished]
    if study.fit_target == "columns":
        columns = np.flatnonzero(weights > 0)
        target, column_weights = Y[:, columns], weights[columns]
    else:
        columns, target, column_weights = None, (Y @ weights)[:, None], np.ones(1)
    with reporter.busy(f"fitting the {config.surrogate.kind} surrogate on {len(X)} runs"):
        model = surrogates.fit(X, target if columns is not None else target[:, 0], seed=study.seed,
                               kind=study.surrogate_kind)
        info = model.save(ctx.out_dir / "surrogate")
    observed = Y @ weights
    cv = {"folds": None, "rmse": None, "spearman": None}
    kind = getattr(model, "name", None)
    if kind in surrogates.SURROGATES and len(X) >= 3:
        folds = min(CV_FOLDS, len(X))
        with reporter.busy(f"cross-validating the {kind} surrogate ({folds} folds)"):
            predicted = surrogates.cross_val_predict(lambda: surrogates.make_surrogate(kind, study.seed), X, target,
                                                     folds=folds, seed=study.seed)
        predicted = np.asarray(predicted).reshape(len(X), -1) @ column_weights
        cv = {"folds": folds, "rmse": float(np.sqrt(np.mean((predicted - observed) ** 2))),
              "spearman": spearman(predicted, observed),
              "observed_std": float(np.std(observed, ddof=1)) if len(observed) > 1 else None}
    payload = json_ready({
        "surrogate": {**info, "cv_rmse": dict(getattr(model, "cv_scores_", {}))},
        "cv": cv,
        "fit": study.fit_target,
        "columns": [ctx.domains[c] for c in columns] if columns is not None else "objective",
        "objective": {"metric": ctx.metric, "weights": dict(zip(ctx.domains, weights.tolist()))},
        "n_runs": int(len(study.Y)),
        "n_fit": int(len(X)),
        "complete": complete,
        "config_hash": config.digest(),
        "seconds": round(time.time() - ctx.started, 2),
    })
    atomic_write_json(ctx.out_dir / FIT_FILE, payload)
    return FitResult(ctx.out_dir, payload)


# -- stage: propose (and the end of recommend) ------------------------------------------------------
def finish(ctx: StudyContext, reporter):
    """Fit, search, and write recommendation.json and surrogate/; the Recommendation."""
    from mixopt.recommend import Recommendation, noise_report, recommendation_payload

    with reporter.busy(f"fitting the surrogate and searching ({ctx.config.search.method})"):
        try:
            result = ctx.study.recommend()
        except StudyError as exc:
            raise StudyError(f"{exc}; see {ctx.store.path} for the errors") from None
        surrogate_info = result.surrogate.save(ctx.out_dir / "surrogate")
    noise = noise_report(ctx.store, ctx.space, result.objective, ctx.metric, ctx.config.study.seed)
    payload = json_ready(recommendation_payload(ctx.config, ctx.corpus, ctx.space, result, surrogate_info, noise,
                                                ctx.store, ctx.started))
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


def propose_stage(config: Config, out_dir: str | Path, reporter=None):
    """Search with the surrogate of a complete study and write DIR/recommendation.json (the same
    file, to the bit, that `mixopt recommend` writes from the same runs)."""
    from mixopt.recommend import Reporter

    reporter = reporter or Reporter()
    ctx = open_study(config, out_dir, reporter)
    batch = advance(ctx)
    if batch is not None:
        pending = pending_runs(ctx, batch)
        raise StudyError(f"the study is not complete: {batch.description} has {len(pending)} of {len(batch)} "
                         f"proxies to train; run `mixopt sample` and `mixopt run --out {ctx.out_dir}` first")
    return finish(ctx, reporter)


def recommend_stages(config: Config, out_dir: str | Path, reporter=None):
    """The whole static pipeline: every batch trained in turn (failed runs retried on resume), then propose."""
    from mixopt.recommend import Reporter

    reporter = reporter or Reporter()
    ctx = open_study(config, out_dir, reporter)
    advance(ctx, train=lambda batch, todo: train_batch(ctx, batch, todo, reporter), retry_failed=True)
    return finish(ctx, reporter)


def load_fit(out_dir: str | Path) -> dict:
    path = Path(out_dir) / FIT_FILE
    if not path.exists():
        raise StudyError(f"no fit at {path}: run `mixopt fit` first")
    return json.loads(path.read_text())
