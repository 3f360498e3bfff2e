"""`mixopt report DIR`: one self-contained HTML page about a study, with PNG plots.

    write_report("runs/study")  ->  runs/study/report/index.html  (+ the PNGs beside it)

What it reads from the study directory:
    recommendation.json   the mixture, its prediction, the space, objective, surrogate, noise
    runs.parquet          every proxy attempt (mixopt/store.py)
    train_log.parquet     optional, from online training: step, tokens, phase, w_<d>, loss_<d>, train_loss

What it shows:
    1. predicted against observed objective, cross-validated: the surrogate kind of the study is
       refitted fold by fold on the finished main-seed runs (seed-noise repeats, round -1, are left
       out of the fit and drawn beside their main-seed twin), Spearman and RMSE in the title;
    2. the recommended mixture beside the natural one, with each domain's bounds (epoch caps);
    3. per-domain response curves: the surrogate (refitted on every finished main-seed run) as one
       domain's weight moves from 0 to its upper bound, the others rescaled proportionally from
       the recommendation; dashed where that mixture leaves the feasible space;
    4. for online runs, the weight trajectories (stacked) and the per-domain losses over steps.
Tables: the recommendation, the seed noise beside the spread of the objective, the run statuses.

The page embeds every PNG as base64 (one file that opens anywhere, no scripts); the PNGs are also
written beside it. Plots that the data cannot support (one or two runs, every run failed) are
replaced by a note saying why.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixopt.errors import DataError, InputError, MixoptError
from mixopt.export import load_recommendation, recommendation_path
from mixopt.io import atomic_write_bytes, atomic_write_text
from mixopt.stats import spearman

NOISE_ROUND = -1          # mixopt.recommend.NOISE_ROUND: seed-noise repeats
MIN_CV_RUNS = 3           # fewer finished runs: no cross-validation plot
MIN_FIT_RUNS = 2          # fewer finished runs: no response curves
CV_FOLDS = 5
CURVE_POINTS = 201
DPI = 110
METRIC_UNITS = {"loss": "nats/token", "bpb": "bits/byte"}
PLOT_FILES = ("cv_predicted_vs_observed.png", "mixture.png", "response_curves.png",
              "online_weights.png", "online_losses.png")


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
    objective: np.ndarray            # (K,) weights over the per-domain metric columns
    metric: str
    runs: object                     # polars DataFrame, every attempt
    X: np.ndarray                    # (n, K) finished main-seed mixtures
    y: np.ndarray                    # (n,) their objective
    repeat_X: np.ndarray             # (r, K) finished seed-noise repeats
    repeat_y: np.ndarray             # (r,)
    train_log: object | None = None  # polars DataFrame or None
    notes: list[str] = field(default_factory=list)

    @property
    def K(self) -> int:
        return len(self.domains)

    @property
    def units(self) -> str:
        return METRIC_UNITS.get(self.metric, self.metric)

    @property
    def objective_label(self) -> str:
        active = int(np.sum(self.objective > 0))
        kind = "mean" if np.allclose(self.objective[self.objective > 0], 1.0 / max(active, 1)) else "weighted mean"
        return f"objective: {kind} {self.metric} ({self.units})"


def _float_list(payload: dict, key: str, length: int, source: Path, default=None) -> np.ndarray:
    value = payload.get(key, default)
    try:
        array = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        array = np.empty(0)
    if len(array) != length or (default is None and not np.all(np.isfinite(array))):
        raise DataError(f"{source}: {key!r} must hold {length} numbers, got {value!r}")
    return array


def _read_parquet(path: Path):
    import polars as pl

    try:
        return pl.read_parquet(path)
    except Exception as exc:  # damaged or foreign file
        raise DataError(f"cannot read {path}: {exc}") from None


def _status_summary(runs) -> str:
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
                            f"({runs_path}: {_status_summary(runs)})")
    payload = load_recommendation(rec_path)
    domains = list(payload["domains"])
    K = len(domains)
    weights = _float_list(payload, "weights", K, rec_path)
    natural = _float_list(payload, "natural_weights", K, rec_path, default=[np.nan] * K)
    space = payload.get("space") or {}
    lower = _float_list({"space.lower": space.get("lower") or [0.0] * K}, "space.lower", K, rec_path)
    upper = _float_list({"space.upper": space.get("upper") or [1.0] * K}, "space.upper", K, rec_path)
    objective_spec = payload.get("objective") or {}
    metric = objective_spec.get("metric", "loss")
    if metric not in METRIC_UNITS:
        raise DataError(f"{rec_path}: objective.metric must be one of {sorted(METRIC_UNITS)}, got {metric!r}")
    named = objective_spec.get("weights") or {}
    try:
        objective = np.array([float(named.get(d, 0.0)) for d in domains]) if named else np.full(K, 1.0 / K)
    except (AttributeError, TypeError, ValueError):
        objective = np.full(K, np.nan)
    if not np.all(np.isfinite(objective)) or np.any(objective < 0) or objective.sum() <= 0:
        raise DataError(f"{rec_path}: objective.weights must be finite and not all zero, got {named}")
    objective = objective / objective.sum()

    if not runs_path.exists():
        raise DataError(f"no run table at {runs_path} (the study directory lacks runs.parquet)")
    runs = _read_parquet(runs_path)
    value_columns = [f"{metric}_{d}" for d in domains]
    needed = ["status", "round"] + [f"w_{d}" for d in domains] + value_columns
    missing = [c for c in needed if c not in runs.columns]
    if missing:
        raise DataError(f"{runs_path} lacks columns {missing[:5]} needed for domains {domains}")
    finished = runs.filter(pl.col("status") == "ok")
    if "run_id" in finished.columns:
        finished = finished.unique("run_id", keep="first", maintain_order=True)
    X_all = finished.select([f"w_{d}" for d in domains]).to_numpy().astype(np.float64)
    values = finished.select(value_columns).to_numpy().astype(np.float64)
    active = objective > 0          # a domain outside the objective may lack its metric
    y_all = values[:, active] @ objective[active]
    usable = np.all(np.isfinite(X_all), axis=1) & np.isfinite(y_all)
    rounds = finished["round"].to_numpy()
    main, repeat = usable & (rounds != NOISE_ROUND), usable & (rounds == NOISE_ROUND)
    study = StudyData(
        directory=directory, payload=payload, domains=domains, weights=weights, natural=natural,
        lower=lower, upper=upper, objective=objective, metric=metric, runs=runs,
        X=X_all[main], y=y_all[main], repeat_X=X_all[repeat], repeat_y=y_all[repeat],
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
            raise DataError(f"{log_path} lacks columns {missing} (expected step, tokens, phase, w_<d>, loss_<d>, train_loss)")
        study.train_log = log.sort("step")
    return study


# -- numbers -------------------------------------------------------------------------------------
def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def surrogate_kind(study: StudyData) -> str:
    """The surrogate the study used: the configured kind when concrete (keeps "regmix-lightgbm"),
    else the kind recorded for the fitted model."""
    from mixopt.surrogate import SURROGATES

    configured = ((study.payload.get("config") or {}).get("surrogate") or {}).get("kind")
    if configured in SURROGATES:
        return configured
    return (study.payload.get("surrogate") or {}).get("kind") or "linear"


def _study_seed(study: StudyData) -> int:
    seed = ((study.payload.get("config") or {}).get("study") or {}).get("seed", 0)
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else 0


def _make_surrogate(study: StudyData):
    from mixopt.surrogate import make_surrogate

    kind, seed = surrogate_kind(study), _study_seed(study)

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


def _feasible(study: StudyData, mixtures: np.ndarray, tolerance: float = 1e-9) -> np.ndarray:
    return np.all(mixtures >= study.lower - tolerance, axis=1) & np.all(mixtures <= study.upper + tolerance, axis=1)


# -- figures -------------------------------------------------------------------------------------
@dataclass
class Plot:
    name: str            # file name of the PNG
    title: str
    caption: str
    png: bytes | None = None
    note: str | None = None   # why the plot is missing


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _domain_colors(domains: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(domains) <= 10 else "tab20"]
    return {d: cmap(i % cmap.N) for i, d in enumerate(domains)}


def plot_cv(study: StudyData) -> Plot:
    plot = Plot("cv_predicted_vs_observed.png", "Predicted against observed objective (cross-validated)", "")
    n = len(study.X)
    if n < MIN_CV_RUNS:
        plot.note = (f"Only {n} finished main-seed run(s): cross-validation needs at least {MIN_CV_RUNS}, "
                     "so this plot is skipped.")
        return plot
    from mixopt.surrogate import cross_val_predict

    kind, make = _make_surrogate(study)
    folds = min(CV_FOLDS, n)
    try:
        predicted = cross_val_predict(make, study.X, study.y, folds=folds, seed=_study_seed(study))[:, 0]
    except MixoptError as exc:
        plot.note = f"Cross-validation of the {kind!r} surrogate failed: {exc}"
        return plot
    rmse = float(np.sqrt(np.mean((predicted - study.y) ** 2)))
    rho = spearman(predicted, study.y)

    fig = _figure(6.4, 5.6)
    ax = fig.add_subplot()
    ax.scatter(study.y, predicted, s=26, color="#1f77b4", alpha=0.8, edgecolor="white", linewidth=0.5,
               label=f"main-seed runs (n = {n})", zorder=3)
    natural_row = _matching_row(study.X, study.natural)
    if natural_row is not None:
        ax.scatter(study.y[natural_row], predicted[natural_row], s=90, marker="s", facecolor="none",
                   edgecolor="#555555", linewidth=1.5, label="natural mixture", zorder=4)
    # Seed-noise repeats beside their main-seed twins. Under common random numbers another seed
    # moves every mixture by about the same amount (harmless to rankings); with two or more
    # repeats that mean shift is removed so that what is drawn is the noise that can reorder
    # mixtures, comparable with the surrogate's error. The legend states the shift removed.
    pairs = []
    for x_row, value in zip(study.repeat_X, study.repeat_y):
        twin = _matching_row(study.X, x_row)
        if twin is not None:
            pairs.append((twin, value))
    shift = float(np.mean([value - study.y[twin] for twin, value in pairs])) if len(pairs) >= 2 else 0.0
    repeat_points = [(study.y[twin], value - shift, predicted[twin]) for twin, value in pairs]
    if repeat_points:
        label = ("same mixture, other seed" if len(pairs) < 2
                 else f"same mixture, other seed (mean shift {shift:+.3g} removed)")
        for index, (main_value, repeat_value, twin_prediction) in enumerate(repeat_points):
            ax.plot([main_value, repeat_value], [twin_prediction, twin_prediction], color="#d62728",
                    linewidth=1.2, zorder=2)
            ax.scatter([repeat_value], [twin_prediction], s=34, marker="D", facecolor="white",
                       edgecolor="#d62728", linewidth=1.3, zorder=4, label=label if index == 0 else None)
    observed_all = np.concatenate([study.y, [v for _, v, _ in repeat_points]])
    low = min(observed_all.min(), predicted.min())
    high = max(observed_all.max(), predicted.max())
    pad = 0.06 * (high - low if high > low else max(abs(high), 1e-3))
    limits = (low - pad, high + pad)
    ax.plot(limits, limits, color="#888888", linestyle="--", linewidth=1, label="predicted = observed", zorder=1)
    ax.set_xlim(limits)
    ax.set_ylim(limits)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(f"observed {study.objective_label}")
    ax.set_ylabel(f"predicted, out of fold ({study.units})")
    rho_text = "n/a" if not np.isfinite(rho) else f"{rho:.3f}"
    ax.set_title(f"{kind} surrogate, {folds}-fold CV: Spearman ρ = {rho_text}, RMSE = {rmse:.3g}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    plot.png = _png(fig)
    spread = float(np.std(study.y, ddof=1)) if n > 1 else float("nan")
    plot.caption = (
        f"Each finished main-seed proxy run, predicted by a {kind} surrogate fitted on the other folds "
        f"({folds} folds of {n} runs): Spearman ρ = {rho_text}, RMSE = {rmse:.3g} {study.units}, against a "
        f"spread (std) of {spread:.3g} {study.units} across mixtures. Seed-noise repeats are not in the fit; each is drawn at its main-seed twin's "
        "prediction, joined to the twin by a red line whose length is the seed difference (after removing "
        "the shift that the other seed gives every mixture alike, when there are two or more repeats)."
    )
    return plot


def _matching_row(X: np.ndarray, row: np.ndarray, tolerance: float = 1e-9) -> int | None:
    if len(X) == 0 or not np.all(np.isfinite(row)):
        return None
    distance = np.abs(X - row[None, :]).max(axis=1)
    best = int(np.argmin(distance))
    return best if distance[best] <= tolerance else None


def plot_mixture(study: StudyData) -> Plot:
    plot = Plot("mixture.png", "Recommended and natural mixtures", "")
    K = study.K
    fig = _figure(max(6.4, 0.75 * K + 2.5), 4.6)
    ax = fig.add_subplot()
    positions = np.arange(K)
    width = 0.38
    has_natural = np.all(np.isfinite(study.natural))
    if has_natural:
        natural_bars = ax.bar(positions - width / 2, study.natural, width, color="#b0b0b0", label="natural (token-proportional)")
    recommended_bars = ax.bar(positions + (width / 2 if has_natural else 0), study.weights, width,
                              color="#1f77b4", label="recommended")
    # the axis follows the bars; an upper bound above it does not bind and is not drawn
    bar_top = max(study.weights.max(), np.nanmax(study.natural) if has_natural else 0.0)
    top = 1.05 if bar_top > 0.78 else bar_top * 1.3 + 0.02
    capped = np.flatnonzero((study.upper < 1 - 1e-9) & (study.upper <= top))
    floored = np.flatnonzero(study.lower > 1e-9)
    span = 0.46
    for index in capped:
        ax.hlines(study.upper[index], index - span, index + span, color="#d62728", linewidth=2, zorder=3,
                  label="upper bound (epoch cap or max weight)" if index == capped[0] else None)
    for index in floored:
        ax.hlines(study.lower[index], index - span, index + span, color="#2ca02c", linewidth=2, linestyle=(0, (3, 2)),
                  zorder=3, label="lower bound (min weight)" if index == floored[0] else None)
    if K <= 12:
        labelled = [recommended_bars] + ([natural_bars] if has_natural else [])
        for bars in labelled:
            ax.bar_label(bars, labels=[f"{v:.3f}" for v in bars.datavalues], fontsize=7, padding=2, zorder=4,
                         bbox=dict(boxstyle="square,pad=0.1", facecolor="white", edgecolor="none", alpha=0.85))
    ax.set_ylim(0, top)
    ax.set_xlim(-0.6, K - 0.4)
    ax.set_xticks(positions, study.domains, rotation=30 if K > 6 else 0, ha="right" if K > 6 else "center")
    ax.set_ylabel("weight (share of training tokens)")
    predicted = study.payload.get("predicted_loss")
    natural_predicted = study.payload.get("natural_predicted_loss")
    title = "Recommended vs natural mixture"
    if isinstance(predicted, (int, float)) and isinstance(natural_predicted, (int, float)):
        title += f" (predicted {study.metric} {predicted:.4f} vs {natural_predicted:.4f})"
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: (not labels[i].startswith(("natural", "recommended")), i))
    # below the axes, never over a bar or a bound line
    fig.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8, loc="outside lower center",
               ncols=len(order), frameon=False)
    plot.png = _png(fig)
    plot.caption = ("Weight of each domain in the natural (token-proportional, brought inside the bounds) and the "
                    "recommended mixture. Red lines: the most each domain may take, min(max weight, max_epochs × "
                    "tokens / target tokens); a bar at its red line is capped. Bounds above the plotted range are not drawn "
                    "(they do not bind); the table above lists them all.")
    return plot


def plot_response(study: StudyData) -> Plot:
    plot = Plot("response_curves.png", "Per-domain response curves", "")
    n = len(study.X)
    if n < MIN_FIT_RUNS:
        plot.note = f"Only {n} finished main-seed run(s): a surrogate needs at least {MIN_FIT_RUNS}, so no response curves."
        return plot
    kind, make = _make_surrogate(study)
    try:
        model = make().fit(study.X, study.y)
    except MixoptError as exc:
        plot.note = f"Fitting the {kind!r} surrogate failed: {exc}"
        return plot
    K = study.K
    columns = min(K, 4)
    rows = math.ceil(K / columns)
    fig = _figure(3.1 * columns + 0.6, 2.6 * rows + 0.9)
    axes = fig.subplots(rows, columns, sharey=True, squeeze=False)
    curves, recommended_predictions = [], []
    for j in range(K):
        upper = max(study.upper[j], study.weights[j])
        grid = np.linspace(0.0, upper, CURVE_POINTS)
        mixtures = response_mixtures(study.weights, j, grid)
        curves.append((grid, model.predict(mixtures), _feasible(study, mixtures)))
        recommended_predictions.append(float(model.predict(study.weights[None, :])[0]))
    color = "#1f77b4"
    for j, domain in enumerate(study.domains):
        ax = axes[j // columns][j % columns]
        grid, values, feasible = curves[j]
        ax.plot(grid, np.where(feasible, values, np.nan), color=color, linewidth=2)
        ax.plot(grid, np.where(feasible, np.nan, values), color=color, linewidth=1.2, linestyle="--", alpha=0.7)
        ax.scatter([study.weights[j]], [recommended_predictions[j]], s=40, color="black", zorder=4)
        if study.upper[j] < 1 - 1e-9:
            ax.axvline(study.upper[j], color="#d62728", linestyle=":", linewidth=1.2)
        observed = study.X[:, j]
        ax.plot(observed, np.zeros_like(observed), "|", color="#444444", markersize=8, alpha=0.6,
                transform=ax.get_xaxis_transform())
        ax.set_title(domain, fontsize=9)
        ax.set_xlim(0, grid[-1] * 1.02 if grid[-1] > 0 else 1)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
        if j % columns == 0:
            ax.set_ylabel(f"predicted ({study.units})", fontsize=8)
        if j // columns == rows - 1 or j + columns >= K:
            ax.set_xlabel(f"weight of {domain}", fontsize=8)
    for j in range(K, rows * columns):
        axes[j // columns][j % columns].set_visible(False)
    low, high = axes[0][0].get_ylim()
    axes[0][0].set_ylim(low - 0.12 * (high - low), high)  # room for the rug of proxy runs
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color, linewidth=2, label="feasible"),
               Line2D([], [], color=color, linewidth=1.2, linestyle="--", alpha=0.7, label="outside bounds"),
               Line2D([], [], color="black", marker="o", linestyle="", label="recommended"),
               Line2D([], [], color="#d62728", linestyle=":", label="upper bound"),
               Line2D([], [], color="#444444", marker="|", linestyle="", markersize=8, label="proxy runs")]
    fig.legend(handles=handles, loc="outside lower center", ncols=5, fontsize=8, frameon=False)
    constant = np.ptp(np.concatenate([values for _, values, _ in curves])) < 1e-12
    fig.suptitle(f"{kind} surrogate: predicted {study.objective_label.split(': ', 1)[1]} as one weight moves"
                 + (" (constant: the surrogate learned nothing from these runs)" if constant else ""), fontsize=10)
    plot.png = _png(fig)
    if constant:
        why = " (RegMix's LightGBM settings cannot split below 40 runs)" if kind == "regmix-lightgbm" else ""
        plot.note = (f"The {kind} surrogate predicts the same value at every mixture from these {n} runs{why}, "
                     "so these curves are flat and the recommendation is not informed by it.")
    plot.caption = (
        f"The {kind} surrogate refitted on all {n} finished main-seed runs. In each panel one domain's weight "
        "moves from 0 to its upper bound while the other domains keep their proportions from the "
        "recommended mixture (black dot). Dashed: that mixture breaks some domain's bounds. Ticks on the "
        "x axis: the weights the proxy runs tried; far from them the surrogate extrapolates."
    )
    return plot


def _phase_boundaries(log) -> list[tuple[float, str]]:
    if "phase" not in log.columns:
        return []
    steps = log["step"].to_numpy()
    phases = log["phase"].cast(str).to_list()
    return [(float(steps[i]), phases[i]) for i in range(len(phases)) if i == 0 or phases[i] != phases[i - 1]]


def _mark_phases(ax, boundaries, label: bool) -> None:
    if len(boundaries) < 2:
        return
    for index, (step, phase) in enumerate(boundaries):
        if index > 0:
            ax.axvline(step, color="black", linestyle=":", linewidth=1, alpha=0.7)
        if label:
            ax.annotate(phase, (step, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3),
                        textcoords="offset points", va="top", fontsize=7, color="#222222",
                        bbox=dict(boxstyle="square,pad=0.15", facecolor="white", edgecolor="none", alpha=0.75))


def _log_domains(study: StudyData) -> list[str]:
    log_domains = [c[2:] for c in study.train_log.columns if c.startswith("w_")]
    known = [d for d in study.domains if d in log_domains]
    return known + [d for d in log_domains if d not in known]


def plot_online_weights(study: StudyData) -> Plot:
    plot = Plot("online_weights.png", "Online mixture: weight trajectories", "")
    log = study.train_log
    domains = _log_domains(study)
    steps = log["step"].to_numpy().astype(np.float64)
    weights = np.nan_to_num(log.select([f"w_{d}" for d in domains]).to_numpy().astype(np.float64).T)
    colors = _domain_colors(study.domains + [d for d in domains if d not in study.domains])
    fig = _figure(8.0, 4.4)
    ax = fig.add_subplot()
    ax.stackplot(steps, weights, labels=domains, colors=[colors[d] for d in domains], alpha=0.9)
    _mark_phases(ax, _phase_boundaries(log), label=True)
    ax.set_xlim(steps.min(), steps.max() if steps.max() > steps.min() else steps.min() + 1)
    ax.set_ylim(0, max(1.0, float(weights.sum(axis=0).max())))
    ax.set_xlabel("training step")
    ax.set_ylabel("mixture weight (stacked)")
    ax.set_title("Domain weights over training", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, reverse=True)
    _tokens_axis(ax, log)
    plot.png = _png(fig)
    plot.caption = ("The proportions the online mixer asked for, as logged in train_log.parquet, stacked (each band "
                    "is one domain; they add up to one; straight lines join the logged steps). Dotted lines: phase changes.")
    return plot


def _tokens_axis(ax, log) -> None:
    """A secondary x axis in training tokens, when tokens grow linearly with steps."""
    if "tokens" not in log.columns or log.height < 2:
        return
    steps = log["step"].to_numpy().astype(np.float64)
    tokens = log["tokens"].to_numpy().astype(np.float64)
    if steps[-1] <= steps[0] or not np.all(np.isfinite(tokens)):
        return
    slope = (tokens[-1] - tokens[0]) / (steps[-1] - steps[0])
    intercept = tokens[0] - slope * steps[0]
    if slope <= 0 or np.max(np.abs(tokens - (intercept + slope * steps))) > 0.01 * max(tokens[-1], 1):
        return
    secondary = ax.secondary_xaxis("top", functions=(lambda s: intercept + slope * s, lambda t: (t - intercept) / slope))
    from matplotlib.ticker import EngFormatter

    secondary.xaxis.set_major_formatter(EngFormatter(sep=""))
    secondary.set_xlabel("tokens", fontsize=8)
    secondary.tick_params(labelsize=7)


def plot_online_losses(study: StudyData) -> Plot:
    plot = Plot("online_losses.png", "Online mixture: per-domain losses", "")
    log = study.train_log
    domains = [d for d in _log_domains(study) if f"loss_{d}" in log.columns]
    has_train = "train_loss" in log.columns
    if not domains and not has_train:
        plot.note = "train_log.parquet holds no loss_<domain> or train_loss columns."
        return plot
    steps = log["step"].to_numpy().astype(np.float64)
    colors = _domain_colors(study.domains + [d for d in domains if d not in study.domains])
    fig = _figure(8.0, 4.4)
    ax = fig.add_subplot()
    for d in domains:
        values = log[f"loss_{d}"].cast(float).to_numpy()
        keep = np.isfinite(values)
        ax.plot(steps[keep], values[keep], color=colors[d], linewidth=1.6, label=d, marker="." if keep.sum() < 40 else None)
    if has_train:
        values = log["train_loss"].cast(float).to_numpy()
        keep = np.isfinite(values)
        ax.plot(steps[keep], values[keep], color="black", linewidth=1.0, linestyle="--", alpha=0.7, label="train loss")
    _mark_phases(ax, _phase_boundaries(log), label=True)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Per-domain evaluation loss over training", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    _tokens_axis(ax, log)
    plot.png = _png(fig)
    plot.caption = "Per-domain evaluation losses the online mixer was told, and the training loss (dashed)."
    return plot


# -- tables and page -------------------------------------------------------------------------------
def _is_number(cell) -> bool:
    if isinstance(cell, (int, float, np.integer, np.floating)) and not isinstance(cell, bool):
        return True
    try:
        float(str(cell).replace(",", ""))
        return True
    except ValueError:
        return str(cell) in ("–", "n/a")


def _table(header: list[str] | None, rows: list[list]) -> str:
    head = "" if header is None else "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>"
    body = []
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            css = ' class="num"' if index > 0 and _is_number(cell) else ""
            text = cell if isinstance(cell, str) else _fmt(cell)
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def _recommendation_table(study: StudyData) -> str:
    payload = study.payload
    tokens = (payload.get("space") or {}).get("tokens") or [None] * study.K
    epochs = payload.get("epochs_at_target") or [None] * study.K
    rows = []
    for j, domain in enumerate(study.domains):
        rows.append([
            domain,
            "–" if tokens[j] is None else f"{tokens[j]:,.0f}",
            "–" if not np.isfinite(study.natural[j]) else f"{study.natural[j]:.4f}",
            f"{study.weights[j]:.4f}",
            f"{study.lower[j]:.4f}",
            f"{study.upper[j]:.4f}",
            "–" if epochs[j] is None else f"{epochs[j]:.2f}",
            f"{study.objective[j]:.3f}",
        ])
    return _table(["domain", "tokens", "natural", "recommended", "lower", "upper", "epochs at target",
                   "objective weight"], rows)


def _summary_rows(study: StudyData) -> list[list]:
    payload = study.payload
    surrogate = payload.get("surrogate") or {}
    cv = surrogate.get("cv_rmse") or {}
    space = payload.get("space") or {}
    recorded, refitted = surrogate.get("kind", "–"), surrogate_kind(study)
    rows = [
        ["predicted objective, recommended mixture", _fmt(payload.get("predicted_loss"), 5)],
        ["predicted objective, natural mixture", _fmt(payload.get("natural_predicted_loss"), 5)],
        ["objective", study.objective_label.split(": ", 1)[1]],
        ["surrogate", recorded if recorded == refitted else f"{recorded} (the plots refit {refitted}, as configured)"],
    ]
    if cv:
        rows.append(["CV RMSE of the candidate surrogates", ", ".join(f"{k}: {_fmt(v)}" for k, v in cv.items())])
    best = payload.get("best_observed") or {}
    if "loss" in best:
        rows.append(["best observed objective", _fmt(best.get("loss"), 5)])
    rows.append(["proxy runs, main seed (of which failed)",
                 f"{_fmt(payload.get('n_runs'))} ({_fmt(payload.get('n_failed'))})"])
    target = space.get("target_tokens")
    epochs = sorted(set(space.get("max_epochs") or []))
    rows.append(["target tokens of the large run", "none (no repetition cap)" if target is None else f"{target:,.0f}"])
    if epochs:
        rows.append(["max epochs per domain", _fmt(epochs[0]) if len(epochs) == 1 else ", ".join(_fmt(e) for e in epochs)])
    rows += [
        ["config hash", str(payload.get("config_hash", "–"))],
        ["mixopt version", str(payload.get("mixopt_version", "–"))],
    ]
    return rows


NOISE_LABELS = {
    "mixture_spread_std": "spread of the objective across mixtures (std)",
    "seed_noise_std": "seed noise (std of one run, shift removed)",
    "seed_shift_mean": "mean shift from the other seed",
    "signal_to_noise": "spread / seed noise",
    "repeats": "mixtures repeated with another seed",
}


def _noise_table(study: StudyData) -> str:
    noise = study.payload.get("noise") or {}
    if not noise:
        return '<p class="note">No seed-noise figures in recommendation.json (no repeats were trained).</p>'
    with_units = ("mixture_spread_std", "seed_noise_std", "seed_shift_mean")
    rows = [[NOISE_LABELS.get(key, key) + (f", {study.units}" if key in with_units else ""), _fmt(value)]
            for key, value in noise.items()]
    text = _table(None, rows)
    snr = noise.get("signal_to_noise")
    if isinstance(snr, (int, float)) and math.isfinite(snr) and snr < 3:
        text += ('<p class="warn">The seed noise is large against the spread between mixtures '
                 f"(ratio {snr:.2g} &lt; 3): rankings of close mixtures may be noise.</p>")
    return text


def _runs_table(study: StudyData) -> str:
    import polars as pl

    runs = study.runs
    counts = runs.group_by("status").len().sort("len", descending=True)
    rows = [[row["status"], row["len"]] for row in counts.iter_rows(named=True)]
    text = _table(["status", "attempts"], rows)
    if "error" in runs.columns:
        errors = (runs.filter((pl.col("status") != "ok") & pl.col("error").is_not_null())
                  .group_by("error").len().sort("len", descending=True).head(5))
        if errors.height:
            text += _table(["most frequent errors", "attempts"],
                           [[str(r["error"])[:300], r["len"]] for r in errors.iter_rows(named=True)])
    return text


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1000px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.88em; margin-top: 0.4em; }
.note { background: #f6f6f6; border-left: 4px solid #999; padding: 0.5em 0.8em; }
.warn { background: #fff4e5; border-left: 4px solid #e69500; padding: 0.5em 0.8em; }
"""


def _figure_html(plot: Plot) -> str:
    title = f"<h3>{html.escape(plot.title)}</h3>"
    if plot.png is None:
        return f'{title}<p class="note">{html.escape(plot.note or "not available")}</p>'
    if plot.note:
        title += f'<p class="warn">{html.escape(plot.note)}</p>'
    data = base64.b64encode(plot.png).decode("ascii")
    return (f'{title}<figure><img alt="{html.escape(plot.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>")


def render_html(study: StudyData, plots: list[Plot]) -> str:
    payload = study.payload
    name = ((payload.get("config") or {}).get("name")) or study.directory.resolve().name
    static = [p for p in plots if not p.name.startswith("online_")]
    online = [p for p in plots if p.name.startswith("online_")]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>mixopt report: {html.escape(str(name))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>mixopt report: {html.escape(str(name))}</h1>",
        f'<p class="meta">Study directory {html.escape(str(study.directory))}; {len(study.X)} finished main-seed '
        f"runs, {len(study.repeat_X)} seed-noise repeats, {study.runs.height} attempts in runs.parquet.</p>",
    ]
    if len(study.X) == 0:
        parts.append(f'<p class="warn">No proxy run of this study finished ({html.escape(_status_summary(study.runs))}); '
                     "the plots that need runs are skipped.</p>")
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in study.notes]
    parts += ["<h2>Recommendation</h2>", _table(None, _summary_rows(study)), _recommendation_table(study),
              "<h2>Seed noise</h2>", _noise_table(study),
              "<h2>Proxy runs</h2>", _runs_table(study),
              "<h2>Plots</h2>"]
    parts += [_figure_html(p) for p in static]
    if online:
        parts.append("<h2>Online training</h2>")
        parts += [_figure_html(p) for p in online]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def build_plots(study: StudyData) -> list[Plot]:
    plots = [plot_cv(study), plot_mixture(study), plot_response(study)]
    if study.train_log is not None:
        if study.train_log.height < 2:
            plots.append(Plot("online_weights.png", "Online mixture", "",
                              note=f"train_log.parquet holds {study.train_log.height} row(s): nothing to draw over steps yet."))
        else:
            plots += [plot_online_weights(study), plot_online_losses(study)]
    return plots


def write_report(study_dir: str | Path, out_html: str | Path | None = None) -> Path:
    """Write the study's report: out_html (default study_dir/report/index.html) with every PNG
    embedded, and the PNGs beside it. Returns the HTML path. DataError names a missing or bad file."""
    study = load_study(study_dir)
    out_html = Path(out_html) if out_html is not None else Path(study_dir) / "report" / "index.html"
    if out_html.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"out_html must name an .html file, got {out_html}")
    plots = build_plots(study)
    for plot in plots:
        if plot.png is not None:
            atomic_write_bytes(out_html.parent / plot.name, plot.png)
    drawn = {plot.name for plot in plots if plot.png is not None}
    for name in PLOT_FILES:   # a PNG of an earlier report that this one did not draw would mislead
        if name not in drawn:
            (out_html.parent / name).unlink(missing_ok=True)
    return atomic_write_text(out_html, render_html(study, plots))


__all__ = ["write_report", "load_study", "build_plots", "render_html", "spearman", "response_mixtures", "StudyData"]
