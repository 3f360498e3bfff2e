"""Every configuration schema: YAML validated by pydantic, with one-line errors that name the field.

    Config            a static study (`mixopt recommend` and its stages; configs/smoke.yaml, demo.yaml)
    TrainSettings     one model under an online mixer (`mixopt train`; configs/train.yaml)
    ValidateSettings  mixtures trained at two scales and several seeds (`mixopt validate`; configs/validate.yaml)

Every section rejects unknown keys, NaN and infinities; numbers carry their ranges. Relative paths
are resolved against the working directory of the command (on a Ray cluster, give shared paths).
One module on purpose: every key a user can write in a YAML file is defined, with its range and
meaning, in this one place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

from mixopt.errors import ConfigError

Fraction = Field(ge=0.0, le=1.0)


SectionT = TypeVar("SectionT", bound="Section")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)


DOMAIN_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


def _paths_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class SourceConfig(Section):
    """One training domain (data.sources.<name>) or eval set (data.eval.<name>): text files by
    their extension (`paths`, `text_field`), or already tokenized (`format` megatron | tokens)."""

    paths: list[str] | None = None
    """Globs of .jsonl, .json (JSON lines), .jsonl.gz, .jsonl.zst, .parquet, .txt files (`**` recurses)
    or `datasets.save_to_disk` folders; relative to the working directory."""
    text_field: str | None = None
    """The field (column) holding the text; dots reach nested fields (meta.text). Default: text."""
    format: Literal["megatron", "tokens"] | None = None
    """None: text files, by extension. megatron: a Megatron-LM .bin/.idx pair. tokens: a flat id array."""
    path: str | None = None
    """megatron: the .bin/.idx prefix; tokens: the file."""
    dtype: Literal["uint16", "uint32"] | None = None
    """tokens: the ids' type."""
    eos_id: int | None = Field(default=None, ge=0)
    """tokens: the id that ends each document (default: the tokenizer's end-of-text id)."""
    vocab_size: int | None = Field(default=None, ge=1)
    """Pre-tokenized: the vocabulary the ids were made with; must equal the tokenizer's."""

    _paths = field_validator("paths", mode="before")(_paths_list)

    @model_validator(mode="after")
    def _fields_fit_the_format(self):
        given = {name for name in type(self).model_fields if getattr(self, name) is not None} - {"format"}
        if self.format is None:
            allowed, required = {"paths", "text_field"}, {"paths"}
        elif self.format == "megatron":
            allowed, required = {"path", "vocab_size"}, {"path"}
        else:
            allowed, required = {"path", "dtype", "eos_id", "vocab_size"}, {"path", "dtype"}
        kind = f"format {self.format}" if self.format else "text files (no format)"
        extra = sorted(given - allowed)
        if extra:
            raise ValueError(f"{extra[0]} does not apply to {kind}")
        missing = sorted(required - given)
        if missing:
            raise ValueError(f"{missing[0]} is required for {kind}")
        if self.paths is not None and not self.paths:
            raise ValueError("paths must name at least one file or glob")
        return self


class SplitConfig(Section):
    """A table whose `domain_field` names each row's domain (data.split[i])."""

    paths: list[str]
    domain_field: str
    text_field: str | None = None

    _paths = field_validator("paths", mode="before")(_paths_list)

    @field_validator("paths")
    @classmethod
    def _some_paths(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("paths must name at least one file or glob")
        return value


class DataConfig(Section):
    corpus: str = "data/corpus"
    """Directory of a prepared corpus (manifest.parquet and shards)."""
    prepare: str | None = None
    """If the corpus is missing, prepare it from this source: "default", "fixture" or a text directory."""
    domains: list[str] | None = None
    """Domains to mix, in order (default: every domain of the corpus)."""
    verify: Literal["none", "size", "sha256"] = "size"
    tokenizer: str = "bytes"
    """A Hugging Face `tokenizers` JSON file (or a folder holding tokenizer.json), or "bytes"."""
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    """Training domains by name: the corpus is built from them (mixopt.data.build)."""
    split: list[SplitConfig] = Field(default_factory=list)
    """Tables split into domains by a field; the domains are named by its values."""
    eval: dict[str, SourceConfig] = Field(default_factory=dict)
    """Held-out sets that are not training domains; objective.weights may name them."""

    @model_validator(mode="after")
    def _one_way_to_build(self):
        import re

        own = bool(self.sources or self.split or self.eval)
        if own and self.prepare is not None:
            raise ValueError("give either prepare (the embedded corpora) or sources/split/eval (your own data), "
                             "not both")
        if self.tokenizer != "bytes" and not own:
            raise ValueError("tokenizer applies to data.sources, data.split and data.eval "
                             "(prepare builds byte-level corpora)")
        if self.eval and not (self.sources or self.split):
            raise ValueError("eval sets need training domains: give data.sources or data.split")
        for section in ("sources", "eval"):
            for name in getattr(self, section):
                if not re.fullmatch(DOMAIN_NAME_PATTERN, name):
                    raise ValueError(f"{section}.{name}: a name may hold only letters, digits, '_', '.' and '-'")
        both = sorted(set(self.sources) & set(self.eval))
        if both:
            raise ValueError(f"{both[0]!r} is both a source and an eval set")
        return self


class SpaceConfig(Section):
    target_tokens: float | None = Field(default=None, gt=0)
    """Tokens of the large run; None: no repetition cap."""
    max_epochs: float = Field(default=4.0, gt=0)
    min_weights: dict[str, float] = Field(default_factory=dict)
    max_weights: dict[str, float] = Field(default_factory=dict)

    @field_validator("min_weights", "max_weights")
    @classmethod
    def _weights_in_unit_interval(cls, value: dict[str, float]) -> dict[str, float]:
        for domain, weight in value.items():
            if not (0.0 <= weight <= 1.0):
                raise ValueError(f"weight of {domain!r} must lie in [0, 1], got {weight}")
        return value


class FidelityConfig(Section):
    """Short proxies first (study.fidelity): `short_proxies` runs on `short_tokens` of proxy.tokens,
    then the study's `proxies` full-length runs, the first of them promoted from the short runs."""

    short_proxies: int = Field(ge=2)
    """Short runs, a space-filling first round (beside study.proxies)."""
    short_tokens: float = Field(default=0.25, gt=0, lt=1)
    """Their training tokens, as a fraction of proxy.tokens (their schedule fits that length)."""


class StudyConfig(Section):
    proxies: int = Field(default=16, ge=2)
    """Budget: full-length proxy runs that the surrogate is fitted on (the main seed)."""
    fidelity: FidelityConfig | None = None
    """None (or false, "off"): every proxy at full length."""
    rounds: int = Field(default=1, ge=1)
    seed: int = Field(default=0, ge=0)
    noise_repeats: int = Field(default=2, ge=0)
    """Mixtures trained again with another seed, to measure seed noise (beyond the budget)."""
    retries: int = Field(default=1, ge=0)
    """Retries of a proxy whose worker died or whose loss diverged."""
    diverged_lr_factor: float = Field(default=0.5, gt=0, le=1)
    """A diverged proxy is retried with its learning rate times this factor."""
    proxies_per_task: int = Field(default=4, ge=1)
    """Proxies trained as one packed computation in one Ray task."""
    cpus_per_task: float = Field(default=1.0, gt=0)
    gpus_per_task: float = Field(default=0.25, ge=0, le=1)
    """Used only when the cluster has GPUs."""

    @field_validator("fidelity", mode="before")
    @classmethod
    def _fidelity_off(cls, value):
        return None if value in (False, "off", "none") else value


class ObjectiveConfig(Section):
    weights: dict[str, float] | None = None
    """Weight per evaluation domain; None: the mean of the per-domain losses."""
    metric: Literal["loss", "bpb"] = "loss"
    """loss: nats per token; bpb: bits per byte."""

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, value):
        if value is not None:
            for domain, weight in value.items():
                if weight < 0:
                    raise ValueError(f"weight of {domain!r} must be non-negative, got {weight}")
            if value and sum(value.values()) <= 0:
                raise ValueError("weights must not all be zero")
        return value


class SurrogateConfig(Section):
    kind: str = "auto"


class SearchConfig(Section):
    method: str = "constrained"
    candidates: int = Field(default=100_000, ge=1)
    top_k: int = Field(default=100, ge=1)


class RayConfig(Section):
    address: str | None = None
    """None: RAY_ADDRESS if set (inside `ray job submit`), else a local cluster of num_cpus."""
    num_cpus: int | None = Field(default=None, ge=1)


class Config(Section):
    name: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    proxy: dict[str, Any] = Field(default_factory=dict)
    """Fields of workers.spec.ProxySpec (preset, tokens, batch_size, seq_len, lr, ...)."""
    study: StudyConfig = Field(default_factory=StudyConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    surrogate: SurrogateConfig = Field(default_factory=SurrogateConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("proxy")
    @classmethod
    def _finite_proxy_numbers(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"{key} must be a finite number, got {item}")
        return value

    def digest(self) -> str:
        """A stable hash of the validated configuration (recorded with every recommendation)."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


def _format_validation_error(source: str, error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        problem = "unknown key"
    else:
        problem = first["msg"]
        if "input" in first and not isinstance(first["input"], (dict, list)):
            problem += f" (got {first['input']!r})"
    more = len(error.errors()) - 1
    return f"{source}: {where}: {problem}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def validate_mapping(model: type[SectionT], payload: Any, source: str) -> SectionT:
    """Validate a mapping (parsed YAML) into `model`, or raise ConfigError naming the field."""
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None


def parse_config(payload: Any, source: str = "config") -> Config:
    """Validate a mapping (parsed YAML) into a Config, or raise ConfigError naming the field."""
    config = validate_mapping(Config, payload, source)
    proxy_spec(config, source)  # validates the proxy section against the worker's spec
    return config


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML of a config file, or ConfigError naming the file (and the line of a syntax error)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config path {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    return parse_config(read_yaml(path), str(path))


def proxy_spec(config: Config, source: str = "config"):
    """The workers' ProxySpec built from the config's proxy section (ConfigError on bad fields)."""
    from workers.spec import ProxySpec  # torch-free module

    known = {f.name for f in dataclasses.fields(ProxySpec)}
    unknown = sorted(set(config.proxy) - known)
    if unknown:
        raise ConfigError(f"{source}: proxy.{unknown[0]}: unknown key (known: {sorted(known)})")
    try:
        return ProxySpec(**config.proxy)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: proxy: {exc}") from None


# -- mixopt train: one model under an online mixer ----------------------------------------------------
class ModelSettings(Section):
    preset: str | dict[str, Any] = "cpu-0.5m"
    """A name in configs/presets.yaml or a dict of dims (n_layer, n_head, d_model, d_ff)."""
    tokens: int = Field(default=1_048_576, gt=0)
    """Training tokens of the run (rounded down to whole steps)."""
    batch_size: int = Field(default=8, gt=0)
    seq_len: int = Field(default=128, gt=0)
    lr: float = Field(default=3e-3, gt=0)
    warmup: float = Field(default=0.1, ge=0, lt=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    final_lr: float = Field(default=0.1, ge=0, le=1)
    weight_decay: float = Field(default=0.1, ge=0)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    grad_clip: float = Field(default=1.0, ge=0)


class EndPhase(Section):
    """An end-of-training phase on a static mixture: the online mixture's prior with the named
    domains' weights multiplied by their factors ("Does your data spark joy?")."""
    fraction: float = Field(default=0.15, gt=0, lt=1)
    upweight: dict[str, float] = Field(default_factory=dict)


class OnlineSettings(Section):
    method: str = "auto"
    """The mixer of build_mixer when it is given no method (`mixopt train` always names one: --online,
    static unless told otherwise)."""
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-method options for mixopt.online.create, e.g. {auto: {rounds: 40}}, over the options of
    real training (mixopt.online.training_options: gentler tilts for auto)."""
    end_phase: EndPhase | None = None
    max_epochs: float | None = Field(default=None, gt=0)
    """How many times the run may read each domain's training tokens: the online mixers stay
    below max_epochs * tokens_d / the run's tokens. None: the study's max_epochs (from --mixture),
    else 4."""
    min_weights: dict[str, float] = Field(default_factory=dict)
    max_weights: dict[str, float] = Field(default_factory=dict)
    """Per-domain bounds of the online mixers, on top of the study's (from --mixture)."""


class TrainSettings(Section):
    corpus: str = "data/corpus"
    domains: list[str] | None = None
    """Domains in order (default: those of --mixture, else every domain of the corpus)."""
    model: ModelSettings = Field(default_factory=ModelSettings)
    online: OnlineSettings = Field(default_factory=OnlineSettings)
    eval_tokens: int = Field(default=2048, gt=0)
    """Held-out tokens per domain evaluated after every round (the same windows every time)."""
    final_eval_tokens: int = Field(default=16384, gt=0)
    """Held-out tokens per domain of the final evaluation."""
    seed: int = Field(default=0, ge=0)
    threads: int = Field(default=2, gt=0)
    checkpoint: bool = True
    """Write a checkpoint (model, optimizer, mixer, source) after every round."""

    @property
    def steps(self) -> int:
        return self.model.tokens // (self.model.batch_size * self.model.seq_len)


def parse_train_config(payload: Any, source: str = "train config") -> TrainSettings:
    settings = validate_mapping(TrainSettings, payload, source)
    if settings.steps < 1:
        raise ConfigError(f"{source}: model.tokens must be at least batch_size * seq_len "
                          f"({settings.model.batch_size * settings.model.seq_len})")
    return settings


def load_train_config(path: str | Path) -> TrainSettings:
    return parse_train_config(read_yaml(path), source=str(path))


# -- mixopt validate: the same mixtures at the proxy's scale and a larger one -------------------------
class ScaleSettings(Section):
    """A training recipe (the fields of workers.spec.ProxySpec)."""
    preset: str | dict[str, Any] = "cpu-0.5m"
    tokens: int = Field(default=262_144, gt=0)
    batch_size: int = Field(default=8, gt=0)
    seq_len: int = Field(default=128, gt=0)
    lr: float = Field(default=3e-3, gt=0)
    warmup: float = Field(default=0.1, ge=0, lt=1)
    eval_tokens: int = Field(default=16_384, gt=0)
    compile: bool | None = None
    """torch.compile the training step; None: runs of 200 steps or more (as the study's proxies)."""


class ValidateSettings(Section):
    corpus: str = "data/corpus"
    proxy: ScaleSettings = Field(default_factory=ScaleSettings)
    large: ScaleSettings = Field(default_factory=lambda: ScaleSettings(
        preset={"n_layer": 4, "n_head": 4, "d_model": 192, "d_ff": 576}, tokens=1_048_576, lr=2e-3))
    random: int = Field(default=3, ge=0)
    """Random Dirichlet(1) mixtures trained besides recommended, natural and uniform."""
    seeds: list[Annotated[StrictInt, Field(ge=0)]] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    """Every mixture is trained once per seed and scale; a seed sets the initialisation and the data
    order of every mixture alike (common random numbers). The older `seed: N` means `seeds: [N]`."""
    threads: int = Field(default=2, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _one_seed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "seed" in data:
            if "seeds" in data:
                raise ValueError("seed: give `seeds` (a list) or `seed` (one seed), not both")
            data = {**data, "seeds": [data["seed"]]}
            del data["seed"]
        return data

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            raise ValueError(f"seeds must be distinct, got {seeds} ({repeated[0]} repeats)")
        return seeds


def parse_validate_config(payload: Any, source: str = "validate config") -> ValidateSettings:
    return validate_mapping(ValidateSettings, payload, source)


def load_validate_config(path: str | Path) -> ValidateSettings:
    return parse_validate_config(read_yaml(path), source=str(path))
