"""`mixopt jacobian`: the study's transfer structure for `auto` (its option `jacobian`).

A static study's proxies show how each domain's loss moves with every domain's share, which one
large run cannot measure (docs/benchmarks.md). This module turns a finished study into the
per-domain Jacobian J[i, j] = d L_j / d p_i at the recommendation
(mixopt.online.jacobian.estimate_jacobian): the fit over the simplex comes from the study's
runs.parquet; the part the simplex cannot give, each domain's rate along the proxies' length,
from `repeats` extra proxies on the recommendation at the study's length and at half of it (the
same seeds at both lengths, so their noise largely cancels). `mixopt train --jacobian FILE`
passes it to `auto`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mixopt.errors import InputError
from mixopt.io import atomic_write_json, json_ready, read_input_json, read_reusable_json

FORMAT = "mixopt-jacobian/1"


def study_runs(study_dir: Path, domains: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(mixtures, per-domain losses) of the study's finished proxies (RunStore.finished)."""
    from mixopt.pipeline.store import RunStore, loss_columns, weight_columns

    path = study_dir / "runs.parquet"
    if not path.exists():
        raise InputError(f"mixture: no runs.parquet next to it in {study_dir} (the study's proxies)")
    finished = RunStore(path, domains).finished().drop_nulls(weight_columns(domains) + loss_columns(domains))
    X = finished.select(weight_columns(domains)).to_numpy().astype(np.float64)
    Y = finished.select(loss_columns(domains)).to_numpy().astype(np.float64)
    keep = X.sum(axis=1) > 0
    return X[keep] / X[keep].sum(axis=1, keepdims=True), Y[keep]


def study_jacobian(mixture_path: str | Path, out: str | Path | None = None, repeats: int = 2,
                   threads: int | None = 2, log: Callable[[str], None] | None = None) -> dict:
    """Estimate the Jacobian of the study behind `mixture_path` (a recommendation.json next to
    its runs.parquet) at its recommendation; write it to `out` (default: jacobian.json beside
    the recommendation) and return what was written."""
    from mixopt.online.jacobian import estimate_jacobian
    from mixopt.pipeline.results import Recommendation, recommendation_path
    from workers.proxies import train_proxies
    from workers.spec import ProxySpec

    log = log or (lambda line: None)
    if not isinstance(repeats, int) or repeats < 1:
        raise InputError(f"repeats must be an integer >= 1, got {repeats!r}")
    mixture_path = recommendation_path(mixture_path)
    recommendation = Recommendation.from_json(mixture_path, label="mixture")
    domains, weights, payload = recommendation.domains, recommendation.proportions, recommendation.payload
    X, Y = study_runs(mixture_path.parent, domains)
    if len(X) < len(domains) + 2:
        raise InputError(f"mixture: the study has {len(X)} finished proxies; a Jacobian over "
                         f"{len(domains)} domains needs at least {len(domains) + 2}")
    recipe, corpus = payload.get("proxy"), (payload.get("corpus") or {}).get("directory")
    if not isinstance(recipe, dict) or not isinstance(corpus, str):
        raise InputError(f"mixture: {mixture_path} has no proxy recipe or corpus (not a study's recommendation)")
    try:
        full = ProxySpec(**recipe)
        half = ProxySpec(**{**recipe, "tokens": recipe["tokens"] // 2})
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"mixture: {mixture_path}: proxy recipe: {exc}") from None
    started = time.time()
    target = Path(out) if out is not None else mixture_path.parent / "jacobian.json"
    key = {"domains": domains, "weights": weights.tolist(), "recipe": recipe, "corpus": corpus, "repeats": repeats}
    losses = _finished_losses(target, key)
    if losses is not None:
        log(f"jacobian: the proxies on the recommendation are in {target} already; refitting the study's runs")
    else:
        seeds = list(range(repeats))
        rows = np.repeat(weights[None, :], repeats, axis=0)
        losses = {}
        for name, spec in (("full", full), ("half", half)):
            log(f"jacobian: {repeats} proxies on the recommendation at {spec.tokens:,} tokens")
            results = train_proxies(corpus, domains, rows, seeds, spec, threads=threads, packed=True)
            if any(r["status"] != "ok" for r in results):
                raise InputError(f"jacobian: a proxy at {spec.tokens:,} tokens diverged; "
                                 "the rate along the length is unknown")
            losses[name] = np.array([[r["loss"][d] for d in domains] for r in results])
    along = (losses["full"].mean(axis=0) - losses["half"].mean(axis=0)) / math.log(full.tokens / half.tokens)
    J = estimate_jacobian(X, Y, weights, along)
    result = {
        "format": FORMAT, "domains": domains, "prior": weights.tolist(), "jacobian": J.tolist(),
        "along": along.tolist(), "proxies": len(X), "repeats": repeats,
        "tokens": {"full": full.tokens, "half": half.tokens},
        "losses": {name: value.tolist() for name, value in losses.items()},
        "key": key, "mixture": str(mixture_path), "seconds": time.time() - started,
    }
    atomic_write_json(target, json_ready(result))
    result["path"] = str(target)
    return result


def _finished_losses(target: Path, key: dict) -> dict | None:
    """The length proxies' losses of an earlier run of the same study, recommendation, recipe and
    repeats (what `target` holds), so that a second call only refits; None if there are none."""
    saved = read_reusable_json(target, key)
    if saved is None or saved.get("format") != FORMAT:
        return None
    try:
        losses = {name: np.asarray(saved["losses"][name], dtype=np.float64) for name in ("full", "half")}
    except (ValueError, TypeError, KeyError):
        return None
    shape = (key["repeats"], len(key["domains"]))
    return losses if all(v.shape == shape and np.all(np.isfinite(v)) for v in losses.values()) else None


def read_jacobian(path: str | Path, domains: Sequence[str]) -> np.ndarray:
    """The (K, K) Jacobian of `mixopt jacobian`'s file, rows and columns in `domains` order."""
    path = Path(path)
    payload = read_input_json(path, "jacobian")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"jacobian: {path} is not a `mixopt jacobian` file (format {FORMAT})")
    names = payload.get("domains")
    try:
        J = np.asarray(payload.get("jacobian"), dtype=np.float64)
    except (TypeError, ValueError):
        J = np.zeros(0)
    if not isinstance(names, list) or J.shape != (len(names), len(names)) or not np.all(np.isfinite(J)):
        raise InputError(f"jacobian: {path}: `jacobian` must be a finite square matrix over `domains`")
    if sorted(names) != sorted(domains):
        raise InputError(f"jacobian: {path} is over domains {names}, the run trains {list(domains)}")
    order = [names.index(d) for d in domains]
    return J[np.ix_(order, order)]
