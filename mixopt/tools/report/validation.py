"""The page of `mixopt validate`: its intervals drawn, beside its tables and verdicts.

    write_validation_page(result, out_dir)  ->  out_dir/validate.html (+ out_dir/validate.png)

`result` is what mixopt.tools.validate.run_validate returns (validate.json). One figure, one row per
scale: on the left each mixture's mean objective over the seeds with its 95% interval (the seeds'
own values as small dots); on the right the paired differences recommended - natural and
recommended - uniform with their 95% intervals, a line at zero, and the scale's resolution (the
half-width the pooled seed noise gives a paired difference) shaded around zero. The page is
self-contained (the PNG embedded as base64), as the study report is.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from mixopt.io import atomic_write_bytes, atomic_write_text
from mixopt.tools.numbers import format_interval, format_number
from mixopt.tools.report.html import CSS, _figure_html, _table
from mixopt.tools.report.plots import Plot, _figure, _png

PLOT_FILE = "validate.png"
PAGE_FILE = "validate.html"
COLORS = {"recommended": "#1f77b4", "natural": "#555555", "uniform": "#2ca02c"}
RANDOM_COLOR = "#9a9a9a"


def _error_bar(ax, y, row, color, marker="o"):
    mean, n = row["mean"], row["n"]
    if mean is None or not math.isfinite(mean):
        return
    if n >= 2 and math.isfinite(row["half_width"]):
        ax.errorbar([mean], [y], xerr=[[row["half_width"]], [row["half_width"]]], fmt=marker, color=color,
                    markersize=6, capsize=4, linewidth=1.6, zorder=3)
    else:
        ax.plot([mean], [y], marker, color=color, markersize=6, zorder=3)
    values = [v for v in row["per_seed"] if v is not None and math.isfinite(v)]
    ax.scatter(values, [y] * len(values), s=12, color=color, alpha=0.45, zorder=2, linewidth=0)


def plot_validation(result: dict) -> Plot:
    scales = [s for s in ("proxy", "large") if s in result["summary"]]
    units = result["objective"]["units"]
    plot = Plot(PLOT_FILE, "Objectives and paired differences over seeds, with 95% intervals", "")
    if not scales:
        plot.note = "validate.json holds no scale."
        return plot
    M = len(result["names"])
    fig = _figure(10.0, 1.1 + len(scales) * (0.42 * M + 1.2))
    axes = fig.subplots(len(scales), 2, squeeze=False, width_ratios=[1.2, 1.0])
    for r, scale in enumerate(scales):
        summary, info = result["summary"][scale], result["scales"][scale]
        ax = axes[r][0]
        rows = sorted(summary["mixtures"], key=lambda row: row["rank"])
        for y, row in enumerate(rows):
            _error_bar(ax, y, row, COLORS.get(row["name"], RANDOM_COLOR))
        ax.set_yticks(range(len(rows)), [row["name"] for row in rows])
        ax.invert_yaxis()
        ax.set_xlabel(f"objective ({units}), lower is better", fontsize=8)
        ax.set_title(f"{scale}: {info['params'] / 1e6:.2f}M params, {info['tokens'] / 1e6:.2f}M tokens, "
                     f"{len(result['seeds'])} seed(s)", fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
        ax = axes[r][1]
        differences = summary["differences"]
        resolution = summary["noise"].get("resolution")
        if resolution is not None and math.isfinite(resolution):
            ax.axvspan(-resolution, resolution, color="#f2d7a6", alpha=0.5, zorder=0,
                       label=f"resolution ±{resolution:.3f}")
            ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
        ax.axvline(0.0, color="black", linewidth=1, zorder=1)
        for y, row in enumerate(differences):
            _error_bar(ax, y, row, COLORS.get(row["baseline"], RANDOM_COLOR), marker="D")
        ax.set_yticks(range(len(differences)), [row["name"] for row in differences])
        ax.set_ylim(len(differences) - 0.5, -0.5)
        ax.set_xlabel(f"paired difference ({units}); left of 0: recommended is better", fontsize=8)
        ax.set_title(f"{scale}: paired differences (same seed)", fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
    plot.png = _png(fig)
    plot.caption = (
        "Left: each mixture's mean objective over the seeds with its 95% t-interval; dots are the single "
        "seeds. These intervals include the shift a seed gives every mixture alike (common random numbers), "
        "so they overlap even when the paired differences are clear. Right: recommended minus each baseline, "
        "seed by seed (dots), their mean and 95% t-interval; an interval entirely left of zero means the "
        "recommendation wins at that scale. Shaded: the smallest difference these seeds can resolve, from "
        "the seed noise pooled over every mixture."
    )
    return plot


def render_validation_html(result: dict, plot: Plot) -> str:
    units = result["objective"]["units"]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>mixopt validate</title>", f"<style>{CSS}</style></head><body>",
             "<h1>mixopt validate</h1>",
             f'<p class="meta">Objective: {html.escape(result["objective"]["metric"])} ({html.escape(units)}), '
             f"lower is better; seeds {html.escape(str(result['seeds']))}.</p>",
             "<h2>Verdicts</h2>", "<ul>" + "".join(f"<li>{html.escape(v)}</li>" for v in result["verdicts"]) + "</ul>"]
    rho = result.get("spearman")
    if rho:
        rows = [[f"seed {seed}", format_number(value, 3)] for seed, value in rho["per_seed"].items()]
        rows.append([f"pooled ({rho['pooled_is']})", format_number(rho["pooled"], 3)])
        parts += ["<h2>Proxy against large ranking (Spearman)</h2>", _table(["", "Spearman"], rows)]
    parts += ["<h2>Intervals</h2>", _figure_html(plot)]
    for scale, summary in result["summary"].items():
        parts.append(f"<h2>{html.escape(scale)} scale</h2>")
        rows = [[row["name"], format_number(row["mean"]), format_interval(row), row["rank"]]
                for row in sorted(summary["mixtures"], key=lambda row: row["rank"])]
        parts.append(_table(["mixture", f"mean ({units})", "95% CI", "rank"], rows))
        rows = [[row["name"], format_number(row["mean"], sign=True), format_interval(row, sign=True)]
                for row in summary["differences"]]
        if rows:
            parts.append(_table(["paired difference", f"mean ({units})", "95% CI"], rows))
        noise = summary["noise"]
        unit = html.escape(units)
        parts.append(f'<p class="note">Seed noise of a paired difference: sd {format_number(noise["sd"])} {unit} '
                     f"(pooled over {noise['mixtures']} mixtures, {noise['df']} degrees of freedom); "
                     f"resolution over {noise['seeds']} seeds: {format_number(noise['resolution'])} {unit}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_validation_page(result: dict, out_dir: str | Path) -> Path:
    """out_dir/validate.html with the figure embedded, and the figure as out_dir/validate.png."""
    out_dir = Path(out_dir)
    plot = plot_validation(result)
    if plot.png is not None:
        atomic_write_bytes(out_dir / PLOT_FILE, plot.png)
    return atomic_write_text(out_dir / PAGE_FILE, render_validation_html(result, plot))

