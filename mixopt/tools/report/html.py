"""The report's page: tables of the recommendation, the seed noise and the runs, and every figure
embedded as base64 in one self-contained HTML file (no scripts).

    write_report("runs/study")  ->  runs/study/report/index.html  (+ the PNGs beside it)
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

from mixopt.errors import InputError
from mixopt.io import atomic_write_bytes, atomic_write_text
from mixopt.tools.report.load import StudyData, load_study, status_summary, surrogate_kind
from mixopt.tools.report.plots import PLOT_FILES, Plot, build_plots


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



def _is_number(cell) -> bool:
    if isinstance(cell, (int, float, np.integer, np.floating)) and not isinstance(cell, bool):
        return True
    try:
        float(str(cell).replace(",", ""))
        return True
    except ValueError:
        return str(cell) in ("–", "n/a")


def _table(header: list[str] | None, rows: list[list]) -> str:
    head = ("" if header is None
            else "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>")
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
    ranking = surrogate.get("cv") or {}
    if ranking.get("spearman") is not None:
        rows.append(["out-of-fold ranking of the runs",
                     f"Spearman {_fmt(ranking['spearman'])}, R² {_fmt(ranking['r2'])}, "
                     f"top-1 regret {_fmt(ranking['top1_regret'])} ({_fmt(ranking['runs'])} runs)"])
    gain = payload.get("gain") or {}
    if gain.get("verdict"):
        rows.append(["gain over the prior", gain["verdict"]])
    best = payload.get("best_observed") or {}
    if "loss" in best:
        rows.append(["best observed objective", _fmt(best.get("loss"), 5)])
    rows.append(["proxy runs, main seed (of which failed)",
                 f"{_fmt(payload.get('n_runs'))} ({_fmt(payload.get('n_failed'))})"])
    target = space.get("target_tokens")
    epochs = sorted(set(space.get("max_epochs") or []))
    rows.append(["target tokens of the large run", "none (no repetition cap)" if target is None else f"{target:,.0f}"])
    if epochs:
        rows.append(["max epochs per domain",
                     _fmt(epochs[0]) if len(epochs) == 1 else ", ".join(_fmt(e) for e in epochs)])
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
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
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
        parts.append('<p class="warn">No proxy run of this study finished '
                     f'({html.escape(status_summary(study.runs))}); '
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
