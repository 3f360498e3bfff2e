"""One configuration over one study directory, opened: the corpus, the space, the run store, the study.

    ctx = open_study(config, out_dir, reporter, runner=None)

`open_study` checks --out, opens the corpus (building it first from the config's own sources when
it is missing or stale, or preparing an embedded one when it is missing), builds the mixture space
from the tokens each domain's source holds and the config's bounds, opens runs.parquet and creates
the Study that the stages replay (mixopt/pipeline/replay.py). The study's loss columns are the
training domains, then the corpus's eval sets (held out, never trained on); the objective may weigh
either, and without weights it is the mean over the training domains. `runner` trains proxies
(`run(mixtures, seeds, on_result)`); None: the Ray runner, started on the first batch to train.
Reporter is the progress protocol every stage talks to (the CLI draws bars; the default is silent).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixopt.config import Config, proxy_spec
from mixopt.data.corpus import Corpus
from mixopt.errors import ConfigError, InputError
from mixopt.pipeline.store import RunStore, recipe_hash
from mixopt.space import MixtureSpace
from mixopt.study import Fidelity, Study

NOISE_SEED_OFFSET = 1000
"""The seed-noise repeats train under the study seed plus this."""
NOISE_ROUND = -1
"""The `round` of the seed-noise repeats in runs.parquet (rounds of the study count from 0)."""


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
class StudyContext:
    """One configuration over one study directory: corpus, space, store and the replayed Study."""

    config: Config
    out_dir: Path
    spec: object                 # workers.spec.ProxySpec
    recipe: str
    corpus: Corpus
    space: MixtureSpace
    store: RunStore
    study: Study
    started: float
    first_round: np.ndarray | None = None
    noise_told: bool = False     # the seed-noise repeats are settled (they are measured, not told)
    told_run_ids: list[str] = field(default_factory=list)   # the run of each of the study's rows, in told order
    runner: object | None = None  # trains proxies: run(mixtures, seeds, on_result); None: Ray, on first use

    @property
    def metric(self) -> str:
        return self.config.objective.metric

    @property
    def domains(self) -> list[str]:
        return self.space.domains

    @property
    def eval_sets(self) -> list[str]:
        return self.store.eval_sets

    @property
    def loss_names(self) -> list[str]:
        """The study's loss columns: the training domains, then the eval sets."""
        return self.domains + self.eval_sets

    def spec_at(self, fraction: float) -> tuple[object, str]:
        """(spec, recipe hash) of proxies trained on `fraction` of the config's tokens (at least one
        step; 1.0: the config's own spec), the length of a multi-fidelity study's short runs."""
        if fraction >= 1.0:
            return self.spec, self.recipe
        spec = self.spec.shortened(fraction)
        return spec, recipe_hash(dataclasses.asdict(spec))


def prepare_out_dir(out_dir: str | Path) -> Path:
    """The study directory, created with its parents; InputError naming --out when that fails."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out_dir}: cannot create the study directory ({exc.strerror or exc})") from None
    probe = out_dir / f".mixopt-write-test.{time.time_ns()}.tmp"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"--out {out_dir}: the study directory is not writable ({exc.strerror or exc})") from None
    return out_dir


def open_corpus(config: Config, reporter: Reporter) -> Corpus:
    """The study's corpus. With data.sources / split / eval: built (sampled to what the study
    needs, on the config's Ray cluster) when missing or stale, else opened as it is (the check
    lists the input files and compares their sizes and times with the build's record). With
    data.prepare: prepared when missing. Then opened with the config's verification."""
    from mixopt.data.build import check_objective, has_sources

    data = config.data
    corpus_dir = Path(data.corpus)
    if has_sources(data):
        from mixopt.data.build import prepare_from_config
        from mixopt.data.sample import sample_size

        if not data.split:  # every name is known before anything is read
            check_objective(config.objective.weights, list(data.sources), list(data.eval))
        reporter.stage(f"corpus {corpus_dir} from the config's sources")
        prepare_from_config(data, sample_size(config), log=reporter.log, ray_address=config.ray.address,
                            num_cpus=config.ray.num_cpus)
    elif not (corpus_dir / "manifest.parquet").exists() and data.prepare:
        from mixopt.data.prepare import prepare_corpus

        reporter.stage(f"preparing corpus {corpus_dir} from {data.prepare}")
        prepare_corpus(corpus_dir, source=data.prepare, log=reporter.log)
    return Corpus.open(corpus_dir, verify=data.verify)


def build_space(config: Config, corpus: Corpus) -> MixtureSpace:
    """The mixture space over the config's domains: its bounds, and repetition caps from the tokens
    each domain's source holds for training (Corpus.trainable_tokens: exact, or estimated from the
    sample for a domain read in part). ConfigError for a name the corpus lacks, an objective over a
    set that is neither a domain nor an eval set, or bits per byte where byte counts are unknown."""
    from mixopt.data.build import check_objective

    domains = config.data.domains or corpus.domains
    unknown = [d for d in domains if d not in corpus.domains]
    if unknown:
        raise ConfigError(f"data.domains: {unknown} are not in the corpus (it has {corpus.domains})")
    for section in ("min_weights", "max_weights"):
        named = getattr(config.space, section)
        stray = sorted(set(named) - set(domains))
        if stray:
            raise ConfigError(f"space.{section}: unknown domains {stray} (domains: {domains})")
    check_objective(config.objective.weights, domains, corpus.eval_sets)
    if config.objective.metric == "bpb":
        per_token = corpus.bytes_per_token("val")
        unknown_bytes = [name for name in domains + corpus.eval_sets if not np.isfinite(per_token[name])]
        if unknown_bytes:
            raise ConfigError(f"objective.metric: bpb needs the text bytes of every set, and the manifest "
                              f"records none for {unknown_bytes[0]!r}; use metric: loss")
    tokens = corpus.trainable_tokens()
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


def objective_spec(config: Config, domains: list[str], eval_sets: list[str]) -> dict[str, float] | None:
    """The study's objective over its loss columns: the config's weights; without them the mean over
    the training domains (None, equal weights on every column, when there are no eval sets)."""
    if config.objective.weights:
        return dict(config.objective.weights)
    return {d: 1.0 for d in domains} if eval_sets else None


def make_study(config: Config, space: MixtureSpace, eval_sets: list[str] | None = None) -> Study:
    eval_sets = list(eval_sets or [])
    fidelity = config.study.fidelity
    return Study(
        space,
        budget=config.study.proxies,
        objective=objective_spec(config, space.domains, eval_sets),
        seed=config.study.seed,
        rounds=config.study.rounds,
        surrogate=config.surrogate.kind,
        search=config.search.method,
        search_options={"candidates": config.search.candidates, "top_k": config.search.top_k},
        loss_names=space.domains + eval_sets,
        fidelity=None if fidelity is None else Fidelity(fidelity.short_proxies, fidelity.short_tokens),
    )


def open_study(config: Config, out_dir: str | Path, reporter: Reporter | None = None,
               runner=None) -> StudyContext:
    """Check --out, open (preparing if configured) the corpus, build the space, open the store.

    runner: what trains proxies (`run(mixtures, seeds, on_result)`, as RayProxyRunner); None: a Ray
    runner for the config's cluster, started when the first batch is to be trained."""
    reporter = reporter or Reporter()
    started = time.time()
    out_dir = prepare_out_dir(out_dir)
    spec = proxy_spec(config)
    recipe = recipe_hash(dataclasses.asdict(spec))
    corpus = open_corpus(config, reporter)
    space = build_space(config, corpus)
    store = RunStore(out_dir / "runs.parquet", space.domains, corpus.eval_sets, corpus_version=corpus.version)
    return StudyContext(config=config, out_dir=out_dir, spec=spec, recipe=recipe, corpus=corpus, space=space,
                        store=store, study=make_study(config, space, corpus.eval_sets), started=started,
                        runner=runner)
