"""mixopt as a stage in a Python data pipeline.

    from mixopt import pipeline
    rec = pipeline.recommend("configs/demo.yaml", out_dir="runs/demo")   # idempotent
    rec.mixture          # {"code": 0.12, ...}
    rec.runs()           # polars DataFrame of every proxy run
    mixer = pipeline.online_mixer(rec, method="auto", steps=10_000)

The same study in stages (what `mixopt sample | run | fit | propose` do), for pipelines that
look between steps or run them as separate tasks; together they give what `recommend` gives:
    batch = pipeline.sample(config, out_dir)     # SampleResult; batch.frame(): polars DataFrame
    pipeline.run(config, out_dir)                # RunResult: trains the proposed proxies on Ray
    pipeline.fit(config, out_dir)                # FitResult: surrogate + cross-validated scores
    rec = pipeline.propose(config, out_dir)      # Recommendation, once the study is complete

Every function takes paths or plain objects, returns typed results, and raises the typed
exceptions of mixopt.errors (ConfigError, DataError, InputError, StoreError, StudyError), never
exits the process. Calling `recommend` again with the same out_dir reuses every finished proxy run,
so a pipeline that is re-run (or retried by its scheduler) does no training twice. `recommend` and
`run` train on Ray unless given another `runner` (any object with `run(mixtures, seeds, on_result)`).

The package, in the order a study flows through it:
    context.py   the study directory opened: corpus, mixture space, run store, Study, Reporter
    replay.py    the study replayed from the store: the batch it asks for now, what is settled
    stages.py    sample, run, fit, propose (and recommend, their loop)
    runner.py    proxies trained as packed Ray tasks, results stored as they come
    store.py     runs.parquet, append-only and atomic
    results.py   Recommendation (the one reader and writer of recommendation.json), stage results
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mixopt.config import Config, load_config, parse_config
from mixopt.errors import InputError
from mixopt.pipeline.context import Reporter
from mixopt.pipeline.results import FitResult, Recommendation, RunResult, SampleResult
from mixopt.pipeline.stages import fit_stage, propose_stage, recommend_stages, run_stage, sample_stage

__all__ = ["recommend", "sample", "run", "fit", "propose", "load", "online_mixer",
           "Recommendation", "Reporter", "SampleResult", "RunResult", "FitResult"]


def _as_config(config: Config | Mapping[str, Any] | str | Path) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return parse_config(dict(config), "config")
    if isinstance(config, (str, Path)):
        return load_config(config)
    raise InputError(f"config must be a Config, a mapping or a path to YAML, got {type(config).__name__}")


def recommend(
    config: Config | Mapping[str, Any] | str | Path,
    out_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    runner=None,
) -> Recommendation:
    """Run or resume the static study and return its Recommendation.

    out_dir defaults to runs/<config name or hash>. If out_dir already holds a recommendation made
    from the same configuration and every proxy run it needs, the study replays from the store
    without training (the result is the same). runner: what trains the proxies
    (`run(mixtures, seeds, on_result)`, as mixopt.pipeline.runner.RayProxyRunner); None: Ray."""
    config = _as_config(config)
    return recommend_stages(config, _out(config, out_dir), reporter, runner)


def _out(config: Config, out_dir) -> Path:
    return Path(out_dir) if out_dir is not None else Path("runs") / (config.name or config.digest())


def sample(config, out_dir: str | Path | None = None, reporter: Reporter | None = None) -> SampleResult:
    """Write the study's next batch of mixtures to out_dir/proposed.parquet and return it."""
    config = _as_config(config)
    return sample_stage(config, _out(config, out_dir), reporter)


def run(config, out_dir: str | Path | None = None, reporter: Reporter | None = None,
        retry_failed: bool = False, runner=None) -> RunResult:
    """Train the proposed proxies that the store lacks, on Ray or with `runner` (resumable)."""
    config = _as_config(config)
    return run_stage(config, _out(config, out_dir), reporter, retry_failed=retry_failed, runner=runner)


def fit(config, out_dir: str | Path | None = None, reporter: Reporter | None = None) -> FitResult:
    """Fit the surrogate on the finished runs; write out_dir/surrogate/ and out_dir/fit.json."""
    config = _as_config(config)
    return fit_stage(config, _out(config, out_dir), reporter)


def propose(config, out_dir: str | Path | None = None, reporter: Reporter | None = None) -> Recommendation:
    """Search with the surrogate of a complete study; write out_dir/recommendation.json."""
    config = _as_config(config)
    return propose_stage(config, _out(config, out_dir), reporter)


def load(out_dir: str | Path) -> Recommendation:
    """Read a finished study's recommendation (its directory or its recommendation.json) without
    running anything."""
    return Recommendation.from_json(out_dir)


def online_mixer(recommendation: Recommendation, method: str = "auto", steps: int = 1000, seed: int = 0, **options):
    """An online mixer for the large run, starting from the static recommendation and kept inside
    the study's bounds and repetition caps (its space's lower/upper at target_tokens) unless
    `min_weights` / `max_weights` are given; with online.training_options (gentle tilts for auto)
    under `options`."""
    from mixopt import online

    options = online.training_options(method, options)
    space = recommendation.payload.get("space") or {}
    for option, key in (("min_weights", "lower"), ("max_weights", "upper")):
        if option not in options and space.get(key) is not None:
            options[option] = space[key]
    return online.create(method, domains=recommendation.domains, steps=steps,
                         prior=recommendation.weights, seed=seed, **options)
