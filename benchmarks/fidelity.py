"""Multi-fidelity studies on the demo: does study.fidelity rank mixtures as well as the full-length
study, on less proxy compute?

    .venv/bin/python benchmarks/fidelity.py                       # study seeds 1,2,3, both kinds of study
    .venv/bin/python benchmarks/fidelity.py --seeds 1 --short-proxies 16

For each study seed, two studies of configs/demo.yaml, its proxies at 262k tokens, run through
`mixopt recommend` (cached under --out: a study directory with its recommendation.json is not run
again):

    full      40 full-length proxies in 2 rounds
    fidelity  study.fidelity on: --short-proxies short runs on --short-tokens of the tokens first,
              then --proxies full-length runs, the first round of them promoted from the short runs

Each study's surrogate is refitted from its runs.parquet by the current code (the stored rounds told
to a fresh Study, so a change of the asking code does not invalidate the cache) and scored on
held-out full-length proxies: benchmarks/proxy_signal.py's "base" packs (the demo's recipe, 24
mixtures x seeds 0 and 1, trained with common random numbers), without the mixtures a study ran
itself (seed 0's study shares its first round with them, so the seeds start at 1). Columns:

    compute     proxy training in full-length runs (short runs at their share of the tokens; the
                seed-noise repeats aside), and the CPU seconds the runs took
    oof         the out-of-fold Spearman of the objective that recommendation.json records, and
                the refitted surrogate's (its folds differ: runs.parquet holds a round's runs in
                the order they finished, so on 14 to 40 runs the two differ by up to 0.3)
    heldout     Spearman of the predicted objective against the held-out mixtures' seed mean
    domains     the mean over the nine domains of the same Spearman per domain's loss (where the
                mixture has signal: a domain's loss falls with its share)

The objective is the demo's (the mean loss over the nine training domains). The last line is the
one-line summary (means over the seeds).

    .venv/bin/python benchmarks/fidelity.py --simulated          # benchmarks/simulated.py's problems

The same comparison where the truth is known: the simulators of benchmarks/simulated.py (5 families
x --problems seeds). A short run measures the family's law one half-step further from the large
run than the proxy is (every parameter moved by half the proxy -> large shift, the other way), with
twice the proxy's observation noise, so short runs rank mixtures differently from full-length ones.
Three studies per problem, `mixopt.Study` defaults otherwise: full (40 full-length runs), fidelity
(32 short on a quarter of the tokens + 14 full: 22 runs of compute) and full at that compute (22
full-length runs). Scored by the normalized regret of the recommendation at the large scale (0: the
optimum, 1: natural) and the Spearman of the surrogate's objective against the noise-free proxy
objective on 500 unseen mixtures.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mixopt.config import load_config  # noqa: E402
from mixopt.data.corpus import Corpus  # noqa: E402
from mixopt.pipeline.context import (  # noqa: E402
    NOISE_ROUND,  # noqa: E402
    build_space,
    make_study,
)
from mixopt.pipeline.stages import recommend_stages  # noqa: E402
from mixopt.stats import spearman  # noqa: E402

HELD_OUT_TOKENS = 262_144     # proxy_signal's base recipe: the proxies every study here trains


def held_out(pack_dir: Path, domains: list[str], recipe: str = "base") -> tuple[np.ndarray, np.ndarray]:
    """(M, K) mixtures and (M, K) seed-mean per-domain losses of proxy_signal's packs of `recipe`."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from proxy_signal import study_mixtures

    _, mixtures = study_mixtures(Corpus.open(ROOT / "data" / "corpus"), 24)
    sums, counts = np.zeros((len(mixtures), len(domains))), np.zeros(len(mixtures))
    for path in sorted(glob.glob(str(pack_dir / f"{recipe}-*.json"))):
        pack = json.loads(Path(path).read_text())
        for (m, _seed), losses, alive in zip(pack["rows"], pack["readouts"]["last"], pack["alive"]):
            if alive and m < len(mixtures):
                sums[m] += losses
                counts[m] += 1
    if not counts.all():
        raise SystemExit(f"error: {pack_dir} lacks {recipe} packs for every mixture: run "
                         f"benchmarks/proxy_signal.py --recipes {recipe} first")
    return mixtures, sums / counts[:, None]


def study_config(kind: str, seed: int, args, out: Path) -> Path:
    """configs/demo.yaml at `seed`, its proxies at 262k tokens (the held-out packs' length), 40 of
    them in the full study."""
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    config["study"].update(seed=seed, proxies=40)
    config["proxy"]["tokens"] = HELD_OUT_TOKENS
    if kind == "fidelity":
        config["study"]["proxies"] = args.proxies
        config["study"]["fidelity"] = {"short_proxies": args.short_proxies, "short_tokens": args.short_tokens}
    path = out / f"{kind}-s{seed}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def refit(config, directory: Path):
    """The study's surrogate refitted by the current code: its stored rounds told to a fresh Study."""
    import polars as pl

    corpus = Corpus.open(config.data.corpus)
    space = build_space(config, corpus)
    study = make_study(config, space, corpus.eval_sets)
    runs = pl.read_parquet(directory / "runs.parquet").filter(
        (pl.col("round") != NOISE_ROUND) & (pl.col("seed") == config.study.seed))
    runs = runs.unique("run_id", keep="last", maintain_order=True)
    for round_index in sorted(set(runs["round"].to_list())):
        rows = runs.filter(pl.col("round") == round_index)
        X = rows.select([f"w_{d}" for d in space.domains]).to_numpy()
        Y = rows.select([f"loss_{d}" for d in space.domains]).to_numpy().astype(np.float64)
        Y[(rows["status"] != "ok").to_numpy()] = np.nan
        study.tell(X, Y)
    return study.recommend(), runs


def score(result, mixtures: np.ndarray, losses: np.ndarray, ran: np.ndarray) -> dict:
    new = np.array([np.abs(ran - m).sum(axis=1).min() > 1e-6 for m in mixtures])
    X, Y = mixtures[new], losses[new]
    predicted = result.predict_objective(X)
    per_domain = []
    for column in range(Y.shape[1]):
        weights = np.zeros(Y.shape[1])
        weights[column] = 1.0
        per_domain.append(spearman(result.surrogate.objective(weights)(X), Y[:, column]))
    return {"heldout": spearman(predicted, Y @ result.objective), "domains": float(np.mean(per_domain)),
            "heldout_mixtures": int(new.sum())}


# -- simulators ---------------------------------------------------------------------------------------
SHORT_STEP = 0.5          # a short run sits this share of the proxy -> large shift below the proxy
SHORT_NOISE = 2.0         # its observation noise, in multiples of the proxy's


def short_params(proxy: dict, large: dict, step: float = SHORT_STEP) -> dict:
    """The law a short run measures: every float parameter moved from the proxy's away from the large
    run's by `step` times their difference; one non-negative at both scales stays non-negative."""
    moved = {}
    for key, value in proxy.items():
        other = large.get(key)
        if (isinstance(value, np.ndarray) and isinstance(other, np.ndarray) and value.shape == other.shape
                and value.dtype.kind == "f"):
            shifted = value + step * (value - other)
            moved[key] = np.clip(shifted, 0.0, None) if (value >= 0).all() and (other >= 0).all() else shifted
        else:
            moved[key] = value
    return moved


def simulated_study(problem, budget: int, seed: int, fidelity=None):
    from simulated import FAMILIES, _losses

    from mixopt.study import Study

    params = short_params(problem.params_proxy, problem.params_large)
    scale = problem.params_proxy["column_spread"]
    rng = np.random.default_rng([54321, FAMILIES.index(problem.family), problem.seed, seed])
    full = problem.evaluator(seed)

    def short(X):
        L = _losses(problem.family, params, X)
        L = L + SHORT_NOISE * problem.noise * scale * rng.standard_normal(L.shape)
        return L + SHORT_NOISE * problem.noise * scale.mean() * rng.standard_normal((len(X), 1))

    study = Study(problem.space, budget=budget, objective=problem.objective, seed=seed, fidelity=fidelity)
    while not study.done:
        evaluate = full if study.round_fraction >= 1 else short
        X = study.ask()
        study.tell(X, evaluate(X))
    return study.recommend()


def simulated(args) -> None:
    import time

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from simulated import FAMILIES, make_problem

    from mixopt.study import Fidelity

    fidelity = Fidelity(args.short_proxies, args.short_tokens)
    compute = args.proxies + args.short_proxies * args.short_tokens
    variants = {"full": (40, None), "fidelity": (args.proxies, fidelity), "full-same-compute": (round(compute), None)}
    started = time.time()
    rows = []
    for family in FAMILIES:
        for seed in range(args.problems):
            problem = make_problem(family, seed)
            unseen = problem.space.sample(500, np.random.default_rng([99, seed]))
            truth = problem.proxy_objective(unseen)
            for name, (budget, fid) in variants.items():
                result = simulated_study(problem, budget, seed, fid)
                rows.append({"family": family, "seed": seed, "variant": name, "regret": problem.regret(result.weights),
                             "spearman": spearman(result.predict_objective(unseen), truth)})
    print("| study | proxy compute (full runs) | regret mean (median) | unseen Spearman mean (min) |")
    print("|---|---:|---|---|")
    summary = {}
    for name, (budget, fid) in variants.items():
        mine = [r for r in rows if r["variant"] == name]
        regret = np.array([r["regret"] for r in mine])
        rho = np.array([r["spearman"] for r in mine])
        spent = budget + (0 if fid is None else fid.runs * fid.fraction)
        summary[name] = (float(regret.mean()), float(rho.mean()))
        print(f"| {name} | {spent:g} | {regret.mean():.3f} ({np.median(regret):.3f}) "
              f"| {rho.mean():.3f} ({rho.min():.3f}) |")
    print("fidelity simulated: " + " ".join(f"{n}_regret={r:.3f} {n}_spearman={s:.3f}" for n, (r, s) in summary.items())
          + f" compute_ratio={compute / 40:.2f} problems={len(FAMILIES) * args.problems}"
          f" seconds={time.time() - started:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/fidelity", help="study directories (cached)")
    parser.add_argument("--packs", default="runs/proxy_signal", help="proxy_signal.py's cache: the held-out runs")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--kinds", default="full,fidelity")
    parser.add_argument("--proxies", type=int, default=14, help="full-length proxies of the fidelity study")
    parser.add_argument("--short-proxies", type=int, default=32)
    parser.add_argument("--short-tokens", type=float, default=0.25)
    parser.add_argument("--simulated", action="store_true", help="the simulators instead of the demo")
    parser.add_argument("--problems", type=int, default=4, help="--simulated: seeds per family")
    args = parser.parse_args()
    if args.simulated:
        simulated(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for kind in args.kinds.split(","):
            config = load_config(study_config(kind, seed, args, out))
            directory = out / f"{kind}-s{seed}"
            if not (directory / "recommendation.json").exists():
                print(f"running the {kind} study at seed {seed} into {directory}", flush=True)
                recommend_stages(config, directory)
            payload = json.loads((directory / "recommendation.json").read_text())
            result, runs = refit(config, directory)
            domains = result.natural.shape[0]
            mixtures, losses = held_out(Path(args.packs), payload["domains"][:domains])
            ran = runs.select([f"w_{d}" for d in payload["domains"]]).to_numpy()
            fidelity = payload.get("fidelity") or {}
            row = {"kind": kind, "seed": seed,
                   "compute": fidelity.get("compute_in_full_runs", payload["n_runs"]),
                   "cpu_s": float(runs["seconds"].sum()),
                   "oof": (payload["surrogate"].get("cv") or {}).get("spearman"),
                   "oof_refit": spearman(result.cv_predicted, result.cv_observed),
                   **score(result, mixtures, losses, ran)}
            rows.append(row)
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    print("| study | seed | compute (full runs) | proxy CPU s | OOF Spearman (recorded / refit) "
          "| held-out Spearman | per-domain held-out |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        recorded = "-" if r["oof"] is None else f"{r['oof']:.2f}"
        print(f"| {r['kind']} | {r['seed']} | {r['compute']:.1f} | {r['cpu_s']:.0f} "
              f"| {recorded} / {r['oof_refit']:.2f} | {r['heldout']:.2f} | {r['domains']:.2f} |")
    summary = {}
    for kind in args.kinds.split(","):
        mine = [r for r in rows if r["kind"] == kind]
        summary[kind] = {key: float(np.mean([r[key] for r in mine])) for key in
                         ("compute", "cpu_s", "oof", "oof_refit", "heldout", "domains")}
    line = " ".join(f"{kind}_{key}={value:.2f}" for kind, values in summary.items() for key, value in values.items()
                    if key in ("heldout", "domains", "oof", "oof_refit"))
    if "full" in summary and "fidelity" in summary:
        line += (f" compute_ratio={summary['fidelity']['compute'] / summary['full']['compute']:.2f}"
                 f" cpu_ratio={summary['fidelity']['cpu_s'] / summary['full']['cpu_s']:.2f}")
    print(f"fidelity: {line}")


if __name__ == "__main__":
    main()
