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
so a pipeline that is re-run (or retried by its scheduler) does no training twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mixopt.config import Config, load_config, parse_config
from mixopt.errors import InputError
from mixopt.export import load_recommendation
from mixopt.recommend import Recommendation, Reporter, run_recommend
from mixopt.stages import FitResult, RunResult, SampleResult, fit_stage, propose_stage, run_stage, sample_stage


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
) -> Recommendation:
    """Run or resume the static study and return its Recommendation.

    out_dir defaults to runs/<config name or hash>. If out_dir already holds a recommendation made
    from the same configuration and every proxy run it needs, the study replays from the store
    without training (the result is the same)."""
    config = _as_config(config)
    return run_recommend(config, _out(config, out_dir), reporter)


def _out(config: Config, out_dir) -> Path:
    return Path(out_dir) if out_dir is not None else Path("runs") / (config.name or config.digest())


def sample(config, out_dir: str | Path | None = None, reporter: Reporter | None = None) -> SampleResult:
    """Write the study's next batch of mixtures to out_dir/proposed.parquet and return it."""
    config = _as_config(config)
    return sample_stage(config, _out(config, out_dir), reporter)


def run(config, out_dir: str | Path | None = None, reporter: Reporter | None = None,
        retry_failed: bool = False) -> RunResult:
    """Train the proposed proxies that the store lacks, on Ray (resumable)."""
    config = _as_config(config)
    return run_stage(config, _out(config, out_dir), reporter, retry_failed=retry_failed)


def fit(config, out_dir: str | Path | None = None, reporter: Reporter | None = None) -> FitResult:
    """Fit the surrogate on the finished runs; write out_dir/surrogate/ and out_dir/fit.json."""
    config = _as_config(config)
    return fit_stage(config, _out(config, out_dir), reporter)


def propose(config, out_dir: str | Path | None = None, reporter: Reporter | None = None) -> Recommendation:
    """Search with the surrogate of a complete study; write out_dir/recommendation.json."""
    config = _as_config(config)
    return propose_stage(config, _out(config, out_dir), reporter)


def load(out_dir: str | Path) -> Recommendation:
    """Read a finished study's recommendation without running anything."""
    payload = load_recommendation(out_dir)
    return Recommendation(
        domains=list(payload["domains"]),
        weights=np.asarray(payload["weights"], dtype=np.float64),
        predicted_loss=float(payload["predicted_loss"]),
        natural_weights=np.asarray(payload["natural_weights"], dtype=np.float64),
        natural_predicted_loss=float(payload["natural_predicted_loss"]),
        n_runs=int(payload["n_runs"]),
        config_hash=str(payload["config_hash"]),
        out_dir=Path(out_dir),
        payload=payload,
    )


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
