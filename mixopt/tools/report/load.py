"""The study a report is about, read: recommendation.json, runs.parquet and an optional train_log.parquet.

    study = load_study("runs/study")      # StudyData; DataError naming the file when one is wrong

The recommendation is read by mixopt.pipeline.results (Recommendation.from_json). Finished
main-seed runs (X, y) are kept apart from the seed-noise repeats (round -1); runs without a finite
value of the objective's metric are left out with a note. Also what the plots refit: the study's
surrogate kind and seed, and the response mixtures of one domain's weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixopt.errors import DataError
from mixopt.pipeline.context import NOISE_ROUND
from mixopt.pipeline.results import METRIC_UNITS, Recommendation, objective_label, recommendation_path


# -- the study, read ------------------------------------------------------------------------------
@dataclass
class StudyData:
    directory: Path
    payload: dict
    domains: list[str]
    weights: np.ndarray
    natural: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    objective: np.ndarray            # (K + E,) weights over the metric columns: the domains, then the eval sets
    metric: str
    runs: object                     # polars DataFrame, every attempt
    X: np.ndarray                    # (n, K) finished main-seed mixtures
    y: np.ndarray                    # (n,) their objective
    repeat_X: np.ndarray             # (r, K) finished seed-noise repeats
    repeat_y: np.ndarray             # (r,)
    train_log: object | None = None  # polars DataFrame or None
    notes: list[str] = field(default_factory=list)
    eval_sets: list[str] = field(default_factory=list)  # held-out sets scored, never trained on
    run_ids: list[str] | None = None  # the run_id of each row of X (None: runs.parquet has none)

    @property
    def K(self) -> int:
        return len(self.domains)

    @property
    def units(self) -> str:
        return METRIC_UNITS.get(self.metric, self.metric)

    @property
    def objective_label(self) -> str:
        """"objective: mean loss (nats/token)"; the sets it weighs are named when it weighs an eval set."""
        return objective_label(self.domains + self.eval_sets, self.objective, self.eval_sets, self.metric, self.units)


def _read_parquet(path: Path):
    import polars as pl

    try:
        return pl.read_parquet(path)
    except Exception as exc:  # damaged or foreign file
        raise DataError(f"cannot read {path}: {exc}") from None


def status_summary(runs) -> str:
    import polars as pl

    if runs.height == 0:
        return "it holds no runs"
    counts = runs.group_by("status").len().sort("len", descending=True)
    text = ", ".join(f"{row['status']}: {row['len']}" for row in counts.iter_rows(named=True))
    errors = runs.filter(pl.col("status") != "ok")
    if "error" in runs.columns and errors.height:
        first = errors["error"].drop_nulls()
        if first.len():
            text += f"; first error: {str(first[0]).strip().splitlines()[-1][:200]}"
    return text


def load_study(study_dir: str | Path) -> StudyData:
    """Read and check what the report needs; DataError naming the file when something is wrong."""
    import polars as pl

    directory = Path(study_dir)
    if not directory.exists():
        raise DataError(f"study directory {directory} does not exist")
    if not directory.is_dir():
        raise DataError(f"study directory {directory} is not a directory")
    runs_path = directory / "runs.parquet"
    rec_path = recommendation_path(directory)
    if not rec_path.exists() and runs_path.is_file():
        runs = _read_parquet(runs_path)
        if "status" in runs.columns and runs.filter(pl.col("status") == "ok").height == 0:
            raise DataError(f"no recommendation at {rec_path}: no proxy run of the study finished "
                            f"({runs_path}: {status_summary(runs)})")
    recommendation = Recommendation.from_json(rec_path)
    payload, domains = recommendation.payload, recommendation.domains
    K = len(domains)
    natural = recommendation.natural_weights
    natural = np.full(K, np.nan) if natural is None else natural
    objective, metric = recommendation.objective_weights, recommendation.metric

    if not runs_path.exists():
        raise DataError(f"no run table at {runs_path} (the study directory lacks runs.parquet)")
    runs = _read_parquet(runs_path)
    value_columns = [f"{metric}_{name}" for name in recommendation.loss_names]
    needed = ["status", "round"] + [f"w_{d}" for d in domains] + value_columns
    missing = [c for c in needed if c not in runs.columns]
    if missing:
        raise DataError(f"{runs_path} lacks columns {missing[:5]} needed for {recommendation.loss_names}")
    finished = runs.filter(pl.col("status") == "ok")
    if "run_id" in finished.columns:
        finished = finished.unique("run_id", keep="first", maintain_order=True)
    X_all = finished.select([f"w_{d}" for d in domains]).to_numpy().astype(np.float64)
    values = finished.select(value_columns).to_numpy().astype(np.float64)
    active = objective > 0          # a column outside the objective may lack its metric
    y_all = values[:, active] @ objective[active]
    usable = np.all(np.isfinite(X_all), axis=1) & np.isfinite(y_all)
    rounds = finished["round"].to_numpy()
    fidelity = payload.get("fidelity") or {}
    short = rounds == fidelity["short_round"] if fidelity else np.zeros(len(rounds), dtype=bool)
    main, repeat = usable & (rounds != NOISE_ROUND) & ~short, usable & (rounds == NOISE_ROUND)
    study = StudyData(
        directory=directory, payload=payload, domains=domains, weights=recommendation.weights, natural=natural,
        lower=recommendation.lower, upper=recommendation.upper, objective=objective, metric=metric, runs=runs,
        X=X_all[main], y=y_all[main], repeat_X=X_all[repeat], repeat_y=y_all[repeat],
        eval_sets=recommendation.eval_sets,
        run_ids=[r for r, keep in zip(finished["run_id"].to_list(), main) if keep] if "run_id" in finished.columns
        else None,
    )
    missing_metric = int(np.sum(~usable))
    if missing_metric:
        study.notes.append(f"{missing_metric} finished run(s) lack a finite {metric} for some domain and are left out.")

    log_path = directory / "train_log.parquet"
    if log_path.exists():
        log = _read_parquet(log_path)
        weight_columns = [c for c in log.columns if c.startswith("w_")]
        missing = [c for c in ("step",) if c not in log.columns] + ([] if weight_columns else ["w_<domain>"])
        if missing:
            raise DataError(f"{log_path} lacks columns {missing} "
                            "(expected step, tokens, phase, w_<d>, loss_<d>, train_loss)")
        study.train_log = log.sort("step")
    return study



def recorded_out_of_fold(study: StudyData) -> np.ndarray | None:
    """(n,) the out-of-fold objective that the study recorded in recommendation.json for each row of
    X, or None when it recorded none or not for every one of these runs (then the report refits)."""
    cv = (study.payload.get("surrogate") or {}).get("cv") or {}
    ids, predicted = cv.get("run_ids"), cv.get("predicted")
    if study.run_ids is None or not isinstance(ids, list) or not isinstance(predicted, list):
        return None
    if len(ids) != len(predicted):
        return None
    by_id = dict(zip(ids, predicted))
    if any(run_id not in by_id for run_id in study.run_ids):
        return None
    values = np.array([by_id[run_id] for run_id in study.run_ids], dtype=np.float64)
    return values if np.all(np.isfinite(values)) else None


def surrogate_kind(study: StudyData) -> str:
    """The surrogate the study used: the configured kind when concrete (keeps "regmix-lightgbm"),
    else the kind recorded for the fitted model."""
    from mixopt.surrogate import SURROGATES

    configured = ((study.payload.get("config") or {}).get("surrogate") or {}).get("kind")
    if configured in SURROGATES:
        return configured
    return (study.payload.get("surrogate") or {}).get("kind") or "linear"


def study_seed(study: StudyData) -> int:
    seed = ((study.payload.get("config") or {}).get("study") or {}).get("seed", 0)
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else 0


def study_surrogate(study: StudyData):
    from mixopt.surrogate import make_surrogate

    kind, seed = surrogate_kind(study), study_seed(study)

    def make():
        model = make_surrogate(kind, seed)
        # Proxy tables are tens to thousands of rows: one thread is as fast, and OpenMP threads that
        # spin-wait on a shared machine made the same fits ten times slower (same model otherwise).
        if hasattr(model, "threads"):
            model.threads = 1
        return model

    return kind, make


def response_mixtures(base: np.ndarray, j: int, grid: np.ndarray) -> np.ndarray:
    """Mixtures with w_j = t for t in grid and the other domains rescaled proportionally from base."""
    others = np.delete(base, j)
    rest = others.sum()
    shares = others / rest if rest > 0 else np.full(len(others), 1.0 / len(others))
    mixtures = np.empty((len(grid), len(base)))
    mixtures[:, j] = grid
    mixtures[:, np.arange(len(base)) != j] = (1.0 - grid)[:, None] * shares[None, :]
    return mixtures


def inside_bounds(study: StudyData, mixtures: np.ndarray, tolerance: float = 1e-9) -> np.ndarray:
    return np.all(mixtures >= study.lower - tolerance, axis=1) & np.all(mixtures <= study.upper + tolerance, axis=1)
