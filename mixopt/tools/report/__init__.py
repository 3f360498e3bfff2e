"""`mixopt report DIR`: one self-contained HTML page about a study, with PNG plots.

    write_report("runs/study")  ->  runs/study/report/index.html  (+ the PNGs beside it)

What it reads from the study directory:
    recommendation.json   the mixture, its prediction, the space, objective, surrogate, noise
    runs.parquet          every proxy attempt (mixopt/pipeline/store.py)
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

from mixopt.tools.report.html import render_html, write_report
from mixopt.tools.report.load import StudyData, load_study, response_mixtures
from mixopt.tools.report.plots import build_plots

__all__ = ["write_report", "load_study", "build_plots", "render_html", "response_mixtures", "StudyData"]

