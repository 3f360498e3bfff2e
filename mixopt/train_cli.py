"""`mixopt train` and `mixopt validate`: typer command functions (registered by mixopt/cli.py).

Bad input raises mixopt.errors exceptions; the CLI turns them into one `error:` line, exit 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from mixopt.errors import InputError


def _say(quiet: bool):
    def log(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)
    return log


def train_command(
    config: Path = typer.Option(..., "--config", "-c", help="Training configuration (YAML), e.g. configs/train.yaml.", dir_okay=False),
    mixture: Optional[Path] = typer.Option(None, "--mixture", "-m", help="recommendation.json: the static mixture (prior of the online mixer; held by static).", dir_okay=False),
    online: str = typer.Option("auto", "--online", help="Online mixer: auto, aioli, static, stratified (doremi needs reference losses: not from the CLI)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (train_log.parquet, weights.png, train_result.json, checkpoint/); an unfinished run there resumes.", file_okay=False),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the config's seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr; print only the result."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as one JSON document on stdout."),
) -> None:
    """Train a model on the corpus under an online mixer, starting from the static recommendation.

    Every round the mixer sets the proportions of the batches; after it, every domain is evaluated
    on its held-out windows and the losses are told to the mixer. Per-domain losses and weights go to
    OUT/train_log.parquet (step, tokens, phase, w_<d>, loss_<d>, train_loss), the weight trajectories
    to OUT/weights.png, the final held-out losses to OUT/train_result.json.
    """
    from mixopt import online as online_mixers
    from mixopt.data.corpus import Corpus
    from mixopt.training import align_weights, build_mixer, load_train_config, read_mixture, run_space, train_run

    settings = load_train_config(config)
    if seed is not None:
        if seed < 0:
            raise InputError(f"seed must be >= 0, got {seed}")
        settings = settings.model_copy(update={"seed": seed})
    if online not in online_mixers.METHODS or online == "doremi":
        raise InputError(f"online must be one of auto, aioli, static, stratified; got {online!r}")
    corpus = Corpus.open(settings.corpus, verify="size")
    prior = study = None
    if mixture is not None:
        mix_domains, weights, study = read_mixture(mixture)
        domains = settings.domains or mix_domains
        prior = align_weights(weights, mix_domains, domains)
    else:
        domains = settings.domains or corpus.domains
        if online == "static":
            raise InputError("mixture: --online static holds the mixture of --mixture; give one")
    missing = [d for d in domains if d not in corpus.domains]
    if missing:
        raise InputError(f"domains {missing} are not in the corpus at {settings.corpus}")
    space = run_space(settings, domains, corpus.tokens("train"), study)
    mixer = build_mixer(settings, domains, prior, method=online, space=space)
    result = train_run(settings, domains, mixer, out, log=_say(quiet or json_output), label=online)
    if json_output:
        print(json.dumps(result))
    else:
        print(f"{online}: mean held-out loss {result['mean_loss']:.4f} nats/token after {result['tokens']:,} tokens "
              f"({result['seconds']:.0f} s); log {Path(out) / 'train_log.parquet'}")


def validate_command(
    config: Path = typer.Option(Path("configs/validate.yaml"), "--config", "-c", help="Validation configuration (YAML).", dir_okay=False),
    mixture: Path = typer.Option(..., "--mixture", "-m", help="recommendation.json to validate.", dir_okay=False),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for validate.json, validate.parquet, validate.md; finished scales are reused.", file_okay=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr; print only the result."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as one JSON document on stdout."),
) -> None:
    """Train the recommended, natural, uniform and random mixtures at the proxy scale and at a larger
    scale; print both rankings and the proxy-to-large Spearman correlation.
    """
    from mixopt.validate import load_validate_config, ranking_markdown, run_validate

    settings = load_validate_config(config)
    result = run_validate(settings, mixture, out, log=_say(quiet or json_output))
    if json_output:
        print(json.dumps(result))
    else:
        print(ranking_markdown(result), end="")
