"""After a study: `mixopt export` (the mixture for a trainer) and `mixopt report` (an HTML page)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mixopt.cli.common import ConsoleReporter, QuietOption, command, emit_json, result_line


@command("export")
def export(
    study: Path = typer.Argument(..., help="Study directory (or its recommendation.json)."),
    format: str = typer.Option(..., "--format", "-f",
        help="megatron (--data-path list), hf (interleave_datasets arguments) or yaml."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
        help="File to write (default: beside recommendation.json)."),
    prefix_template: str = typer.Option("{domain}_text_document", "--prefix-template",
                                        help="Megatron dataset prefix per domain; {domain} is replaced."),
    precision: int = typer.Option(6, "--precision", help="Decimals of the exported weights (they sum to exactly 1)."),
    quiet: bool = QuietOption(),
    json_output: bool = typer.Option(False, "--json", help='Print {"path": ..., "format": ...} as JSON.'),
) -> None:
    """Write the recommended mixture for a trainer: Megatron-LM, Hugging Face datasets or YAML.

    Prints the path written."""
    from mixopt.tools.export import export_recommendation

    path = export_recommendation(study, format, out, prefix_template=prefix_template, precision=precision)
    if json_output:
        emit_json({"path": str(path), "format": format})
    else:
        result_line(str(path))


@command("report")
def report(
    study: Path = typer.Argument(...,
        help="Study directory (recommendation.json, runs.parquet, optional train_log.parquet)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
        help="HTML file to write (default: STUDY/report/index.html)."),
    quiet: bool = QuietOption(),
    json_output: bool = typer.Option(False, "--json", help='Print {"path": ..., "plots": [...]} as JSON.'),
) -> None:
    """Write a self-contained HTML report with PNG plots.

    Plots: predicted against observed loss (cross-validated), the recommended mixture beside the
    natural one, per-domain response curves, and for online runs the weight trajectories and losses.
    Prints the path written."""
    from mixopt.tools.report import load_study, write_report

    load_study(study)            # a missing or broken study fails here, before any progress line
    reporter = ConsoleReporter(quiet or json_output)
    with reporter.busy(f"rendering the report of {study}"):
        path = write_report(study, out)
    if json_output:
        emit_json({"path": str(path), "plots": sorted(p.name for p in path.parent.glob("*.png"))})
    else:
        result_line(str(path))
