"""What every group of commands shares: the typer apps, the progress reporter, the shared options,
the ways a command prints its result, and the one error path (`run`).

Every expected failure (bad config, missing file, bad argument, corrupted data) ends with exit
status 2 and exactly one line on stderr that starts with `error:`; no traceback.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import sys
import time

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

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


# -- progress --------------------------------------------------------------------------------------
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


def stderr_log(quiet: bool):
    """A log(line) that prints each line to stderr (nothing when quiet): the large-run commands' progress."""
    def log(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)
    return log


# -- results ---------------------------------------------------------------------------------------
def emit_json(payload) -> None:
    """Machine-readable output: one JSON document on stdout, never wrapped or coloured."""
    sys.stdout.write(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


def result_line(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


# -- commands and their options --------------------------------------------------------------------
def paragraphs(doc: str | None) -> str:
    """A docstring as help text: the lines of each paragraph joined, paragraphs kept apart."""
    text = inspect.cleandoc(doc or "")
    return "\n\n".join(" ".join(block.split()) for block in text.split("\n\n"))


def command(name: str, target: typer.Typer = app):
    """app.command(name) with the docstring's paragraphs folded for the terminal."""
    def register(function):
        return target.command(name, help=paragraphs(function.__doc__))(function)
    return register


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


# -- the one error path ----------------------------------------------------------------------------
def run(argv: list[str] | None = None, runner=None) -> int:
    """Run the app on argv, turning expected errors into one `error:` line and exit status 2.

    runner: what trains proxies for `recommend` and `run` (`run(mixtures, seeds, on_result)`);
    None: Ray. The commands find it as their typer context's `obj`."""
    try:
        app(args=argv, standalone_mode=False, prog_name="mixopt", obj=runner)
    except MixoptError as exc:
        error(str(exc))
        return 2
    except typer.Exit as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except (typer.Abort, KeyboardInterrupt):
        error("interrupted; finished proxy runs are kept in the store")
        return 130
    except typer.TyperException as exc:  # usage errors: unknown option, missing or bad argument
        context = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and context is not None:
            console.print(context.get_help())
            return 0
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        error(" ".join(message.split()))
        return 2
    return 0


def error(message: str) -> None:
    """One `error:` line on stderr (newlines folded so that it stays one line)."""
    line = " ".join(str(message).split())
    err_console.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
