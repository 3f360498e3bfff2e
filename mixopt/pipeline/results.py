"""What a study produces, typed: the Recommendation (what recommendation.json holds), and the results
of the stages (SampleResult, RunResult, FitResult).

`Recommendation.from_json(path_or_dir)` is the one reader of recommendation.json: `mixopt train`,
`validate`, `jacobian`, `export`, `report` and `pipeline.load` all go through it, so a file is held
to the same checks everywhere (`check_payload`): `domains` a non-empty list of distinct names,
`weights` as many finite non-negative numbers summing to one; and, where present,
`natural_weights` one number per domain, `space.lower` / `space.upper` one finite bound per
domain, `eval_sets` distinct names that are not domains, `objective.metric` loss or bpb,
`objective.weights` finite, non-negative, not all zero over the loss columns (the domains, then the
eval sets: held-out sets that were scored but never trained on).
Its errors name the file and the field: DataError, or InputError prefixed with the argument that
named the file (`--mixture`). `recommendation_payload` is the one writer of the same file.

One module on purpose: the recommendation's one writer (`recommendation_payload`) and one reader
(`Recommendation.from_json`) sit together, so the file's format is defined in one place.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixopt import __version__
from mixopt.config import Config, proxy_spec
from mixopt.errors import DataError, InputError
from mixopt.pipeline.replay import Batch
from mixopt.pipeline.store import RunStore
from mixopt.space import MixtureSpace
from mixopt.study import Result

RECOMMENDATION_FILE = "recommendation.json"
FIT_FILE = "fit.json"
SUM_TOLERANCE = 1e-6
METRICS = ("loss", "bpb")
METRIC_UNITS = {"loss": "nats/token", "bpb": "bits/byte"}


# -- recommendation.json: the checks ---------------------------------------------------------------
def recommendation_path(source: str | Path) -> Path:
    """recommendation.json inside a study directory, or the file itself."""
    path = Path(source)
    return path / RECOMMENDATION_FILE if path.is_dir() else path


def check_payload(payload) -> tuple[list[str], np.ndarray]:
    """Domains and weights (negatives within 1e-9 of zero clipped to it) of a recommendation dict,
    after checking every field that its readers use; InputError naming the field at fault."""
    if not isinstance(payload, Mapping):
        raise InputError(f"a recommendation must be a JSON object, got {type(payload).__name__}")
    for key in ("domains", "weights"):
        if key not in payload:
            raise InputError(f"the recommendation has no {key!r} field")
    domains = payload["domains"]
    if not isinstance(domains, list) or not domains or not all(isinstance(d, str) and d for d in domains):
        raise InputError(f"'domains' must be a non-empty list of names, got {domains!r}")
    if len(set(domains)) != len(domains):
        raise InputError(f"'domains' must be unique, got {domains}")
    raw = payload["weights"]
    if not isinstance(raw, list) or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in raw):
        raise InputError(f"'weights' must be a list of numbers, got {raw!r}")
    if len(raw) != len(domains):
        raise InputError(f"'weights' has {len(raw)} values for {len(domains)} domains")
    weights = np.asarray(raw, dtype=np.float64)
    if not np.all(np.isfinite(weights)):
        raise InputError(f"'weights' must be finite, got {raw}")
    if np.any(weights < -1e-9):
        raise InputError(f"'weights' must be non-negative, got {raw}")
    weights = np.clip(weights, 0.0, None)
    if abs(weights.sum() - 1.0) > SUM_TOLERANCE:
        raise InputError(f"'weights' must sum to 1, they sum to {weights.sum():.9g}")
    _natural_weights(payload, len(domains))
    _bounds(payload, len(domains))
    _objective(payload, domains + _eval_sets(payload, domains))
    return list(domains), weights


def _numbers(value, length: int, name: str, finite: bool) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        array = np.empty(0)
    if len(array) != length or (finite and not np.all(np.isfinite(array))):
        raise InputError(f"{name!r} must hold {length} {'finite ' if finite else ''}numbers, got {value!r}")
    return array


def _natural_weights(payload: Mapping, K: int) -> np.ndarray | None:
    value = payload.get("natural_weights")
    return None if value is None else _numbers(value, K, "natural_weights", finite=False)


def _bounds(payload: Mapping, K: int) -> tuple[np.ndarray, np.ndarray]:
    space = payload.get("space") or {}
    if not isinstance(space, Mapping):
        raise InputError(f"'space' must be an object, got {space!r}")
    lower = _numbers(space.get("lower") or [0.0] * K, K, "space.lower", finite=True)
    upper = _numbers(space.get("upper") or [1.0] * K, K, "space.upper", finite=True)
    return lower, upper


def _eval_sets(payload: Mapping, domains: list[str]) -> list[str]:
    """The study's eval sets (none in a file that does not name them)."""
    names = payload.get("eval_sets") or []
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise InputError(f"'eval_sets' must be a list of names, got {names!r}")
    if len(set(names)) != len(names) or set(names) & set(domains):
        raise InputError(f"'eval_sets' must be distinct names that are not domains, got {names}")
    return list(names)


def _objective(payload: Mapping, domains: list[str]) -> tuple[str, np.ndarray]:
    """(metric, weights over the loss columns `domains` summing to one; uniform when none are named)."""
    spec = payload.get("objective") or {}
    if not isinstance(spec, Mapping):
        raise InputError(f"'objective' must be an object, got {spec!r}")
    metric = spec.get("metric", "loss")
    if metric not in METRICS:
        raise InputError(f"'objective.metric' must be one of {sorted(METRICS)}, got {metric!r}")
    named = spec.get("weights") or {}
    try:
        weights = (np.array([float(named.get(d, 0.0)) for d in domains]) if named
                   else np.full(len(domains), 1.0 / len(domains)))
    except (AttributeError, TypeError, ValueError):
        weights = np.full(len(domains), np.nan)
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise InputError(f"'objective.weights' must be finite, non-negative and not all zero, got {named}")
    return metric, weights / weights.sum()


def _read_json(path: Path):
    """The parsed recommendation.json; DataError naming the file when it is missing or not JSON."""
    if not path.exists():
        if not path.parent.exists():
            raise DataError(f"study directory {path.parent} does not exist")
        raise DataError(f"no recommendation at {path} (run `mixopt recommend` first)")
    if not path.is_file():
        raise DataError(f"{path} is not a file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None


# -- the recommendation ----------------------------------------------------------------------------
@dataclass
class Recommendation:
    """The result of the static pipeline (what recommendation.json holds, typed).

    A file written by hand may hold only `domains` and `weights`: the other fields are then None."""

    domains: list[str]
    weights: np.ndarray
    predicted_loss: float | None
    natural_weights: np.ndarray | None
    natural_predicted_loss: float | None
    n_runs: int | None
    config_hash: str | None
    out_dir: Path
    payload: dict = field(repr=False)

    @classmethod
    def from_json(cls, source: str | Path, label: str | None = None) -> Recommendation:
        """Read and check a recommendation.json (a study directory or the file's path).

        Errors name the file and the field at fault: DataError, or, with `label` (the argument that
        named the file, such as "mixture"), InputError starting with the label."""
        path = recommendation_path(source)
        try:
            payload = _read_json(path)
            try:
                domains, weights = check_payload(payload)
            except InputError as exc:
                raise DataError(f"{path}: {exc}") from None
        except DataError as exc:
            if label is None:
                raise
            raise InputError(f"{label}: {exc}") from None
        natural = _natural_weights(payload, len(domains))
        optional = {key: payload.get(key) for key in ("predicted_loss", "natural_predicted_loss", "n_runs",
                                                      "config_hash")}
        return cls(
            domains=domains,
            weights=weights,
            predicted_loss=None if optional["predicted_loss"] is None else float(optional["predicted_loss"]),
            natural_weights=natural,
            natural_predicted_loss=(None if optional["natural_predicted_loss"] is None
                                    else float(optional["natural_predicted_loss"])),
            n_runs=None if optional["n_runs"] is None else int(optional["n_runs"]),
            config_hash=None if optional["config_hash"] is None else str(optional["config_hash"]),
            out_dir=path.parent,
            payload=payload,
        )

    @property
    def mixture(self) -> dict[str, float]:
        return dict(zip(self.domains, self.weights.tolist()))

    @property
    def proportions(self) -> np.ndarray:
        """The weights divided by their sum (exactly one, as trainers want it)."""
        return self.weights / self.weights.sum()

    @property
    def eval_sets(self) -> list[str]:
        """Held-out sets the study scored its proxies on besides the domains (never trained on)."""
        return _eval_sets(self.payload, self.domains)

    @property
    def loss_names(self) -> list[str]:
        """The study's loss columns: the domains, then the eval sets."""
        return self.domains + self.eval_sets

    @property
    def metric(self) -> str:
        return _objective(self.payload, self.loss_names)[0]

    @property
    def objective_weights(self) -> np.ndarray:
        """(K + E,) weights of the objective over the loss columns (`loss_names`: the K domains, then
        the E eval sets), summing to one."""
        return _objective(self.payload, self.loss_names)[1]

    @property
    def lower(self) -> np.ndarray:
        """Each domain's lowest weight in the study's space (0 when not recorded)."""
        return _bounds(self.payload, len(self.domains))[0]

    @property
    def upper(self) -> np.ndarray:
        """Each domain's highest weight in the study's space: bounds and epoch caps (1 when not recorded)."""
        return _bounds(self.payload, len(self.domains))[1]

    def runs(self):
        """The runs table as a polars DataFrame."""
        import polars as pl

        return pl.read_parquet(self.out_dir / "runs.parquet")


def recommendation_payload(config: Config, corpus, space: MixtureSpace, result: Result, surrogate_info: dict,
                           noise: dict, store: RunStore, started: float, run_ids: list[str] | None = None) -> dict:
    """What recommendation.json holds (see DESIGN: domains, weights, predicted_loss and provenance).
    run_ids: the run of each of the study's rows in told order (the out-of-fold predictions are then
    recorded run by run, for the report)."""
    observed = result.observed
    best = int(np.nanargmin(observed))
    failed = int(np.sum(~np.isfinite(observed)))
    epochs = space.epochs(result.weights)
    return {
        "domains": space.domains,
        "weights": result.weights.tolist(),
        "mixture": dict(zip(space.domains, result.weights.tolist())),
        "predicted_loss": result.predicted,
        "natural_weights": result.natural.tolist(),
        "natural_predicted_loss": result.natural_predicted,
        "eval_sets": store.eval_sets,
        "objective": {
            "metric": config.objective.metric,
            "weights": dict(zip(store.loss_names, result.objective.tolist())),
        },
        "n_runs": result.n_runs,
        "n_failed": failed,
        "best_observed": {"weights": result.X[best].tolist(), "loss": float(observed[best])},
        "epochs_at_target": epochs.tolist() if epochs is not None else None,
        "space": space.describe(),
        "surrogate": {**surrogate_info, "cv_rmse": result.cv_scores,
                      # how far to trust it: the objective's cross-validated R^2, the search's trust
                      # radius (total variation from the prior and a run; None: anywhere), the
                      # spread at the pick, and the out-of-fold ranking of the runs (cv)
                      "skill": result.skill, "trust_radius": result.trust_radius,
                      "predicted_std": result.predicted_std, "cv": cv_record(result, run_ids)},
        "gain": gain_summary(result, space, METRIC_UNITS[config.objective.metric]),
        "search": {
            "method": result.search.method,
            "candidates": result.search.candidates,
            "top_k": config.search.top_k,
        },
        "noise": noise,
        "fidelity": fidelity_summary(config, result),
        "proxy": dataclasses.asdict(proxy_spec(config)),
        "config_hash": config.digest(),
        "config": config.model_dump(),
        "corpus": {"directory": str(corpus.directory), "version": corpus.version},
        "runs_stored": len(store),
        "mixopt_version": __version__,
        "seconds": round(time.time() - started, 2),
    }


def fidelity_summary(config: Config, result: Result) -> dict | None:
    """A multi-fidelity study's short runs (round 0): how many, on how many tokens, how many the
    surrogate learned from beside the full-length runs, and the proxy compute of the study's rounds
    in full-length runs (the seed-noise repeats aside). None when every run is full length."""
    fidelity = config.study.fidelity
    if fidelity is None:
        return None
    spec = proxy_spec(config)
    tokens = spec.shortened(fidelity.short_tokens).tokens
    return {"short_round": 0, "short_proxies": fidelity.short_proxies, "short_tokens": tokens,
            "short_runs_fitted": result.short_runs,
            "compute_in_full_runs": config.study.proxies + fidelity.short_proxies * tokens / spec.tokens}


def objective_label(names: list[str], weights, eval_sets: list[str], metric: str, units: str) -> str:
    """"objective: mean loss (nats/token)"; "weighted mean" when the weights differ, and the sets it
    weighs named when it weighs an eval set."""
    weights = np.asarray(weights, dtype=np.float64)
    active = int(np.sum(weights > 0))
    kind = "mean" if np.allclose(weights[weights > 0], 1.0 / max(active, 1)) else "weighted mean"
    weighed = [name for name, w in zip(names, weights) if w > 0]
    over = f" over {', '.join(weighed)}" if set(weighed) & set(eval_sets) else ""
    return f"objective: {kind} {metric}{over} ({units})"


def cv_record(result: Result, run_ids: list[str] | None = None) -> dict:
    """How well the surrogate ranks the study's own runs out of fold: Spearman of its out-of-fold
    objective against the observed one, the top-1 regret (where the run it ranks first stands among
    the runs: 0 the best, 0.5 a median run) and R^2 (the skill). None figures under 4 finished runs.
    With the study's run_ids (told order), also each scored run's id and out-of-fold prediction, so
    that the report draws the very predictions these figures come from."""
    from mixopt.stats import spearman, top1_regret

    if result.cv_predicted is None:
        return {"spearman": None, "top1_regret": None, "r2": result.skill, "runs": None}
    record = {"spearman": spearman(result.cv_predicted, result.cv_observed),
              "top1_regret": top1_regret(result.cv_predicted, result.cv_observed),
              "r2": result.skill, "runs": len(result.cv_observed)}
    if run_ids is not None and result.cv_rows is not None:
        record["run_ids"] = [run_ids[i] for i in result.cv_rows]
        record["predicted"] = result.cv_predicted.tolist()
    return record


def gain_summary(result: Result, space: MixtureSpace, units: str = METRIC_UNITS["loss"]) -> dict | None:
    """The search's best mixture against the prior (see mixopt.trust.Gain), with one verdict line:
    the gain and its interval when it is significant (and the candidate is recommended), or "no
    significant gain: keep <prior>" when the study cannot tell."""
    gain = result.gain
    if gain is None:
        return None
    over = "natural" if np.allclose(result.prior, result.natural) else "the prior"
    interval = f"{gain.estimate:+.4f} {units}, {gain.level:.0%} interval [{gain.low:+.4f}, {gain.high:+.4f}]"
    if gain.significant:
        verdict = f"significant gain over {over}: {interval}"
    else:
        verdict = f"no significant gain: keep {over} (the search's best mixture: {interval})"
    return {"over": over, "prior": dict(zip(space.domains, result.prior.tolist())),
            "estimate": gain.estimate, "low": gain.low, "high": gain.high, "level": gain.level,
            "significant": gain.significant, "verdict": verdict,
            # the share of the surrogate's predicted difference kept in the estimate: the slope of the
            # runs' observed objective on their out-of-fold prediction (1: calibrated)
            "calibration": gain.calibration,
            "candidate": dict(zip(space.domains, gain.candidate.tolist())),
            "candidate_predicted_loss": gain.candidate_predicted}


def format_table(payload: dict) -> list[list[str]]:
    """Rows of the printed table: domain, tokens, natural, recommended, epochs at target."""
    rows = []
    epochs = payload.get("epochs_at_target") or [None] * len(payload["domains"])
    for domain, tokens, natural, weight, epoch in zip(
        payload["domains"], payload["space"]["tokens"], payload["natural_weights"], payload["weights"], epochs
    ):
        rows.append([domain, f"{tokens:,.0f}", f"{natural:.3f}", f"{weight:.3f}",
                     "-" if epoch is None else f"{epoch:.2f}"])
    return rows


NOISE_CONFIDENCE = 0.95


def noise_report(store: RunStore, space: MixtureSpace, objective: np.ndarray, metric: str, seed: int,
                 recipe: str | None = None) -> dict:
    """Seed noise beside the spread of the objective over the study's mixtures.

    A mixture trained under the study seed and again under another seed gives a difference d_i.
    Under common random numbers the mean of one other seed's d_i is a shift common to every
    mixture (harmless to rankings); their spread around it is the noise that can reorder mixtures.
    One run's noise is that spread over sqrt(2) (each d_i holds two runs' noise), estimated with
    repeats - 1 degrees of freedom per other seed, its interval from the chi-square law of a
    variance: two repeats give one degree of freedom and an interval spanning two orders of
    magnitude, ten give nine and an interval of about 0.7x to 1.8x the estimate.

    Keys: mixture_spread_std (sd of the objective over the study seed's finished runs), repeats,
    seed_shift_mean, degrees_of_freedom, seed_noise_std with seed_noise_std_low / _high (95%),
    signal_to_noise (spread / noise) with signal_to_noise_low / _high (from the noise's interval).
    recipe: only the runs of this proxy recipe (a multi-fidelity study's full-length runs)."""
    finished = store.finished()
    if recipe is not None and "recipe" in finished.columns:
        finished = finished.filter(finished["recipe"] == recipe)
    columns = [f"{metric}_{name}" for name in store.loss_names]
    if finished.height == 0:
        return {}
    values = finished.select(columns).to_numpy() @ objective
    weights = finished.select([f"w_{d}" for d in space.domains]).to_numpy()
    seeds = finished["seed"].to_numpy()
    main = seeds == seed
    main_values = {tuple(np.round(row, 9)): v for row, v in zip(weights[main], values[main])}
    differences: dict[int, list[float]] = {}
    for row, value, other in zip(weights[~main], values[~main], seeds[~main]):
        key = tuple(np.round(row, 9))
        if key in main_values:
            differences.setdefault(int(other), []).append(value - main_values[key])
    spread = float(np.std(values[main], ddof=1)) if main.sum() > 1 else float("nan")
    report = {"mixture_spread_std": spread, "repeats": sum(len(d) for d in differences.values())}
    if not differences:
        return report
    every = np.concatenate([np.asarray(d) for d in differences.values()])
    residuals = np.concatenate([np.asarray(d) - np.mean(d) for d in differences.values()])
    dof = sum(len(d) - 1 for d in differences.values())
    report.update(seed_shift_mean=float(every.mean()), degrees_of_freedom=dof)
    if dof < 1:
        report.update(seed_noise_std=float("nan"), signal_to_noise=None)
        return report
    noise = float(np.sqrt(np.sum(residuals**2) / dof / 2.0))
    low, high = _sd_interval(noise, dof, NOISE_CONFIDENCE)
    report.update(seed_noise_std=noise, seed_noise_std_low=low, seed_noise_std_high=high)
    if noise > 0 and np.isfinite(spread):
        report.update(signal_to_noise=spread / noise, signal_to_noise_low=spread / high,
                      signal_to_noise_high=spread / low)
    else:
        report["signal_to_noise"] = None
    return report


def _sd_interval(sd: float, dof: int, confidence: float) -> tuple[float, float]:
    """Two-sided interval of a standard deviation estimated with `dof` degrees of freedom (normal noise)."""
    from scipy.stats import chi2

    tail = (1.0 - confidence) / 2.0
    return float(sd * np.sqrt(dof / chi2.ppf(1.0 - tail, dof))), float(sd * np.sqrt(dof / chi2.ppf(tail, dof)))


# -- the stages' results ---------------------------------------------------------------------------
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


@dataclass
class FitResult:
    out_dir: Path
    payload: dict                # what fit.json holds

    def to_json(self) -> dict:
        return self.payload

    def summary(self) -> str:
        cv = self.payload.get("cv") or {}
        scores = (f"{cv.get('folds')}-fold CV of the objective: RMSE {cv['rmse']:.4g}, Spearman {cv['spearman']:.3f}, "
                  f"top-1 regret {cv['top1_regret']:.0%}"
                  if cv.get("rmse") is not None else "no cross-validation (too few runs)")
        state = "" if self.payload["complete"] else " (the study is not complete: more rounds to train)"
        return (f"{self.payload['surrogate']['kind']} surrogate on {self.payload['n_fit']} finished runs: {scores}; "
                f"wrote {self.out_dir / 'surrogate'} and {self.out_dir / FIT_FILE}{state}")
