"""Signal per proxy-token: which proxy recipe separates mixtures best from seed noise, at a fixed budget.

    .venv/bin/python benchmarks/proxy_signal.py --corpus data/corpus --out runs/proxy_signal
    .venv/bin/python benchmarks/proxy_signal.py --recipes base,lin0 --mixtures 12 --seeds 0,1   # a quick look

The same M mixtures (the study's first round on the demo's space: the natural mixture, then
MixtureSpace.sample) are trained at S seeds under each recipe, with common random numbers (a seed
sets the initialisation and the data order of every mixture alike). Every recipe trains the same
tokens per proxy unless its name says otherwise ("long": twice the tokens, so a study affords
half the proxies). One training run is read several ways (readouts), each a variant of the table:

    last        the last weights on eval_tokens (16k) per domain: what the demo reads today
    last32k     the last weights on twice the held-out tokens per domain
    tailXX      the mean of the weights after each of the last XX% of the steps
    emaXX       an exponential moving average of the weights, time constant XX% of the steps
    mean3       the mean of the evaluations at 75%, 87.5% and 100% of the steps
    curve       a + b log(step) fitted to the evaluations at 50, 75, 87.5 and 100% of the steps,
                read at the last step

The objective is the demo's: the mean loss (nats/token) over the nine training domains, the hard
case (gains on one domain are paid on another, so mixtures differ little). For each variant:

    noise       sd of a mixture's objective across seeds after removing each seed's common shift
                (two-way residual, (M - 1)(S - 1) degrees of freedom)
    spread      sd across mixtures of the seed-mean objective
    ratio       spread / noise, with a 90% bootstrap interval over mixtures
    bound       the highest correlation any surrogate, even one that knew every mixture's expected
                objective, can reach against one run's observed objective: true / sqrt(true^2 +
                noise^2), with true = sqrt(spread^2 - noise^2 / S) the spread left once the seed
                mean's own noise is taken out (0 when nothing is left). An out-of-fold Spearman of
                a study can only exceed it by chance.
    spearman    out-of-fold Spearman (5 folds) of the surrogate mixopt.fit picks (kind auto), fitted
                per seed on that seed's M runs, against the observed objective; mean over seeds and
                3 fold splittings, +- the sd of those per-seed means
    minutes     CPU minutes of the M x S proxies: training, plus the evaluations the readout needs

Results are cached per pack under --out (a rerun trains only what is missing). The last line is the
one-line summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mixopt.config import load_config  # noqa: E402
from mixopt.data.corpus import Corpus  # noqa: E402
from mixopt.io import atomic_write_json  # noqa: E402
from mixopt.pipeline.context import build_space  # noqa: E402
from mixopt.stats import paired_noise, spearman  # noqa: E402

BASE = dict(preset="cpu-0.5m", tokens=262_144, batch_size=8, seq_len=128, lr=3e-3, eval_tokens=16_384,
            schedule="cosine", final_lr=0.1, warmup=0.1, compile=False, device="cpu")
"""The demo's proxy recipe before this benchmark: cosine to 10% of the peak, last weights, 16k eval tokens."""

RECIPES = {
    "base": {},
    "cos0": {"final_lr": 0.0},
    "lin0": {"schedule": "linear", "final_lr": 0.0},
    "wsd": {"schedule": "wsd", "final_lr": 0.0, "cooldown": 0.2},
    "b16": {"batch_size": 16},
    "b4": {"batch_size": 4},
    "lin0-b16": {"schedule": "linear", "final_lr": 0.0, "batch_size": 16},
    "lin0-b4": {"schedule": "linear", "final_lr": 0.0, "batch_size": 4},
    "lin0-lr6e3": {"schedule": "linear", "final_lr": 0.0, "lr": 6e-3},
    "lin0-lr1.5e3": {"schedule": "linear", "final_lr": 0.0, "lr": 1.5e-3},
    "long": {"tokens_x": 2},
    "lin0-long": {"schedule": "linear", "final_lr": 0.0, "tokens_x": 2},
    "wsd-long": {"schedule": "wsd", "final_lr": 0.0, "cooldown": 0.2, "tokens_x": 2},
}
"""Overrides of BASE (tokens_x: a multiple of the tokens). "demo" is whatever configs/demo.yaml's
proxy section says now."""

AVERAGES = {"tail20": ("tail", 0.2), "tail50": ("tail", 0.5), "ema20": ("ema", 0.2)}
CURVE_FRACTIONS = (0.5, 0.75, 0.875)
LARGE_EVAL = 2                      # last32k: this many times eval_tokens
EVAL_BATCH = 32                     # windows per evaluation batch (the losses do not depend on it)
CV_FOLDS, CV_SPLITS = 5, 3
BOOTSTRAP = 2000


# -- training (in worker processes, one thread each) -------------------------------------------------
def train_pack(job: dict) -> dict:
    """Train one pack of proxies and read it every way: {readout: (P, K) losses}, CPU seconds."""
    import torch

    from workers.data import MixtureSampler, eval_windows
    from workers.presets import load_preset
    from workers.proxies import PackedRun, WeightAverage
    from workers.spec import ProxySpec

    torch.set_num_threads(1)
    spec = ProxySpec(**job["spec"])
    corpus = Corpus.open(job["corpus"], verify="size")
    domains, mixtures, seeds = job["domains"], np.asarray(job["mixtures"]), job["seeds"]
    cfg = load_preset(spec.preset, corpus.vocab_size)
    streams = [corpus.stream(d, "train") for d in domains]
    large = eval_windows(corpus, domains, spec.eval_tokens * (LARGE_EVAL if job["extras"] else 1), spec.seq_len)
    n_small = max(1, spec.eval_tokens // spec.seq_len)
    small = {d: w[:n_small] for d, w in large.items()}
    rest = {d: w[n_small:] for d, w in large.items()}
    samplers = [MixtureSampler(streams, domains, w, s, spec.batch_size, spec.seq_len, spec.steps)
                for w, s in zip(mixtures, seeds)]
    run = PackedRun(cfg, spec, torch.device("cpu"), samplers, list(seeds), [1.0] * len(seeds))
    averages = {name: WeightAverage(dataclasses.replace(spec, average=kind, average_window=window))
                for name, (kind, window) in AVERAGES.items()}
    curve_steps = {max(1, int(round(f * spec.steps))): f for f in CURVE_FRACTIONS} if job["extras"] else {}
    readouts, evals, eval_cpu = {}, {}, []

    def read(held, weights=None):
        started = time.process_time()
        out = run.evaluate(held, averaged=False) if weights is None else _with_weights(run, held, weights)
        eval_cpu.append(time.process_time() - started)
        return np.array([out[d] for d in domains]).T                     # (P, K)

    started = time.process_time()
    train_cpu = 0.0
    for step in range(spec.steps):
        run.step(step)
        for average in averages.values():
            average.update(step, run.model.data)
        if step + 1 in curve_steps:
            train_cpu += time.process_time() - started
            evals[step + 1] = read(small)
            started = time.process_time()
    train_cpu += time.process_time() - started
    unit = len(eval_cpu)
    readouts["last"] = read(small)
    evals[spec.steps] = readouts["last"]
    unit_cpu = eval_cpu[unit]
    if job["extras"]:
        rest_losses = read(rest)
        n_rest = len(next(iter(rest.values())))
        readouts["last32k"] = (readouts["last"] * n_small + rest_losses * n_rest) / (n_small + n_rest)
    for name, average in averages.items():
        readouts[name] = read(small, average.value)
    if evals and len(evals) > 1:
        steps = np.array(sorted(evals))
        stack = np.stack([evals[s] for s in steps])                      # (E, P, K)
        readouts["mean3"] = stack[-3:].mean(axis=0)
        design = np.column_stack([np.ones(len(steps)), np.log(steps)])
        coef = np.linalg.lstsq(design, stack.reshape(len(steps), -1), rcond=None)[0]
        readouts["curve"] = (np.array([1.0, math.log(spec.steps)]) @ coef).reshape(stack.shape[1:])
    alive = run.trainer.alive.view(-1).tolist()
    return {"readouts": {k: v.tolist() for k, v in readouts.items()}, "alive": alive,
            "train_cpu": train_cpu, "eval_unit_cpu": unit_cpu, "proxies": len(seeds)}


def _with_weights(run, held, weights):
    import torch

    data = run.model.data
    last = data.detach().clone()
    with torch.no_grad():
        data.copy_(weights)
    try:
        return run.evaluate(held, averaged=False)
    finally:
        with torch.no_grad():
            data.copy_(last)


EVAL_UNITS = {"last": 1, "last32k": LARGE_EVAL, "mean3": 3, "curve": len(CURVE_FRACTIONS) + 1}
"""Evaluations of eval_tokens per domain that a study using the readout pays per proxy (averages: 1)."""


# -- analysis ------------------------------------------------------------------------------------------
def signal(objective: np.ndarray) -> tuple[float, float]:
    """(noise, spread) of an (M, S) table of objectives (see the module docstring)."""
    noise = paired_noise(objective).sd / math.sqrt(2.0)          # one run's, not a paired difference's
    spread = float(np.std(objective.mean(axis=1), ddof=1))
    return noise, spread


def oracle_bound(noise: float, spread: float, seeds: int) -> float:
    """The correlation ceiling of one run's objective (see the module docstring: bound)."""
    true = math.sqrt(max(spread**2 - noise**2 / seeds, 0.0))
    return true / math.sqrt(true**2 + noise**2)


def bootstrap_ratio(objective: np.ndarray, base: np.ndarray | None, rng: np.random.Generator) -> dict:
    """90% interval of the ratio over mixtures resampled with replacement; with `base`, the share of
    resamples where this ratio beats base's on the same resampled mixtures."""
    M = len(objective)
    ratios, wins = [], []
    for _ in range(BOOTSTRAP):
        rows = rng.integers(0, M, M)
        if len(np.unique(rows)) < 3:
            continue
        noise, spread = signal(objective[rows])
        ratios.append(spread / noise)
        if base is not None:
            b_noise, b_spread = signal(base[rows])
            wins.append(spread / noise > b_spread / b_noise)
    low, high = np.percentile(ratios, [5, 95])
    return {"ratio_low": float(low), "ratio_high": float(high),
            "p_beats_base": float(np.mean(wins)) if wins else None}


def oof_spearman(X: np.ndarray, objective: np.ndarray) -> tuple[float, float, list[float]]:
    """Out-of-fold Spearman of the objective per seed (mean over CV_SPLITS fold splittings): (mean over
    seeds, sd over seeds, per-seed values)."""
    import mixopt
    from mixopt import surrogate as surrogates

    per_seed = []
    for s in range(objective.shape[1]):
        y = objective[:, s]
        kind = mixopt.fit(X, y, seed=s).name
        values = []
        for split in range(CV_SPLITS):
            predicted = surrogates.cross_val_predict(lambda: surrogates.make_surrogate(kind, s), X, y[:, None],
                                                     folds=CV_FOLDS, seed=split)[:, 0]
            values.append(spearman(predicted, y))
        per_seed.append(float(np.mean(values)))
    sd = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else float("nan")
    return float(np.mean(per_seed)), sd, per_seed


# -- driver --------------------------------------------------------------------------------------------
def demo_recipe() -> dict:
    config = load_config(ROOT / "configs" / "demo.yaml")
    return {**{k: v for k, v in config.proxy.items()}, "compile": False, "device": "cpu"}


def recipe(name: str, tokens: int) -> dict:
    """The ProxySpec fields of a recipe, at `tokens` per proxy (times its tokens_x)."""
    if name == "demo":
        return {**demo_recipe(), "tokens": tokens}
    if name not in RECIPES:
        raise SystemExit(f"error: unknown recipe {name!r} (known: demo, {', '.join(RECIPES)})")
    spec = {**BASE, **RECIPES[name]}
    spec["tokens"] = tokens * spec.pop("tokens_x", 1)
    return spec


def study_mixtures(corpus: Corpus, count: int) -> tuple[list[str], np.ndarray]:
    """The first round of the demo study's design with `count` mixtures: natural, then space.sample."""
    config = load_config(ROOT / "configs" / "demo.yaml")
    space = build_space(config, corpus)
    rng = np.random.default_rng([config.study.seed, 0])
    return space.domains, np.vstack([space.natural[None, :], space.sample(count - 1, rng)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--out", default="runs/proxy_signal", help="cache of trained packs (JSON)")
    parser.add_argument("--recipes", default="base,lin0,cos0,wsd,b16,b4,long")
    parser.add_argument("--extras", default="base,lin0",
                        help="recipes also read as last32k, mean3 and curve (4 more evaluations per proxy)")
    parser.add_argument("--eval-tokens", type=int, default=BASE["eval_tokens"], help="held-out tokens per domain")
    parser.add_argument("--mixtures", type=int, default=24)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--tokens", type=int, default=BASE["tokens"], help="training tokens per proxy (all recipes)")
    parser.add_argument("--pack", type=int, default=8, help="proxies per pack")
    parser.add_argument("--workers", type=int, default=2, help="processes (one thread each)")
    parser.add_argument("--train-only", action="store_true", help="train what is missing, print nothing")
    args = parser.parse_args()

    corpus = Corpus.open(args.corpus)
    domains, mixtures = study_mixtures(corpus, args.mixtures)
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = {name: {**recipe(name, args.tokens), "eval_tokens": args.eval_tokens, "eval_batch_size": EVAL_BATCH}
               for name in args.recipes.split(",")}
    extras = set(args.extras.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    jobs = []
    for name, spec in recipes.items():
        rows = [(m, s) for s in seeds for m in range(len(mixtures))]
        for start in range(0, len(rows), args.pack):
            chunk = rows[start : start + args.pack]
            key = json.dumps([spec, [[m, s] for m, s in chunk], name in extras], sort_keys=True)
            path = out / f"{name}-{abs(hash_text(key)):016x}.json"
            jobs.append({"name": name, "path": str(path), "corpus": str(Path(args.corpus).resolve()),
                         "domains": domains, "mixtures": mixtures[[m for m, _ in chunk]].tolist(),
                         "seeds": [s for _, s in chunk], "rows": chunk, "spec": spec, "extras": name in extras})
    todo = [job for job in jobs if not Path(job["path"]).exists()]
    if todo:
        print(f"training {sum(len(j['seeds']) for j in todo)} proxies in {len(todo)} packs "
              f"({len(jobs) - len(todo)} packs cached in {out})", flush=True)
        # spawn, not fork: the parent has polars' thread pool running, which a forked child inherits broken
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for job, result in zip(todo, pool.map(_run_and_save, todo)):
                print(f"  {job['name']}: pack of {result['proxies']} done, {result['train_cpu']:.0f}s train CPU",
                      flush=True)
    if args.train_only:
        return
    report(jobs, recipes, mixtures, seeds, domains)


def hash_text(text: str) -> int:
    import hashlib

    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def _run_and_save(job: dict) -> dict:
    result = train_pack(job)
    result["rows"] = job["rows"]
    atomic_write_json(job["path"], result)
    return result


def report(jobs, recipes, mixtures, seeds, domains) -> None:
    M, S = len(mixtures), len(seeds)
    seed_index = {s: i for i, s in enumerate(seeds)}
    tables, cpu = {}, {}
    for job in jobs:
        result = json.loads(Path(job["path"]).read_text())
        name = job["name"]
        for readout, values in result["readouts"].items():
            table = tables.setdefault((name, readout), np.full((M, S, len(domains)), np.nan))
            for (m, s), row, ok in zip(result["rows"], values, result["alive"]):
                table[m, seed_index[s]] = row if ok else np.nan
        spent = cpu.setdefault(name, {"train": 0.0, "unit": 0.0})
        spent["train"] += result["train_cpu"]
        spent["unit"] += result["eval_unit_cpu"]
    rng = np.random.default_rng(0)
    base_key = ("base", "last") if ("base", "last") in tables else None
    base_objective = tables[base_key].mean(axis=2) if base_key else None
    rows = []
    for (name, readout), table in tables.items():
        objective = table.mean(axis=2)                                   # (M, S): mean over the domains
        if not np.all(np.isfinite(objective)):
            print(f"{name}/{readout}: some proxies diverged; left out")
            continue
        noise, spread = signal(objective)
        boot = bootstrap_ratio(objective, base_objective if (name, readout) != base_key else None, rng)
        rho, rho_sd, _ = oof_spearman(mixtures, objective)
        units = EVAL_UNITS.get(readout, 1)
        minutes = (cpu[name]["train"] + units * cpu[name]["unit"]) / 60
        rows.append({"variant": f"{name}/{readout}", "noise": noise, "spread": spread, "ratio": spread / noise,
                     "bound": oracle_bound(noise, spread, S),
                     **boot, "spearman": rho, "spearman_sd": rho_sd, "minutes": minutes,
                     "objective": float(objective.mean())})
    rows.sort(key=lambda r: -r["ratio"])
    print(f"\n{M} mixtures x {S} seeds ({','.join(map(str, seeds))}), objective: mean loss over the "
          f"{len(domains)} training domains (nats/token; the hard case); minutes: CPU minutes of all "
          f"{M * S} proxies (train + the evaluations the readout needs)")
    header = (f"{'variant':<22} {'noise':>7} {'spread':>7} {'ratio':>6} {'ratio 90%':>13} {'bound':>5} {'P>base':>6} "
              f"{'OOF Spearman':>14} {'minutes':>8} {'mean obj':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        beats = "-" if r["p_beats_base"] is None else f"{r['p_beats_base']:.2f}"
        print(f"{r['variant']:<22} {r['noise']:7.4f} {r['spread']:7.4f} {r['ratio']:6.2f} "
              f"[{r['ratio_low']:5.2f}, {r['ratio_high']:5.2f}] {r['bound']:5.2f} {beats:>6} "
              f"{r['spearman']:6.2f} +- {r['spearman_sd']:4.2f} {r['minutes']:8.1f} {r['objective']:8.4f}")
    best = rows[0]
    base = next((r for r in rows if r["variant"] == "base/last"), None)
    summary = (f"proxy signal: best={best['variant']} ratio={best['ratio']:.2f} spearman={best['spearman']:.2f}"
               f" bound={best['bound']:.2f} max_bound={max(r['bound'] for r in rows):.2f}"
               + (f" baseline_ratio={base['ratio']:.2f} baseline_spearman={base['spearman']:.2f}" if base else "")
               + f" mixtures={M} seeds={S}")
    print(summary)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
