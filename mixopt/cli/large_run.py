"""One model under an online mixer, and the tools that train proxies around a finished study:
`mixopt train`, `mixopt jacobian`, `mixopt validate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mixopt.cli.common import command, stderr_log
from mixopt.errors import InputError
from mixopt.io import json_ready

ONLINE_CHOICES = ("static", "auto", "aioli", "stratified")
"""--online: the mixers `mixopt train` offers (doremi needs reference losses, which the CLI has not)."""


@command("train")
def train(
    config: Path = typer.Option(..., "--config", "-c",
        help="Training configuration (YAML), e.g. configs/train.yaml.",
        dir_okay=False),
    mixture: Optional[Path] = typer.Option(None, "--mixture", "-m",
        help="recommendation.json: the static mixture (held by static; the prior of the other mixers).",
        dir_okay=False),
    online: str = typer.Option("static", "--online",
        help="Online mixer: static (holds the --mixture), auto, aioli, stratified "
             "(doremi needs reference losses: not from the CLI)."),
    out: Path = typer.Option(..., "--out", "-o",
        help="Run directory (train_log.parquet, weights.png, train_result.json, checkpoint/); "
             "an unfinished run there resumes.",
        file_okay=False),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override the config's seed."),
    jacobian: Optional[Path] = typer.Option(None, "--jacobian",
        help="jacobian.json of `mixopt jacobian`: the study's transfer structure for --online auto.",
        dir_okay=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr; print only the result."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as one JSON document on stdout."),
) -> None:
    """Train a model on the corpus under an online mixer, starting from the static recommendation.

    Every round the mixer sets the proportions of the batches; after it, every domain is evaluated
    on its held-out windows and the losses are told to the mixer. Per-domain losses and weights go to
    OUT/train_log.parquet (step, tokens, phase, w_<d>, loss_<d>, train_loss), the weight trajectories
    to OUT/weights.png, the final held-out losses to OUT/train_result.json.
    """
    from mixopt.config import load_train_config
    from mixopt.data.corpus import Corpus
    from mixopt.large_run import align_weights, build_mixer, run_space, train_run
    from mixopt.pipeline.results import Recommendation

    settings = load_train_config(config)
    if seed is not None:
        if seed < 0:
            raise InputError(f"seed must be >= 0, got {seed}")
        settings = settings.model_copy(update={"seed": seed})
    if online not in ONLINE_CHOICES:
        raise InputError(f"online must be one of {', '.join(ONLINE_CHOICES)}; got {online!r}")
    corpus = Corpus.open(settings.corpus, verify="size")
    prior = study = None
    if mixture is not None:
        recommendation = Recommendation.from_json(mixture, label="mixture")
        domains = settings.domains or recommendation.domains
        prior = align_weights(recommendation.proportions, recommendation.domains, domains)
        study = recommendation.payload
    else:
        domains = settings.domains or corpus.domains
        if online == "static":
            raise InputError("mixture: --online static holds the mixture of --mixture; give one")
    missing = [d for d in domains if d not in corpus.domains]
    if missing:
        raise InputError(f"domains {missing} are not in the corpus at {settings.corpus}")
    space = run_space(settings, domains, corpus.trainable_tokens(), study)
    J = None
    if jacobian is not None:
        from mixopt.tools.jacobian import read_jacobian

        J = read_jacobian(jacobian, domains)
    mixer = build_mixer(settings, domains, prior, method=online, space=space, jacobian=J)
    result = train_run(settings, domains, mixer, out, log=stderr_log(quiet or json_output), label=online)
    if json_output:
        print(json.dumps(result))
    else:
        print(f"{online}: mean held-out loss {result['mean_loss']:.4f} nats/token after {result['tokens']:,} tokens "
              f"({result['seconds']:.0f} s); log {Path(out) / 'train_log.parquet'}")


@command("jacobian")
def jacobian(
    mixture: Path = typer.Option(..., "--mixture", "-m",
        help="recommendation.json of a finished study (its runs.parquet beside it).",
        dir_okay=False),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
        help="Where to write the Jacobian (default: jacobian.json beside the recommendation).",
        dir_okay=False),
    repeats: int = typer.Option(2, "--repeats",
        help="Proxies on the recommendation at the study's length and at half of it (each)."),
    threads: int = typer.Option(2, "--threads", help="torch CPU threads."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr; print only the result."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as one JSON document on stdout."),
) -> None:
    """Estimate the study's per-domain Jacobian at its recommendation, for `mixopt train --jacobian`.

    How each domain's loss moves with every domain's share comes from the study's proxies,
    shrunk towards "each domain learns only from its own data" as far as their noise asks; each
    domain's rate along the proxies' length from REPEATS proxies on the recommendation at the
    study's length and at half of it (reused by a second call on the same study, which only
    refits). `auto` uses it to see what one domain's data teaches the others, which one large run
    cannot measure.
    """
    from mixopt.tools.jacobian import study_jacobian

    if threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    result = study_jacobian(mixture, out, repeats=repeats, threads=threads, log=stderr_log(quiet or json_output))
    if json_output:
        print(json.dumps(result))
    else:
        along = ", ".join(f"{d} {a:+.3f}" for d, a in zip(result["domains"], result["along"]))
        print(f"jacobian: {result['proxies']} proxies, rates along the length (nats per log token) {along}; "
              f"{result['path']}")


@command("validate")
def validate(
    config: Path = typer.Option(Path("configs/validate.yaml"), "--config", "-c",
        help="Validation configuration (YAML): the two scales, the seeds, the random mixtures.",
        dir_okay=False),
    mixture: Path = typer.Option(..., "--mixture", "-m", help="recommendation.json to validate.", dir_okay=False),
    out: Path = typer.Option(..., "--out", "-o",
        help="Directory for validate.json, validate.parquet, validate.md, validate.html; "
             "finished (scale, seed) packs there are reused.",
        file_okay=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress on stderr; print only the result."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as one JSON document on stdout."),
) -> None:
    """Train the recommended, natural, uniform and random mixtures at the proxy scale and at a larger
    scale, once per seed of the config's `seeds` (common random numbers within a seed).

    Prints per scale each mixture's mean objective with its 95% interval over the seeds, the paired
    differences recommended - natural and recommended - uniform with their 95% intervals, the seed
    noise of a paired difference and the smallest difference the seeds resolve, the proxy-to-large
    Spearman correlation per seed and pooled, and one verdict line per scale and baseline. Running
    it again with the same OUT trains only the (scale, seed) packs not finished there.
    """
    from mixopt.config import load_validate_config
    from mixopt.tools.validate import run_validate, validate_markdown

    settings = load_validate_config(config)
    result = run_validate(settings, mixture, out, log=stderr_log(quiet or json_output))
    if json_output:
        print(json.dumps(json_ready(result)))
    else:
        print(validate_markdown(result), end="")
        print(f"Files: {Path(out) / 'validate.md'}, validate.json, validate.parquet, validate.html")
