"""`mixopt validate`: does the recommendation win where it matters, at a larger scale?

    result = run_validate(settings, recommendation_path, out_dir)

Trains the same set of static mixtures twice: at the proxy's scale (`proxy:`, the study's recipe)
and at a larger scale (`large:`, by default about 4x the proxy's parameters and 4x its tokens):
the recommended mixture, the natural one (tokens available per domain, from the recommendation),
uniform, and `random` Dirichlet mixtures. Every model of a scale starts from the same
initialisation and sees the same data stream (common random numbers; workers/data.py), and they
are trained as one packed computation (workers/proxies.py). Reports the ranking of the mixtures at
each scale (mean held-out loss over the domains, or the recommendation's objective weights) and
the Spearman correlation between the proxy and the large ranking.

Writes out_dir/validate.json (everything), out_dir/validate.parquet (one row per mixture and scale:
name, scale, w_<d>, loss_<d>, objective, rank, seconds) and out_dir/validate.md (the ranking table).
A finished scale is not trained again when the command is run again with the same out_dir.
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
from mixopt.stats import ordinal_ranks, spearman

SCALES = ("proxy", "large")


def candidate_mixtures(domains: list[str], weights: np.ndarray, payload: dict, k: int, seed: int):
    """(names, (n, K) mixtures): recommended, natural, uniform, random-1..k."""
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
    rng = np.random.default_rng([seed, 0x5A11D])
    for i in range(k):
        names.append(f"random-{i + 1}")
        rows.append(rng.dirichlet(np.ones(K)))
    return names, np.stack(rows)


def _spec(scale: ScaleSettings):
    from workers.spec import ProxySpec

    try:
        return ProxySpec(preset=scale.preset, tokens=scale.tokens, batch_size=scale.batch_size,
                         seq_len=scale.seq_len, lr=scale.lr, warmup=scale.warmup, eval_tokens=scale.eval_tokens,
                         compile=scale.compile, device="cpu")
    except ValueError as exc:
        raise ConfigError(f"validate config: {exc}") from None


def run_validate(settings: ValidateSettings, mixture_path: str | Path, out_dir: str | Path,
                 log: Callable[[str], None] | None = None) -> dict:
    from mixopt.data.corpus import Corpus
    from workers.presets import load_preset
    from workers.proxies import train_proxies

    log = log or (lambda line: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recommendation = Recommendation.from_json(mixture_path, label="mixture")
    domains, weights, payload = recommendation.domains, recommendation.proportions, recommendation.payload
    corpus = Corpus.open(settings.corpus, verify="size")
    missing = [d for d in domains if d not in corpus.domains]
    if missing:
        raise InputError(f"mixture: domains {missing} are not in the corpus at {settings.corpus}")
    names, mixtures = candidate_mixtures(domains, weights, payload, settings.random, settings.seed)
    objective = recommendation.objective_weights
    started = time.time()
    scales = {}
    for scale in SCALES:
        cached = out / f"scale_{scale}.json"
        spec = _spec(getattr(settings, scale))
        key = {"spec": dataclasses.asdict(spec), "names": names, "mixtures": mixtures.tolist(), "domains": domains}
        saved = read_reusable_json(cached, key)
        if saved is not None:
            log(f"{scale}: finished already ({out / cached.name})")
            scales[scale] = saved
            continue
        params = load_preset(spec.preset, corpus.vocab_size).num_params()
        log(f"{scale}: training {len(names)} models of {params / 1e6:.2f}M parameters on {spec.tokens:,} tokens each "
            f"({spec.steps} steps), packed, {settings.threads} threads")
        t0 = time.time()
        results = train_proxies(settings.corpus, domains, mixtures, [settings.seed] * len(names), spec,
                                threads=settings.threads, packed=True)
        seconds = time.time() - t0
        losses = np.array([[r["loss"][d] for d in domains] for r in results])
        scales[scale] = {"key": key, "params": params, "tokens": spec.tokens, "seconds": seconds,
                         "status": [r["status"] for r in results], "losses": losses.tolist()}
        atomic_write_json(cached, json_ready(scales[scale]))
        log(f"{scale}: done in {seconds:.0f} s")
    table = []
    objectives = {}
    for scale in SCALES:
        losses = np.array(scales[scale]["losses"], dtype=np.float64)
        objectives[scale] = losses @ objective
    ranks = {scale: ordinal_ranks(objectives[scale]) for scale in SCALES}
    for i, name in enumerate(names):
        table.append({"name": name, **{f"{s}_loss": float(objectives[s][i]) for s in SCALES},
                      **{f"{s}_rank": int(ranks[s][i]) for s in SCALES}})
    rho = spearman(objectives["proxy"], objectives["large"])
    large_best = names[int(np.nanargmin(objectives["large"]))]
    result = {
        "domains": domains, "names": names, "mixtures": mixtures.tolist(), "objective_weights": objective.tolist(),
        "scales": {s: {k: v for k, v in scales[s].items() if k != "key"} for s in SCALES},
        "table": table, "spearman_proxy_large": rho, "recommended_rank_large": int(ranks["large"][0]),
        "recommended_rank_proxy": int(ranks["proxy"][0]), "best_large": large_best,
        "recommended_wins": large_best == "recommended", "seconds": time.time() - started,
        "settings": settings.model_dump(),
    }
    atomic_write_json(out / "validate.json", json_ready(result))
    _write_parquet(out / "validate.parquet", names, mixtures, domains, scales, objectives, ranks)
    atomic_write_text(out / "validate.md", ranking_markdown(result))
    return result


def _write_parquet(path, names, mixtures, domains, scales, objectives, ranks) -> None:
    import polars as pl

    rows = []
    for scale in SCALES:
        losses = scales[scale]["losses"]
        for i, name in enumerate(names):
            row = {"name": name, "scale": scale, "params": scales[scale]["params"], "tokens": scales[scale]["tokens"]}
            row.update({f"w_{d}": float(mixtures[i, j]) for j, d in enumerate(domains)})
            row.update({f"loss_{d}": _none(losses[i][j]) for j, d in enumerate(domains)})
            row.update(objective=_none(objectives[scale][i]), rank=int(ranks[scale][i]),
                       seconds=scales[scale]["seconds"] / len(names))
            rows.append(row)
    atomic_write_parquet(path, pl.DataFrame(rows))


def _none(value):
    value = None if value is None else float(value)
    return value if value is not None and math.isfinite(value) else None


def ranking_markdown(result: dict) -> str:
    scales = result["scales"]
    lines = [
        f"| mixture | proxy loss ({scales['proxy']['params'] / 1e6:.2f}M params, "
        f"{scales['proxy']['tokens'] / 1e6:.2f}M tok) "
        f"| proxy rank | large loss ({scales['large']['params'] / 1e6:.2f}M params, "
        f"{scales['large']['tokens'] / 1e6:.2f}M tok) "
        f"| large rank |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in sorted(result["table"], key=lambda r: r["large_rank"]):
        lines.append(f"| {row['name']} | {row['proxy_loss']:.4f} | {row['proxy_rank']} | {row['large_loss']:.4f} "
                     f"| {row['large_rank']} |")
    lines.append("")
    lines.append(f"Spearman(proxy, large) = {result['spearman_proxy_large']:.3f}; the recommendation ranks "
                 f"{result['recommended_rank_large']} of {len(result['table'])} at the large scale "
                 f"({result['recommended_rank_proxy']} at the proxy scale); "
                 f"trained in {result['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"
