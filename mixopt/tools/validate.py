"""`mixopt validate`: does the recommendation win where it matters, at a larger scale, beyond seed noise?

    result = run_validate(settings, recommendation_path, out_dir)

Trains the same static mixtures at the proxy's scale (`proxy:`, the study's recipe) and at a larger
scale (`large:`, by default about 4x the proxy's parameters and 4x its tokens), once per seed of
`seeds`: the recommended mixture, the natural one (tokens available per domain, from the
recommendation), uniform, and `random` Dirichlet mixtures (drawn once, the same at every seed).
Within one (scale, seed) every model starts from the same initialisation and sees the same data
stream (common random numbers; workers/data.py, workers/model.py:init_state), and they are trained
as one packed computation (workers/proxies.py), in which each model trains to the same bits as it
would alone: its result does not depend on which other mixtures are validated beside it. The
objective is the recommendation's: its metric (loss in nats/token, or bpb) weighted by its
objective weights over the domains and the eval sets (held-out sets of the corpus, never trained
on): every model is scored on each eval set that the objective weighs, which the corpus must hold.

What it reports, per scale (`summarize`, from the (mixtures x seeds) table of objectives):
  - each mixture's mean objective over the seeds with a 95% t-interval (n - 1 degrees of freedom).
    These intervals hold the shift that a seed gives every mixture alike, so they overlap even where
    the paired differences are clear: compare mixtures by the differences.
  - the paired differences recommended - natural and recommended - uniform: the per-seed differences,
    their mean and its 95% t-interval (n - 1 degrees of freedom on the per-seed differences).
  - the seed noise of a paired difference, pooled over every mixture (mixopt.stats.paired_noise: the
    residual of mixture + seed effects, (M - 1)(S - 1) degrees of freedom), and the resolution: the
    95% half-width that a paired difference averaged over these seeds gets from that noise. It is the
    smallest difference these seeds can resolve: a true difference below it is not distinguishable
    from zero (a single pair's own interval estimates the same thing from its S - 1 degrees of freedom).
  - the ranks of the seed-mean objectives.
Across scales: the proxy<->large Spearman correlation per seed (the two rankings of the mixtures
trained at that seed) and pooled: the Spearman correlation of the seed-mean objectives, proxy
against large. Pooled this way the seed's common shift and part of the seed noise average out, so
it answers "does the proxy ranking predict the large one"; pooling all (mixture, seed) pairs would
instead reward agreeing on which seed was lucky. Seeds with a failed (diverged) run of a scale are
left out of that scale's means, ranks and Spearman figures (the per-mixture intervals keep every
finished run). One verdict line per scale and baseline: "recommended beats natural by X nats, 95% CI
[a, b], at the large scale", "is worse than ...", or "is not distinguishable from ...".

Writes out_dir/validate.json (every figure), out_dir/validate.parquet (one row per (mixture, scale,
seed): name, scale, seed, objective, rank, loss_<d>, bpb_<d> for every domain and weighed eval set,
w_<d>, params, tokens, seconds, status), out_dir/validate.md (the tables and the verdicts) and
out_dir/validate.html with validate.png (the intervals drawn; mixopt/tools/report/validation.py).
Each (scale, seed) is cached atomically in out_dir/scale_<scale>_seed<seed>.json, keyed on the
training spec, the mixtures, the domains (and eval sets) and the seed: a finished one is not trained
again when the command runs again with the same out_dir, and adding seeds trains only the new ones.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mixopt.config import ScaleSettings, ValidateSettings
from mixopt.errors import ConfigError, InputError
from mixopt.io import atomic_write_json, atomic_write_parquet, atomic_write_text, json_ready, read_reusable_json
from mixopt.pipeline.results import Recommendation
from mixopt.stats import ordinal_ranks, paired_noise, spearman, t_interval
from mixopt.tools.numbers import format_interval, format_number

SCALES = ("proxy", "large")
BASELINES = ("natural", "uniform")
CONFIDENCE = 0.95
UNITS = {"loss": "nats", "bpb": "bits/byte"}
RANDOM_STREAM = 0x5A11D
"""Seed of the random mixtures' stream: the same mixtures whatever the training seeds."""


def candidate_mixtures(domains: list[str], weights: np.ndarray, payload: dict, k: int, seed: int = 0):
    """(names, (n, K) mixtures): recommended, natural (when the recommendation knows it), uniform,
    random-1..k (Dirichlet(1), from a stream fixed by `seed`)."""
    K = len(domains)
    names, rows = ["recommended"], [weights]
    natural = payload.get("natural_weights")
    if natural is None and isinstance(payload.get("space"), dict) and payload["space"].get("tokens"):
        natural = payload["space"]["tokens"]
    if natural is not None:
        natural = np.asarray(natural, dtype=np.float64)
        if natural.shape == (K,) and np.all(np.isfinite(natural)) and np.all(natural >= 0) and natural.sum() > 0:
            names.append("natural")
            rows.append(natural / natural.sum())
    names.append("uniform")
    rows.append(np.full(K, 1.0 / K))
    rng = np.random.default_rng([seed, RANDOM_STREAM])
    for i in range(k):
        names.append(f"random-{i + 1}")
        rows.append(rng.dirichlet(np.ones(K)))
    return names, np.stack(rows)


def _spec(scale: ScaleSettings, name: str):
    from workers.spec import ProxySpec

    try:
        return ProxySpec(preset=scale.preset, tokens=scale.tokens, batch_size=scale.batch_size,
                         seq_len=scale.seq_len, lr=scale.lr, warmup=scale.warmup, eval_tokens=scale.eval_tokens,
                         compile=scale.compile, device="cpu")
    except ValueError as exc:
        raise ConfigError(f"validate config: {name}: {exc}") from None


# -- training, one (scale, seed) pack at a time -----------------------------------------------------
def run_validate(settings: ValidateSettings, mixture_path: str | Path, out_dir: str | Path,
                 log: Callable[[str], None] | None = None) -> dict:
    from mixopt.data.corpus import Corpus
    from workers.presets import load_preset

    log = log or (lambda line: None)
    out = Path(out_dir)
    recommendation = Recommendation.from_json(mixture_path, label="mixture")
    domains, weights, payload = recommendation.domains, recommendation.proportions, recommendation.payload
    corpus = Corpus.open(settings.corpus, verify="size")
    missing = [d for d in domains if d not in corpus.domains]
    if missing:
        raise InputError(f"mixture: domains {missing} are not in the corpus at {settings.corpus}")
    metric = recommendation.metric
    weight_of = dict(zip(recommendation.loss_names, recommendation.objective_weights))
    eval_sets = [name for name in recommendation.eval_sets if weight_of[name] > 0]
    missing = [name for name in eval_sets if name not in corpus.eval_sets]
    if missing:
        raise InputError(f"mixture: the objective weighs eval set {missing[0]!r}, which the corpus at "
                         f"{settings.corpus} lacks (its eval sets: {corpus.eval_sets or 'none'})")
    scored = domains + eval_sets
    specs = {scale: _spec(getattr(settings, scale), scale) for scale in SCALES}
    params = {scale: load_preset(specs[scale].preset, corpus.vocab_size).num_params() for scale in SCALES}
    out.mkdir(parents=True, exist_ok=True)
    names, mixtures = candidate_mixtures(domains, weights, payload, settings.random)
    started = time.time()
    packs: dict[str, dict[int, dict]] = {scale: {} for scale in SCALES}
    for index, seed in enumerate(settings.seeds):        # seed by seed: an interrupted run keeps whole seeds
        for scale in SCALES:
            left = len(settings.seeds) - index
            packs[scale][seed] = _train_or_reuse(settings, scale, seed, specs[scale], params[scale], names,
                                                 mixtures, domains, out, left, log, eval_sets)
    objective = np.array([weight_of[name] for name in scored])
    table = {scale: np.array([[_objective(packs[scale][seed], metric, i, objective) for seed in settings.seeds]
                              for i in range(len(names))]) for scale in SCALES}
    summary = summarize(names, list(settings.seeds), table, units=UNITS[metric])
    result = {
        "domains": domains, "eval_sets": eval_sets, "names": names, "mixtures": mixtures.tolist(),
        "seeds": list(settings.seeds),
        "objective": {"metric": metric, "units": UNITS[metric], "weights": objective.tolist(), "columns": scored},
        "scales": {scale: _scale_record(packs[scale], specs[scale], params[scale], settings.seeds) for scale in SCALES},
        **summary,
        "seconds": time.time() - started,
        "settings": settings.model_dump(),
    }
    atomic_write_json(out / "validate.json", json_ready(result))
    _write_parquet(out / "validate.parquet", result, packs, table)
    atomic_write_text(out / "validate.md", validate_markdown(result))
    from mixopt.tools.report.validation import write_validation_page

    write_validation_page(result, out)
    return result


def _train_or_reuse(settings, scale, seed, spec, params, names, mixtures, domains, out, seeds_left, log,
                    eval_sets=()) -> dict:
    """One (scale, seed) pack: losses over the domains, then `eval_sets`; cached in out_dir."""
    from workers.proxies import train_proxies

    cached = out / f"scale_{scale}_seed{seed}.json"
    eval_sets = list(eval_sets)
    key = {"spec": dataclasses.asdict(spec), "names": names, "mixtures": mixtures.tolist(), "domains": domains,
           "seed": seed, **({"eval_sets": eval_sets} if eval_sets else {})}
    saved = read_reusable_json(cached, key)
    if saved is not None:
        log(f"{scale}, seed {seed}: finished already ({cached})")
        return saved
    log(f"{scale}, seed {seed}: training {len(names)} models of {params / 1e6:.2f}M parameters on "
        f"{spec.tokens:,} tokens each ({spec.steps} steps), packed, {settings.threads} threads")
    wall, cpu = time.time(), time.process_time()
    results = train_proxies(settings.corpus, domains, mixtures, [seed] * len(names), spec,
                            threads=settings.threads, packed=True, eval_sets=eval_sets)
    scored = domains + eval_sets
    seconds, cpu_seconds = time.time() - wall, time.process_time() - cpu
    pack = {"key": key, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "status": [r["status"] for r in results],
            "loss": [[r["loss"][d] for d in scored] for r in results],
            "bpb": [[r["bpb"][d] for d in scored] for r in results]}
    atomic_write_json(cached, json_ready(pack))
    after = f"; this scale's other seeds: about {seconds * (seeds_left - 1) / 60:.0f} min" if seeds_left > 1 else ""
    log(f"{scale}, seed {seed}: done in {seconds:.0f} s ({cpu_seconds:.0f} CPU s){after}")
    return pack


def _objective(pack: dict, metric: str, i: int, objective: np.ndarray) -> float:
    values = np.array([math.nan if v is None else v for v in pack[metric][i]], dtype=np.float64)
    active = objective > 0
    return float(values[active] @ objective[active]) if pack["status"][i] == "ok" else math.nan


def _scale_record(packs: dict[int, dict], spec, params: int, seeds) -> dict:
    return {"params": params, "tokens": spec.tokens, "steps": spec.steps, "preset": spec.preset,
            "seconds": sum(packs[s]["seconds"] for s in seeds),
            "cpu_seconds": sum(packs[s].get("cpu_seconds") or 0.0 for s in seeds),
            "per_seed": {str(s): {"seconds": packs[s]["seconds"], "cpu_seconds": packs[s].get("cpu_seconds"),
                                  "status": packs[s]["status"]} for s in seeds}}


# -- the figures: pure functions of the (mixtures x seeds) tables ------------------------------------
def _complete_seeds(values: np.ndarray) -> np.ndarray:
    """Columns (seeds) where every mixture finished."""
    return np.all(np.isfinite(values), axis=0)


def seed_means(values: np.ndarray) -> np.ndarray:
    """Each mixture's mean over the seeds where every mixture finished (so that a seed's common shift
    weighs on all alike); over its own finished seeds when no seed is complete."""
    complete = _complete_seeds(values)
    if complete.any():
        return values[:, complete].mean(axis=1)
    with np.errstate(invalid="ignore"):
        return np.array([np.mean(row[np.isfinite(row)]) if np.isfinite(row).any() else math.nan for row in values])


def summarize(names: list[str], seeds: list[int], table: dict[str, np.ndarray], units: str = "nats",
              confidence: float = CONFIDENCE) -> dict:
    """Every figure of the report from `table`: scale -> (mixtures, seeds) objectives (NaN: a failed
    run). names[0] is the recommended mixture; the baselines are found by name."""
    scales = {}
    for scale, values in table.items():
        values = np.asarray(values, dtype=np.float64)
        means = seed_means(values)
        ranks = ordinal_ranks(means)
        mixtures = [{"name": name, "per_seed": values[i].tolist(), "rank": int(ranks[i]),
                     "seed_mean": float(means[i]), **t_interval(values[i], confidence).as_dict()}
                    for i, name in enumerate(names)]
        differences = []
        for baseline in BASELINES:
            if baseline in names:
                per_seed = values[0] - values[names.index(baseline)]
                differences.append({"name": f"recommended - {baseline}", "baseline": baseline,
                                    "per_seed": per_seed.tolist(), **t_interval(per_seed, confidence).as_dict()})
        noise = paired_noise(values, confidence).as_dict()
        scales[scale] = {"mixtures": mixtures, "differences": differences, "noise": noise,
                         "complete_seeds": [s for s, ok in zip(seeds, _complete_seeds(values)) if ok]}
    result = {"summary": scales,
              "verdicts": [verdict(d["scale"], d, scales[d["scale"]]["noise"], units) for d in _differences(scales)]}
    if "proxy" in table and "large" in table:
        proxy, large = np.asarray(table["proxy"], float), np.asarray(table["large"], float)
        per_seed = {}
        for j, seed in enumerate(seeds):
            both = np.isfinite(proxy[:, j]) & np.isfinite(large[:, j])
            per_seed[str(seed)] = spearman(proxy[both, j], large[both, j])
        pooled = spearman(seed_means(proxy), seed_means(large))
        result["spearman"] = {"per_seed": per_seed, "pooled": pooled,
                              "pooled_is": "Spearman of the seed-mean objectives, proxy against large"}
        result["table"] = [{"name": name, **{f"{s}_{k}": scales[s]["mixtures"][i][k]
                                             for s in ("proxy", "large") for k in ("mean", "low", "high", "rank")}}
                           for i, name in enumerate(names)]
    return result


def _differences(scales: dict) -> list[dict]:
    """The paired differences, large scale first (the one that matters), then by baseline."""
    order = sorted(scales, key=lambda s: (s != "large", s))
    return [{**d, "scale": scale} for scale in order for d in scales[scale]["differences"]]


def verdict(scale: str, difference: dict, noise: dict, units: str = "nats") -> str:
    """One line: does recommended beat the baseline at this scale, from the paired interval."""
    baseline, mean, n = difference["baseline"], difference["mean"], difference["n"]
    where = f"at the {scale} scale"
    if n == 0:
        return f"recommended - {baseline}: no seed where both finished {where}"
    if n < 2:
        return (f"recommended - {baseline} = {mean:+.4f} {units} {where} from one seed: no interval "
                "(train at two or more seeds)")
    low, high = difference["low"], difference["high"]
    ci = f"(recommended - {baseline}: {mean:+.4f} {units}, 95% CI [{low:+.4f}, {high:+.4f}] over {n} seeds)"
    if high < 0:
        text = f"recommended beats {baseline} by {-mean:.4f} {units} {where} {ci}"
    elif low > 0:
        text = f"recommended is worse than {baseline} by {mean:.4f} {units} {where} {ci}"
    else:
        text = f"recommended is not distinguishable from {baseline} {where} {ci}"
    resolution = noise.get("resolution")
    if resolution is not None and math.isfinite(resolution):
        text += f"; these seeds resolve differences of about {resolution:.4f} {units} at this scale"
    return text


# -- the files -----------------------------------------------------------------------------------
def _write_parquet(path: Path, result: dict, packs: dict, table: dict) -> None:
    import polars as pl

    domains, names, mixtures = result["domains"], result["names"], np.array(result["mixtures"])
    scored = domains + result["eval_sets"]
    rows = []
    for scale in SCALES:
        record = result["scales"][scale]
        for j, seed in enumerate(result["seeds"]):
            pack = packs[scale][seed]
            ranks = ordinal_ranks(table[scale][:, j])
            for i, name in enumerate(names):
                row = {"name": name, "scale": scale, "seed": seed, "objective": _none(table[scale][i, j]),
                       "rank": int(ranks[i])}
                row.update({f"loss_{d}": _none(pack["loss"][i][k]) for k, d in enumerate(scored)})
                row.update({f"bpb_{d}": _none(pack["bpb"][i][k]) for k, d in enumerate(scored)})
                row.update({f"w_{d}": float(mixtures[i, k]) for k, d in enumerate(domains)})
                row.update(params=record["params"], tokens=record["tokens"],
                           seconds=pack["seconds"] / len(names), status=pack["status"][i])
                rows.append(row)
    atomic_write_parquet(path, pl.DataFrame(rows, schema_overrides={"objective": pl.Float64}))


def _none(value):
    value = None if value is None else float(value)
    return value if value is not None and math.isfinite(value) else None


def validate_markdown(result: dict) -> str:
    """validate.md: per scale the mixtures' means with intervals and ranks, the paired differences,
    the noise; then the Spearman figures and the verdicts."""
    units, seeds = result["objective"]["units"], result["seeds"]
    seed_columns = " | ".join(f"seed {s}" for s in seeds)
    lines = [f"Objective: {result['objective']['metric']} ({units}), lower is better; seeds {seeds}; "
             f"95% t-intervals over the seeds.", ""]
    for scale in SCALES:
        info, summary = result["scales"][scale], result["summary"][scale]
        lines += [f"### {scale} scale: {info['params'] / 1e6:.2f}M parameters, {info['tokens'] / 1e6:.2f}M tokens "
                  f"per model, {len(seeds)} seed(s), trained in {info['seconds'] / 60:.1f} min", "",
                  f"| mixture | mean | 95% CI | rank | {seed_columns} |",
                  "|---|---:|---:|---:|" + "---:|" * len(seeds)]
        for row in sorted(summary["mixtures"], key=lambda r: r["rank"]):
            lines.append(f"| {row['name']} | {format_number(row['mean'])} | {format_interval(row)} | {row['rank']} | "
                         + " | ".join(format_number(v) for v in row["per_seed"]) + " |")
        lines += ["", f"| paired difference | mean | 95% CI | {seed_columns} |",
                  "|---|---:|---:|" + "---:|" * len(seeds)]
        for row in summary["differences"]:
            lines.append(f"| {row['name']} | {format_number(row['mean'], sign=True)} | "
                         f"{format_interval(row, sign=True)} | "
                         + " | ".join(format_number(v, sign=True) for v in row["per_seed"]) + " |")
        noise = summary["noise"]
        lines += ["", f"Seed noise of a paired difference (pooled over {noise['mixtures']} mixtures, "
                      f"{noise['df']} degrees of freedom): sd {format_number(noise['sd'])} {units}; "
                      f"resolution over {noise['seeds']} seeds: {format_number(noise['resolution'])} {units}.", ""]
    rho = result.get("spearman")
    if rho:
        per_seed = ", ".join(f"seed {s}: {format_number(v, 3)}" for s, v in rho["per_seed"].items())
        pooled = format_number(rho["pooled"], 3)
        lines += [f"Spearman(proxy, large): {per_seed}; pooled ({rho['pooled_is']}): {pooled}.", ""]
    lines += ["Verdicts:"] + [f"- {line}" for line in result["verdicts"]]
    trained = sum(result["scales"][scale]["seconds"] for scale in SCALES)
    lines.append(f"\nTraining took {trained / 60:.1f} min in all; this invocation {result['seconds'] / 60:.1f} min.")
    return "\n".join(lines) + "\n"
