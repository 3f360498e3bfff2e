"""The static pipeline: corpus -> space -> proxy study on Ray -> surrogate -> search -> recommendation.

`run_recommend(config, out_dir)` is what `mixopt recommend`, `mixopt.pipeline.recommend` and a
`ray job submit` all run. Its outputs in out_dir:
    runs.parquet          every proxy attempt (see mixopt/store.py)
    recommendation.json   the mixture, its predicted loss, the natural mixture's, and provenance
    surrogate/            the fitted surrogate (LightGBM text format or JSON coefficients)
Running it again with the same out_dir resumes: finished proxies are never trained again.
The loop itself lives in mixopt/stages.py, beside the stages it is made of (sample, run, fit, propose);
this module keeps what they share: the Reporter hooks, the Recommendation, the corpus and space
from a config, the noise report and the recommendation.json payload.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixopt import __version__
from mixopt.config import Config, proxy_spec
from mixopt.data.corpus import Corpus
from mixopt.errors import ConfigError, InputError
from mixopt.space import MixtureSpace
from mixopt.stages import NOISE_ROUND, NOISE_SEED_OFFSET  # noqa: F401  (re-exported)
from mixopt.store import RunStore
from mixopt.study import Result


class Reporter:
    """Progress hooks; the CLI draws bars, the pipeline stays silent."""

    def stage(self, name: str) -> None: ...

    def proxies(self, total: int, already_done: int, description: str) -> None: ...

    def proxy_done(self, status: str) -> None: ...

    def proxies_finished(self) -> None: ...

    def log(self, line: str) -> None: ...

    def busy(self, description: str):
        """A context manager around a step of unknown length (fitting, searching)."""
        return contextlib.nullcontext()


@dataclass
class Recommendation:
    """The result of the static pipeline (what recommendation.json holds, typed)."""

    domains: list[str]
    weights: np.ndarray
    predicted_loss: float
    natural_weights: np.ndarray
    natural_predicted_loss: float
    n_runs: int
    config_hash: str
    out_dir: Path
    payload: dict = field(repr=False)

    @property
    def mixture(self) -> dict[str, float]:
        return dict(zip(self.domains, self.weights.tolist()))

    def runs(self):
        """The runs table as a polars DataFrame."""
        import polars as pl

        return pl.read_parquet(self.out_dir / "runs.parquet")


def open_corpus(config: Config, reporter: Reporter) -> Corpus:
    corpus_dir = Path(config.data.corpus)
    if not (corpus_dir / "manifest.parquet").exists() and config.data.prepare:
        from mixopt.data.prepare import prepare_corpus

        reporter.stage(f"preparing corpus {corpus_dir} from {config.data.prepare}")
        prepare_corpus(corpus_dir, source=config.data.prepare, log=reporter.log)
    return Corpus.open(corpus_dir, verify=config.data.verify)


def build_space(config: Config, corpus: Corpus) -> MixtureSpace:
    domains = config.data.domains or corpus.domains
    unknown = [d for d in domains if d not in corpus.domains]
    if unknown:
        raise ConfigError(f"data.domains: {unknown} are not in the corpus (it has {corpus.domains})")
    for section in ("min_weights", "max_weights"):
        named = getattr(config.space, section)
        stray = sorted(set(named) - set(domains))
        if stray:
            raise ConfigError(f"space.{section}: unknown domains {stray} (domains: {domains})")
    if config.objective.weights:
        stray = sorted(set(config.objective.weights) - set(domains))
        if stray:
            raise ConfigError(f"objective.weights: unknown domains {stray} (domains: {domains})")
    tokens = corpus.tokens("train")
    try:
        return MixtureSpace(
            domains=domains,
            tokens=[tokens[d] for d in domains],
            target_tokens=config.space.target_tokens,
            max_epochs=config.space.max_epochs,
            min_weights=config.space.min_weights or None,
            max_weights=config.space.max_weights or None,
        )
    except InputError as exc:
        raise ConfigError(f"space: {exc}") from None


def noise_report(store: RunStore, space: MixtureSpace, objective: np.ndarray, metric: str, seed: int) -> dict:
    """Seed noise beside the spread of the objective over the study's mixtures.

    Mixtures trained under the study seed and a second seed give, per mixture, a difference d_i.
    The mean of d_i is a common shift (harmless to rankings under common random numbers); the
    spread of d_i around it is the noise that can reorder mixtures. Compare it with the spread
    of the objective across mixtures, which the surrogate is asked to explain."""
    finished = store.finished()
    columns = [f"{metric}_{d}" for d in space.domains]
    if finished.height == 0:
        return {}
    values = finished.select(columns).to_numpy() @ objective
    main = finished["seed"].to_numpy() == seed
    main_keys = {
        tuple(np.round(row, 9)): v
        for row, v in zip(finished.select([f"w_{d}" for d in space.domains]).to_numpy()[main], values[main])
    }
    differences = []
    for row, value, is_main in zip(
        finished.select([f"w_{d}" for d in space.domains]).to_numpy(), values, main
    ):
        key = tuple(np.round(row, 9))
        if not is_main and key in main_keys:
            differences.append(value - main_keys[key])
    spread = float(np.std(values[main], ddof=1)) if main.sum() > 1 else float("nan")
    report = {"mixture_spread_std": spread, "repeats": len(differences)}
    if differences:
        differences = np.asarray(differences)
        centred = differences - differences.mean()
        noise = float(np.sqrt(np.sum(centred**2) / max(len(centred) - 1, 1)) / np.sqrt(2)) if len(centred) > 1 else float("nan")
        report.update(
            seed_shift_mean=float(differences.mean()),
            seed_noise_std=noise,
            signal_to_noise=float(spread / noise) if noise and np.isfinite(noise) and noise > 0 else None,
        )
    return report


def run_recommend(config: Config, out_dir: str | Path, reporter: Reporter | None = None) -> Recommendation:
    """Run (or resume) the whole static pipeline; see the module docstring.

    The stages of mixopt.stages in a loop: every round (and the seed-noise repeats) is trained in
    turn, failed proxies of a resumed study are tried again, then the surrogate is fitted and the
    space searched."""
    from mixopt.stages import recommend_stages

    return recommend_stages(config, out_dir, reporter or Reporter())


def recommendation_payload(config, corpus, space, result: Result, surrogate_info, noise, store, started) -> dict:
    observed = result.observed
    best = int(np.nanargmin(observed))
    failed = int(np.sum(~np.isfinite(observed)))
    epochs = space.epochs(result.weights)
    return {
        "domains": space.domains,
        "weights": result.weights.tolist(),
        "mixture": dict(zip(space.domains, result.weights.tolist())),
        "predicted_loss": result.predicted,
        "natural_weights": result.natural.tolist(),
        "natural_predicted_loss": result.natural_predicted,
        "objective": {
            "metric": config.objective.metric,
            "weights": dict(zip(space.domains, result.objective.tolist())),
        },
        "n_runs": result.n_runs,
        "n_failed": failed,
        "best_observed": {"weights": result.X[best].tolist(), "loss": float(observed[best])},
        "epochs_at_target": epochs.tolist() if epochs is not None else None,
        "space": space.describe(),
        "surrogate": {**surrogate_info, "cv_rmse": result.cv_scores,
                      # how far to trust it: the objective's cross-validated R^2, the search's trust
                      # radius (total variation from a run; None: anywhere), the spread at the pick
                      "skill": result.skill, "trust_radius": result.trust_radius,
                      "predicted_std": result.predicted_std},
        "search": {
            "method": result.search.method,
            "candidates": result.search.candidates,
            "top_k": config.search.top_k,
        },
        "noise": noise,
        "proxy": dataclasses.asdict(proxy_spec(config)),
        "config_hash": config.digest(),
        "config": config.model_dump(),
        "corpus": {"directory": str(corpus.directory), "version": corpus.version},
        "runs_stored": len(store),
        "mixopt_version": __version__,
        "seconds": round(time.time() - started, 2),
    }


def format_table(payload: dict) -> list[list[str]]:
    """Rows of the printed table: domain, tokens, natural, recommended, epochs at target."""
    rows = []
    epochs = payload.get("epochs_at_target") or [None] * len(payload["domains"])
    for domain, tokens, natural, weight, epoch in zip(
        payload["domains"], payload["space"]["tokens"], payload["natural_weights"], payload["weights"], epochs
    ):
        rows.append([domain, f"{tokens:,.0f}", f"{natural:.3f}", f"{weight:.3f}",
                     "-" if epoch is None else f"{epoch:.2f}"])
    return rows
