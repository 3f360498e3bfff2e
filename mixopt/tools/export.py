"""Export a recommendation for the trainers that will use it: Megatron-LM, Hugging Face datasets, YAML.

    export_recommendation("runs/study", "megatron")   -> runs/study/mixture.megatron.txt
    export_recommendation("runs/study", "hf")         -> runs/study/mixture.hf.json
    export_recommendation("runs/study", "yaml")       -> runs/study/mixture.yaml

Each format also has a pure function from the recommendation dict (what recommendation.json holds)
to the text: `megatron_data_path`, `hf_interleave_json` (and `hf_interleave_spec` for the dict),
`yaml_mixture`; `render_export` picks one by name. A dict is checked, and a file read and checked,
by mixopt.pipeline.results (check_payload, Recommendation.from_json).

Weights are rounded once, the same way for every format: to `precision` decimals by the
largest-remainder method, so that the rounded weights add up to exactly one at that precision
(10**precision units in all; the remainder goes to the entries that lost most to rounding, which
never makes a weight negative). A domain whose weight is zero after rounding is left out of the
Megatron and Hugging Face exports (see below) and kept, as 0, in the YAML record.

Megatron-LM (`--data-path`): the documented form is a flat list `weight1 prefix1 weight2 prefix2 ...`
(megatron/core/datasets/utils.py, `get_blend_from_list`: an even-length list whose even positions
all parse as floats is read as weight/prefix pairs; weights are normalised by their sum). We write
one `weight prefix` pair per line and nothing else: Megatron reads a `--data-args-path` file with
`f.read().split()`, so the same file works as `--data-args-path FILE` and pasted (or
`$(cat FILE)`) after `--data-path`. There are no comments in it, because a `#` line would become
tokens of the list. Prefixes may therefore not contain whitespace. Zero weights are left out:
Megatron core would still open and index such a dataset to draw no samples from it, and
Megatron-Energon's blend asserts every weight is > 0. The per-split forms (`--train-data-path` ...,
`--per-split-data-args-path`) are not written; the same list can be given to `--train-data-path`.

Hugging Face (`datasets.interleave_datasets`): a JSON object with `datasets` (domain names, in
order), `probabilities` (same order, summing to one), `seed` and `stopping_strategy`, so that
    interleave_datasets([by_name[d] for d in spec["datasets"]], probabilities=spec["probabilities"],
                        seed=spec["seed"], stopping_strategy=spec["stopping_strategy"])
reproduces the mixture, plus a `mixopt` block of provenance that interleave_datasets never sees.
The weights are shares of training tokens, while interleave_datasets draws examples: the mixture
holds when every example carries the same number of tokens, i.e. when the domains are interleaved
as packed fixed-length token blocks (as Megatron's samples are), not as raw documents of
domain-dependent length. The provenance says so (`unit`).
Zero-probability domains are left out: with p = 0 a source is never drawn, and under
stopping_strategy="all_exhausted" datasets 5.x raises for it (older releases loop forever).
The stopping strategy, unless given, follows the recommendation's `epochs_at_target` (the epochs of
each domain that the large run reads; listed in the provenance):
  - every domain read at most once: "first_exhausted" (the library's default). The stream ends when
    the first domain runs out, after target_tokens / max_epochs >= target tokens: no repeats.
  - some domain read more than once: "all_exhausted", which repeats small domains until every
    domain has been read once; under "first_exhausted" the stream would end after only
    target_tokens / max_epochs tokens, when the most repeated domain first runs out. The stream
    then holds target_tokens / min_epochs tokens: for map-style datasets (which materialise the
    indices) keep that in mind when a big domain has a small weight; streaming datasets are lazy.
  - no target size recorded: "first_exhausted".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mixopt.errors import InputError
from mixopt.io import atomic_write_text
from mixopt.pipeline.results import Recommendation, check_payload, recommendation_path

FORMATS = ("megatron", "hf", "yaml")
DEFAULT_PREFIX_TEMPLATE = "{domain}_text_document"
DEFAULT_PRECISION = 6
STOPPING_STRATEGIES = ("first_exhausted", "all_exhausted", "all_exhausted_without_replacement")
DEFAULT_FILENAMES = {"megatron": "mixture.megatron.txt", "hf": "mixture.hf.json", "yaml": "mixture.yaml"}


# -- rounding ------------------------------------------------------------------------------------
def _check_precision(precision) -> int:
    if isinstance(precision, bool) or not isinstance(precision, (int, np.integer)) or not 1 <= precision <= 12:
        raise InputError(f"precision must be an integer number of decimals in [1, 12], got {precision!r}")
    return int(precision)


def round_weights(weights: Sequence[float], precision: int = DEFAULT_PRECISION) -> list[int]:
    """Weights as integer units of 10**-precision that add up to exactly 10**precision.

    Largest remainder: every weight is floored, then the units still missing go one each to the
    weights with the largest fractional parts (ties: the larger weight, then the earlier domain)."""
    precision = _check_precision(precision)
    weights = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    if weights.ndim != 1 or len(weights) == 0 or not np.all(np.isfinite(weights)) or weights.sum() <= 0:
        raise InputError(f"weights must be finite, non-negative and not all zero, got {np.asarray(weights).tolist()}")
    total_units = 10**precision
    scaled = weights / weights.sum() * total_units
    units = np.floor(scaled).astype(np.int64)
    missing = int(total_units - units.sum())
    order = sorted(range(len(weights)), key=lambda i: (-(scaled[i] - units[i]), -weights[i], i))
    for index in order[:missing]:
        units[index] += 1
    return units.tolist()


def _decimal(units: int, precision: int) -> str:
    """Exact decimal text of units * 10**-precision, without trailing zeros ("0.25", "1")."""
    whole, fraction = divmod(units, 10**precision)
    text = f"{whole}.{fraction:0{precision}d}".rstrip("0").rstrip(".")
    return text


def rounded_mixture(payload: Mapping, precision: int = DEFAULT_PRECISION) -> list[tuple[str, int]]:
    """(domain, units) for every domain, in the recommendation's order (units: see round_weights)."""
    domains, weights = check_payload(payload)
    return list(zip(domains, round_weights(weights, precision)))


# -- Megatron-LM -----------------------------------------------------------------------------------
def megatron_prefixes(domains: Sequence[str], prefix_template: str = DEFAULT_PREFIX_TEMPLATE,
                      prefixes: Mapping[str, str] | None = None) -> list[str]:
    """The dataset prefix of each domain: prefixes[domain] if given, else prefix_template.format(domain=...)."""
    if not isinstance(prefix_template, str) or not prefix_template:
        raise InputError(f"prefix_template must be a non-empty string, got {prefix_template!r}")
    prefixes = dict(prefixes or {})
    stray = sorted(set(prefixes) - set(domains))
    if stray:
        raise InputError(f"prefixes names unknown domains {stray} (domains: {list(domains)})")
    result = []
    for domain in domains:
        if domain in prefixes:
            prefix = prefixes[domain]
        else:
            try:
                prefix = prefix_template.format(domain=domain)
            except (KeyError, IndexError, ValueError) as exc:
                raise InputError(
                    f"prefix_template {prefix_template!r} must use only the {{domain}} placeholder: {exc!r}"
                ) from None
        if not isinstance(prefix, str) or not prefix or re.search(r"\s", prefix):
            raise InputError(
                f"the Megatron prefix of domain {domain!r} is {prefix!r}: it must be non-empty and hold no "
                "whitespace (Megatron splits --data-path and --data-args-path on whitespace)"
            )
        result.append(prefix)
    if len(set(result)) != len(result):
        raise InputError(f"Megatron prefixes must differ between domains, got {result}")
    return result


def megatron_data_path(payload: Mapping, prefix_template: str = DEFAULT_PREFIX_TEMPLATE,
                       precision: int = DEFAULT_PRECISION, prefixes: Mapping[str, str] | None = None) -> str:
    """The weight/prefix list for Megatron-LM's --data-path (or a --data-args-path file):
    one `weight prefix` line per domain with a non-zero rounded weight."""
    precision = _check_precision(precision)
    mixture = rounded_mixture(payload, precision)
    names = megatron_prefixes([d for d, _ in mixture], prefix_template, prefixes)
    lines = [f"{_decimal(units, precision)} {prefix}" for (_, units), prefix in zip(mixture, names) if units > 0]
    return "\n".join(lines) + "\n"


def parse_megatron_data_path(text: str) -> tuple[list[str], list[float] | None]:
    """Read a --data-path list back the way Megatron does (get_blend_from_list on text.split()):
    (prefixes, weights), weights None when the list holds prefixes only."""
    blend = text.split()
    if len(blend) % 2 == 1:
        return blend, None
    weights, prefixes = [], []
    for raw_weight, prefix in zip(blend[0::2], blend[1::2]):
        try:
            weights.append(float(raw_weight))
        except ValueError:
            return blend, None
        prefixes.append(prefix)
    return prefixes, weights


# -- Hugging Face datasets ----------------------------------------------------------------------
def _provenance(payload: Mapping) -> dict:
    surrogate = payload.get("surrogate") or {}
    objective = payload.get("objective") or {}
    provenance = {
        "predicted_loss": payload.get("predicted_loss"),
        "natural_predicted_loss": payload.get("natural_predicted_loss"),
        "metric": objective.get("metric"),
        # what the mixture was optimised for: the sets the objective weighs, eval sets included
        "objective": _weighed(objective.get("weights")),
        "surrogate": surrogate.get("kind"),
        "n_runs": payload.get("n_runs"),
        "config_hash": payload.get("config_hash"),
        "mixopt_version": payload.get("mixopt_version"),
    }
    return {key: value for key, value in provenance.items() if value is not None}


def _weighed(weights) -> dict[str, float] | None:
    """The objective's non-zero weights by set name (None when not recorded)."""
    if not isinstance(weights, Mapping):
        return None
    named = {str(k): float(v) for k, v in weights.items() if isinstance(v, (int, float)) and v > 0}
    return named or None


def _default_seed(payload: Mapping) -> int:
    seed = ((payload.get("config") or {}).get("study") or {}).get("seed", 0)
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else 0


def _epochs(payload: Mapping, domains: Sequence[str]) -> dict[str, float]:
    epochs = payload.get("epochs_at_target")
    if not isinstance(epochs, list) or len(epochs) != len(domains):
        return {}
    return {d: float(e) for d, e in zip(domains, epochs)
            if isinstance(e, (int, float)) and not isinstance(e, bool) and math.isfinite(e)}


def default_stopping_strategy(payload: Mapping) -> str:
    """"all_exhausted" when the recommendation reads some domain more than once at the target
    size (so that the stream repeats it), else "first_exhausted" (see the module docstring)."""
    epochs = _epochs(payload, payload.get("domains") or [])
    return "all_exhausted" if epochs and max(epochs.values()) > 1.0 + 1e-9 else "first_exhausted"


def hf_interleave_spec(payload: Mapping, precision: int = DEFAULT_PRECISION, seed: int | None = None,
                       stopping_strategy: str | None = None) -> dict:
    """The arguments of datasets.interleave_datasets for this mixture, as a JSON-ready dict.

    seed: None takes the study's seed (config.study.seed) or 0. stopping_strategy: None chooses
    from epochs_at_target (default_stopping_strategy)."""
    precision = _check_precision(precision)
    if stopping_strategy is None:
        check_payload(payload)
        stopping_strategy = default_stopping_strategy(payload)
    if stopping_strategy not in STOPPING_STRATEGIES:
        raise InputError(f"stopping_strategy must be one of {list(STOPPING_STRATEGIES)}, got {stopping_strategy!r}")
    if seed is None:
        seed = _default_seed(payload)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    mixture = rounded_mixture(payload, precision)
    kept = [(domain, units) for domain, units in mixture if units > 0]
    left_out = [domain for domain, units in mixture if units == 0]
    provenance = _provenance(payload)
    provenance["unit"] = ("probabilities are shares of training tokens: interleave packed fixed-length "
                          "token blocks so that every example carries the same number of tokens")
    epochs = _epochs(payload, [d for d, _ in mixture])
    if epochs:
        provenance["epochs_at_target"] = {d: round(e, 4) for d, e in epochs.items()}
    if left_out:
        provenance["left_out_zero_weight"] = left_out
    return {
        "datasets": [domain for domain, _ in kept],
        # float(exact decimal text): the nearest double to each rounded weight
        "probabilities": [float(_decimal(units, precision)) for _, units in kept],
        "seed": int(seed),
        "stopping_strategy": stopping_strategy,
        "mixopt": provenance,
    }


def hf_interleave_json(payload: Mapping, precision: int = DEFAULT_PRECISION, seed: int | None = None,
                       stopping_strategy: str | None = None) -> str:
    return json.dumps(hf_interleave_spec(payload, precision, seed, stopping_strategy), indent=2) + "\n"


# -- YAML ------------------------------------------------------------------------------------------
def yaml_mixture(payload: Mapping, precision: int = DEFAULT_PRECISION) -> str:
    """`mixture: {domain: weight}` (every domain, zeros included, in order) and `provenance:`."""
    import yaml

    precision = _check_precision(precision)
    mixture = {domain: float(_decimal(units, precision)) for domain, units in rounded_mixture(payload, precision)}
    document = {"mixture": mixture, "provenance": _provenance(payload)}
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


# -- dispatch and files ------------------------------------------------------------------------
def render_export(payload: Mapping, format: str, *, prefix_template: str = DEFAULT_PREFIX_TEMPLATE,
                  precision: int = DEFAULT_PRECISION, prefixes: Mapping[str, str] | None = None,
                  seed: int | None = None, stopping_strategy: str | None = None) -> str:
    """The export text of one format ("megatron", "hf" or "yaml") for a recommendation dict."""
    if format == "megatron":
        return megatron_data_path(payload, prefix_template, precision, prefixes)
    if format == "hf":
        return hf_interleave_json(payload, precision, seed, stopping_strategy)
    if format == "yaml":
        return yaml_mixture(payload, precision)
    raise InputError(f"format must be one of {list(FORMATS)}, got {format!r}")


def export_recommendation(source: str | Path, format: str, out: str | Path | None = None, *,
                          prefix_template: str = DEFAULT_PREFIX_TEMPLATE, precision: int = DEFAULT_PRECISION,
                          prefixes: Mapping[str, str] | None = None, seed: int | None = None,
                          stopping_strategy: str | None = None) -> Path:
    """Write the recommendation in `source` (a study directory or a recommendation.json) in one format.

    out: the file to write; an existing directory gets the default name (mixture.megatron.txt,
    mixture.hf.json, mixture.yaml); None writes that default name beside recommendation.json.
    Returns the path written (atomically)."""
    if format not in FORMATS:
        raise InputError(f"format must be one of {list(FORMATS)}, got {format!r}")
    path = recommendation_path(source)
    payload = Recommendation.from_json(path).payload
    text = render_export(payload, format, prefix_template=prefix_template, precision=precision,
                         prefixes=prefixes, seed=seed, stopping_strategy=stopping_strategy)
    if out is None:
        target = path.parent / DEFAULT_FILENAMES[format]
    else:
        target = Path(out)
        if target.is_dir():
            target = target / DEFAULT_FILENAMES[format]
    return atomic_write_text(target, text)


__all__ = [
    "FORMATS", "export_recommendation", "render_export", "megatron_data_path", "parse_megatron_data_path",
    "megatron_prefixes", "hf_interleave_spec", "default_stopping_strategy", "hf_interleave_json", "yaml_mixture",
    "round_weights",
]
