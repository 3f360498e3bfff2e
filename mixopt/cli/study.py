"""The static study: `mixopt recommend`, and the same work in stages (`sample`, `run`, `fit`, `propose`).

Each command is a thin shell over mixopt.pipeline: it loads the config, draws progress, prints the
result (a table, one line with --quiet, one JSON document with --json).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from mixopt.cli.common import (
    ConfigOption,
    ConsoleReporter,
    JsonOption,
    OutOption,
    QuietOption,
    command,
    console,
    emit_json,
    result_line,
)


def _load(config: Path):
    from mixopt.config import load_config

    return load_config(config)


def print_recommendation(payload: dict) -> None:
    from mixopt.pipeline.results import METRIC_UNITS, format_table, objective_label

    table = Table(title="Recommended mixture", show_lines=False)
    for column, justify in (("domain", "left"), ("tokens", "right"), ("natural", "right"),
                            ("recommended", "right"), ("epochs", "right")):
        table.add_column(column, justify=justify)
    for row in format_table(payload):
        table.add_row(*row)
    table.add_section()
    table.add_row("predicted loss", "", f"{payload['natural_predicted_loss']:.4f}",
                  f"{payload['predicted_loss']:.4f}", "")
    console.print(table)
    noise = payload.get("noise") or {}
    objective = payload["objective"]
    names = list(objective["weights"])
    label = objective_label(names, [objective["weights"][n] for n in names], payload.get("eval_sets") or [],
                            objective["metric"], METRIC_UNITS.get(objective["metric"], objective["metric"]))
    console.print(
        label,
        f"| runs: {payload['n_runs']} ({payload['n_failed']} failed)"
        f" | surrogate: {payload['surrogate']['kind']}"
        f" | best observed: {payload['best_observed']['loss']:.4f}",
    )
    fidelity = payload.get("fidelity")
    if fidelity:
        console.print(f"fidelity: {fidelity['short_proxies']} short runs of {fidelity['short_tokens']:,} tokens first, "
                      f"{fidelity['short_runs_fitted']} of them fitted beside the full-length runs; "
                      f"proxy compute {fidelity['compute_in_full_runs']:.1f} full-length runs", soft_wrap=True)
    if noise.get("repeats"):
        console.print(
            f"noise: seed noise std {noise.get('seed_noise_std', float('nan')):.4f} "
            f"(common seed shift {noise.get('seed_shift_mean', float('nan')):+.4f}) "
            f"vs spread across mixtures {noise.get('mixture_spread_std', float('nan')):.4f}"
        )
    cv = (payload.get("surrogate") or {}).get("cv") or {}
    if cv.get("spearman") is not None:
        console.print(f"surrogate out of fold: Spearman {cv['spearman']:.2f}, R^2 {cv['r2']:.2f}, "
                      f"top-1 regret {cv['top1_regret']:.0%} ({cv['runs']} runs)", soft_wrap=True)
    gain = payload.get("gain") or {}
    if gain.get("verdict"):
        console.print(gain["verdict"], soft_wrap=True, markup=False, highlight=False)


@command("recommend")
def recommend(
    ctx: typer.Context,
    config: Path = ConfigOption(),
    out: Path = OutOption(),
    quiet: bool = QuietOption(),
    json_output: bool = JsonOption(),
) -> None:
    """Run the whole static pipeline: sample mixtures, train proxies on Ray, fit, search, recommend.

    Writes DIR/runs.parquet and DIR/recommendation.json. Running it again with the same --out
    resumes: finished proxies are not trained again (failed ones are retried). The same as
    `sample` + `run` until the study is complete, then `propose`."""
    from mixopt import pipeline

    started = time.time()
    study_config = _load(config)
    reporter = ConsoleReporter(quiet or json_output)
    recommendation = pipeline.recommend(study_config, out, reporter, runner=ctx.obj)
    if json_output:
        emit_json(recommendation.payload)
        return
    print_recommendation(recommendation.payload)
    if not quiet:
        console.print(f"wrote {out / 'recommendation.json'} and {out / 'runs.parquet'} in {time.time() - started:.0f}s")


@command("sample")
def sample(
    config: Path = ConfigOption(),
    out: Path = OutOption(),
    quiet: bool = QuietOption(),
    json_output: bool = JsonOption(),
) -> None:
    """Stage 1: write the study's next batch of mixtures to DIR/proposed.parquet.

    Replays the study from DIR/runs.parquet (deterministic given the seed) and writes the first round
    with proxies still to train, or the seed-noise repeats once every round is trained. Later rounds
    are chosen by the surrogate fitted on the earlier ones. Prints "study complete" (and removes
    proposed.parquet) when nothing is left to train. Starts no Ray."""
    from mixopt import pipeline

    result = pipeline.sample(_load(config), out, ConsoleReporter(quiet or json_output))
    if json_output:
        emit_json(result.to_json())
    elif quiet:
        result_line(str(result.path) if result.path else "complete")
    else:
        result_line(result.summary())


@command("run")
def run(
    ctx: typer.Context,
    config: Path = ConfigOption(),
    out: Path = OutOption(),
    retry_failed: bool = typer.Option(False, "--retry-failed",
        help="Train again the proposed proxies whose earlier attempts failed."),
    quiet: bool = QuietOption(),
    json_output: bool = JsonOption(),
) -> None:
    """Stage 2: train the proxies in DIR/proposed.parquet on Ray, appending each to DIR/runs.parquet.

    Resumable: proxies already in the store are skipped, and each result is stored as soon as its Ray
    task finishes, so an interrupted run loses only the tasks in flight. Joins the cluster of
    `ray.address` in the config, of RAY_ADDRESS (inside `ray job submit`), or starts a local one."""
    from mixopt import pipeline

    result = pipeline.run(_load(config), out, ConsoleReporter(quiet or json_output), retry_failed=retry_failed,
                          runner=ctx.obj)
    if json_output:
        emit_json(result.to_json())
    elif quiet:
        result_line(f"{result.trained} trained, {result.ok} ok, {result.failed} failed, "
                    f"{'complete' if result.complete else 'incomplete'}")
    else:
        result_line(result.summary())


@command("fit")
def fit(
    config: Path = ConfigOption(),
    out: Path = OutOption(),
    quiet: bool = QuietOption(),
    json_output: bool = JsonOption(),
) -> None:
    """Stage 3: fit the surrogate on the finished runs in DIR/runs.parquet, with cross-validated scores.

    Writes the model in LightGBM text / JSON form under DIR/surrogate/ and DIR/fit.json (the kind,
    each member's CV RMSE, the objective's out-of-fold RMSE and Spearman). Works on a partial study
    too: it fits what has been trained so far. Starts no Ray."""
    from mixopt import pipeline

    result = pipeline.fit(_load(config), out, ConsoleReporter(quiet or json_output))
    if json_output:
        emit_json(result.to_json())
        return
    cv = result.payload.get("cv") or {}
    if quiet:
        result_line(f"rmse={cv.get('rmse')} spearman={cv.get('spearman')} top1_regret={cv.get('top1_regret')} "
                    f"n={result.payload['n_fit']}")
    else:
        result_line(result.summary())


@command("propose")
def propose(
    config: Path = ConfigOption(),
    out: Path = OutOption(),
    quiet: bool = QuietOption(),
    json_output: bool = JsonOption(),
) -> None:
    """Stage 4: search the space with the surrogate and write DIR/recommendation.json.

    Needs a complete study (every round and the seed-noise repeats trained). Gives the same file
    as `mixopt recommend` from the same runs. Starts no Ray."""
    from mixopt import pipeline

    recommendation = pipeline.propose(_load(config), out, ConsoleReporter(quiet or json_output))
    if json_output:
        emit_json(recommendation.payload)
        return
    print_recommendation(recommendation.payload)
    if not quiet:
        console.print(f"wrote {out / 'recommendation.json'}")
