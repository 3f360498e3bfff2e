"""The report's figures, each a Plot (PNG bytes, or a note saying why it could not be drawn).

    1. predicted against observed objective, cross-validated (plot_cv);
    2. the recommended mixture beside the natural one, with each domain's bounds (plot_mixture);
    3. per-domain response curves of the surrogate (plot_response);
    4. for online runs, the weight trajectories and the per-domain losses (plot_online_*).
See mixopt/tools/report/__init__.py for what each shows.

One module on purpose (about 410 lines): every figure of the report, drawn with one style.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from mixopt.errors import MixoptError
from mixopt.stats import spearman
from mixopt.tools.report.load import (
    StudyData,
    inside_bounds,
    recorded_out_of_fold,
    response_mixtures,
    study_seed,
    study_surrogate,
)

MIN_CV_RUNS = 3           # fewer finished runs: no cross-validation plot
MIN_FIT_RUNS = 2          # fewer finished runs: no response curves
CV_FOLDS = 5
CURVE_POINTS = 201
DPI = 110
PLOT_FILES = ("cv_predicted_vs_observed.png", "mixture.png", "response_curves.png",
              "online_weights.png", "online_losses.png")


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

    kind, make = study_surrogate(study)
    folds = min(CV_FOLDS, n)
    predicted = recorded_out_of_fold(study)
    how = (f"the study's own out-of-fold prediction, as recommendation.json records it ({folds} folds of {n} runs)"
           if predicted is not None else f"a {kind} surrogate fitted on the other folds ({folds} folds of {n} runs)")
    if predicted is None:
        try:
            predicted = cross_val_predict(make, study.X, study.y, folds=folds, seed=study_seed(study))[:, 0]
        except MixoptError as exc:
            plot.note = f"Cross-validation of the {kind!r} surrogate failed: {exc}"
            return plot
    rmse = float(np.sqrt(np.mean((predicted - study.y) ** 2)))
    rho = spearman(predicted, study.y)

    gain = study.payload.get("gain") or {}
    fig = _figure(10.4 if gain else 6.4, 5.6)
    grid = fig.add_gridspec(1, 2, width_ratios=(3.2, 1.6)) if gain else fig.add_gridspec(1, 1)
    ax = fig.add_subplot(grid[0, 0])
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
    if gain:
        _draw_gain(fig.add_subplot(grid[0, 1]), gain, study.units)
    plot.png = _png(fig)
    spread = float(np.std(study.y, ddof=1)) if n > 1 else float("nan")
    plot.caption = (
        f"Each finished main-seed proxy run, predicted by {how}: Spearman ρ = {rho_text}, "
        f"RMSE = {rmse:.3g} {study.units}, against a "
        f"spread (std) of {spread:.3g} {study.units} across mixtures. Seed-noise repeats are not in the fit; "
        "each is drawn at its main-seed twin's "
        "prediction, joined to the twin by a red line whose length is the seed difference (after removing "
        "the shift that the other seed gives every mixture alike, when there are two or more repeats)."
    )
    if gain:
        plot.caption += (f" Right: the search's best mixture against {gain.get('over', 'the prior')}, its predicted "
                         f"gain with the {gain.get('level', 0.95):.0%} interval; {gain.get('verdict', '')}.")
    return plot


def _draw_gain(ax, gain: dict, units: str) -> None:
    """The predicted gain of the search's best mixture over the prior with its interval, beside zero:
    an interval below zero is a significant gain, one across zero says "keep the prior"."""
    significant = bool(gain.get("significant"))
    colour = "#2ca02c" if significant else "#7f7f7f"
    estimate, low, high = (float(gain[key]) for key in ("estimate", "low", "high"))
    ax.errorbar([0], [estimate], yerr=[[estimate - low], [high - estimate]], fmt="o", color=colour,
                capsize=8, markersize=8, linewidth=2)
    ax.axhline(0.0, color="#444444", linewidth=1, linestyle="--")
    ax.set_xlim(-1, 1)
    ax.set_xticks([0])
    ax.set_xticklabels([f"best mixture − {gain.get('over', 'prior')}"], fontsize=8)
    ax.set_ylabel(f"predicted gain ({units}; below 0: better)")
    ax.set_title("significant gain: recommended" if significant else "no significant gain:\nkeep "
                 + str(gain.get("over", "the prior")), fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)


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
        natural_bars = ax.bar(positions - width / 2, study.natural, width, color="#b0b0b0",
                              label="natural (token-proportional)")
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
                    "tokens / target tokens); a bar at its red line is capped. Bounds above the plotted range "
                    "are not drawn "
                    "(they do not bind); the table above lists them all.")
    return plot


def plot_response(study: StudyData) -> Plot:
    plot = Plot("response_curves.png", "Per-domain response curves", "")
    n = len(study.X)
    if n < MIN_FIT_RUNS:
        plot.note = (f"Only {n} finished main-seed run(s): a surrogate needs at least {MIN_FIT_RUNS}, "
                     "so no response curves.")
        return plot
    kind, make = study_surrogate(study)
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
        curves.append((grid, model.predict(mixtures), inside_bounds(study, mixtures)))
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
                    "is one domain; they add up to one; straight lines join the logged steps). "
                    "Dotted lines: phase changes.")
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
    secondary = ax.secondary_xaxis("top", functions=(lambda s: intercept + slope * s,
                                                     lambda t: (t - intercept) / slope))
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
        ax.plot(steps[keep], values[keep], color=colors[d], linewidth=1.6, label=d,
                marker="." if keep.sum() < 40 else None)
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


def build_plots(study: StudyData) -> list[Plot]:
    plots = [plot_cv(study), plot_mixture(study), plot_response(study)]
    if study.train_log is not None:
        if study.train_log.height < 2:
            plots.append(Plot("online_weights.png", "Online mixture", "",
                              note=f"train_log.parquet holds {study.train_log.height} row(s): "
                                   "nothing to draw over steps yet."))
        else:
            plots += [plot_online_weights(study), plot_online_losses(study)]
    return plots
