"""Surrogates on swarms they were not tuned on: many domains, sparse mixtures, few runs.

    python benchmarks/surrogate_swarms.py                  # every kind, K = 24/64/100, 32..512 runs, RegMix
    python benchmarks/surrogate_swarms.py --quick          # auto and the two baselines, fewer budgets
    python benchmarks/surrogate_swarms.py --kinds auto,linear-wlog --K 64 --budgets 128

Testbeds (benchmarks/swarm_sim.py has the simulator):
    simulated swarms   K = 24, 64, 100 domains; "sparse" mixtures (a random support per run, then
                       Dirichlet weights on it: about 70% of the weights exactly zero) and "dense"
                       ones; three loss structures (mean bits-per-byte over 110 tasks, mean loss
                       over held-out evaluation sets, tasks with interference between clusters),
                       each with its own domains, transfer and noise; every surrogate is fitted
                       on the first B runs of a swarm (B = 32 ... 512) and ranks 256 unseen runs
                       drawn by the same sampler
    RegMix public runs the first 128 or all 512 training runs (1M-parameter proxies, Pile-CC loss),
                       ranking the unseen mixtures at 1M, 60M and 1B parameters

For every kind, for `auto`, and for the two plain baselines (RegMix's LightGBM recipe, kind
"regmix-lightgbm"; "ridge-wlog": ridge on [w, log(w + 1e-3)] with its penalty by leave-one-out,
written here independently of mixopt), two scores on the unseen runs:
    Spearman x100      between predicted and observed loss
    top-1 regret       where the unseen run the model ranks first stands among the unseen runs
                       by observed loss, as a percentile (0% = it picked the best; 50% a median run)
Test runs are only ever predicted. The table shows each (testbed, K, mixtures, runs) row averaged
over its structures and seeds; the summary compares `auto` with the better baseline per row.
The last lines time `auto` fitted on 1,000 runs x 100 domains.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # small matrices on a shared machine

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from swarm_sim import MIXTURES, STRUCTURES, make_swarm, swarm_split  # noqa: E402

import mixopt  # noqa: E402
from mixopt.stats import (
    spearman,  # noqa: E402
    top1_regret,  # noqa: E402
)

BASELINES = ("regmix-lightgbm", "ridge-wlog")
ALL_KINDS = ("linear", "linear-wlog", "quadratic", "quadratic-wlog", "mixing-law", "mixing-law-wlog", "gp",
             "lightgbm", "ensemble", "ensemble-lightgbm", "auto") + BASELINES
QUICK_KINDS = ("auto",) + BASELINES
N_TEST = 256
REGMIX_SCALES = ("1m", "60m", "1B")


class RidgeWlog:
    """The plain baseline: ridge on standardised [w, log(w + 1e-3)], the penalty chosen from a grid
    by exact leave-one-out error (closed form for ridge)."""

    GRID = np.logspace(-3, 3, 13)

    def fit(self, X, y):
        F = self._features(X)
        self.mean, self.scale = F.mean(0), np.where(F.std(0) > 1e-12, F.std(0), 1.0)
        G = (F - self.mean) / self.scale
        self.y_mean = y.mean()
        U, s, Vt = np.linalg.svd(G, full_matrices=False)
        Uy = U.T @ (y - self.y_mean)
        best = (np.inf, None)
        for alpha in self.GRID:
            shrink = s**2 / (s**2 + alpha)
            fitted = U @ (shrink * Uy)
            leverage = (U**2) @ shrink + 1.0 / len(y)
            loo = (y - self.y_mean - fitted) / np.maximum(1.0 - leverage, 1e-6)
            score = float(np.mean(loo**2))
            if score < best[0]:
                best = (score, Vt.T @ (s / (s**2 + alpha) * Uy))
        self.coef = best[1]
        return self

    def predict(self, X):
        return self.y_mean + ((self._features(X) - self.mean) / self.scale) @ self.coef

    @staticmethod
    def _features(X):
        return np.hstack([X, np.log(X + 1e-3)])


def fit_predict(kind: str, X, y, X_test, seed: int = 0) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    if kind == "ridge-wlog":
        model = RidgeWlog().fit(X, y)
    else:
        model = mixopt.fit(X, y, seed=seed, kind=kind)
    seconds = time.perf_counter() - started
    return np.asarray(model.predict(X_test), dtype=np.float64), seconds


def score(kind, X, y, X_test, y_test, seed=0) -> dict:
    predicted, seconds = fit_predict(kind, X, y, X_test, seed)
    rho = spearman(predicted, y_test)
    return {"spearman": 100.0 * (0.0 if not np.isfinite(rho) else rho),
            "regret": 100.0 * top1_regret(predicted, y_test),
            "seconds": seconds}


def simulated_cases(Ks, mixtures, budgets, structures, seeds):
    for K in Ks:
        for kind in mixtures:
            for structure in structures:
                for seed in range(seeds):
                    swarm = make_swarm(K, structure, seed)
                    X, y, X_test, y_test = swarm_split(swarm, kind, max(budgets), N_TEST, seed)
                    for budget in budgets:
                        yield ((f"sim K={K} {kind}", budget, f"{structure}/{seed}"),
                               X[:budget], y[:budget], X_test, y_test)


def regmix_cases(budgets):
    import regmix_public

    X_train, y_train, _ = regmix_public.load("train_mixture_1m.csv", "train_pile_loss_1m.csv")
    tests = {scale: regmix_public.load(f"test_mixture_{scale}.csv", f"test_pile_loss_{scale}.csv")[:2]
             for scale in REGMIX_SCALES}
    for budget in budgets:
        for scale in REGMIX_SCALES:
            yield (f"regmix {scale}", budget, "pile-cc"), X_train[:budget], y_train[:budget], *tests[scale]


def fit_seconds(K: int = 100, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(wall, CPU) seconds to fit `auto` on n runs of a sparse swarm over K domains. CPU time
    (this process, all threads) is the figure that a shared machine does not inflate."""
    swarm = make_swarm(K, "tasks", seed)
    X, y, _, _ = swarm_split(swarm, "sparse", n, 1, seed)
    started, cpu = time.perf_counter(), time.process_time()
    mixopt.fit(X, y, seed=seed)
    return time.perf_counter() - started, time.process_time() - cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="auto and the baselines only; budgets 32,128,512")
    parser.add_argument("--kinds", default=None, help=f"comma-separated (default: all of {', '.join(ALL_KINDS)})")
    parser.add_argument("--K", default="24,64,100")
    parser.add_argument("--mixtures", default=",".join(MIXTURES))
    parser.add_argument("--structures", default=",".join(STRUCTURES))
    parser.add_argument("--budgets", default=None, help="comma-separated runs fitted (default 32,64,128,256,512)")
    parser.add_argument("--seeds", type=int, default=1, help="simulator seeds per structure")
    parser.add_argument("--no-regmix", action="store_true")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args(argv)
    kinds = tuple(args.kinds.split(",")) if args.kinds else (QUICK_KINDS if args.quick else ALL_KINDS)
    kinds = kinds + tuple(b for b in BASELINES + ("auto",) if b not in kinds)
    budgets = [int(b) for b in (args.budgets or ("32,128,512" if args.quick else "32,64,128,256,512")).split(",")]
    Ks = [int(k) for k in args.K.split(",")]
    started = time.time()

    results: dict[tuple, dict[str, list[dict]]] = {}
    cases = list(simulated_cases(Ks, args.mixtures.split(","), budgets, args.structures.split(","), args.seeds))
    if not args.no_regmix:
        cases += list(regmix_cases([b for b in (128, 512) if b in budgets] or [128, 512]))
    for (row, budget, case), X, y, X_test, y_test in cases:
        cells = {kind: score(kind, X, y, X_test, y_test) for kind in kinds}
        bucket = results.setdefault((row, budget), {kind: [] for kind in kinds})
        for kind in kinds:
            bucket[kind].append(cells[kind])
        print(f"{row:>18} {budget:>4} {case:<12} " + " ".join(
            f"{kind}={cells[kind]['spearman']:.1f}/{cells[kind]['regret']:.0f}%" for kind in ("auto",) + BASELINES)
            + f"  auto {cells['auto']['seconds']:.1f}s [{time.time() - started:.0f}s]", flush=True)

    print("\nSpearman x100 / top-1 regret % on unseen runs, mean over each row's structures and seeds")
    width = max(12, max(len(k) for k in kinds) + 1)
    header = f"{'testbed':>18} {'runs':>4} " + " ".join(f"{k:>{width}}" for k in kinds) + "   ok"
    print(header)
    print("-" * len(header))
    margins, auto_regrets, ok_rows = [], [], 0
    for (row, budget), by_kind in results.items():
        mean = {k: (np.mean([c["spearman"] for c in v]), np.mean([c["regret"] for c in v])) for k, v in by_kind.items()}
        best_baseline = max(mean[b][0] for b in BASELINES)
        margin = mean["auto"][0] - best_baseline
        regret_bar = max(5.0, min(mean[b][1] for b in BASELINES))
        ok = margin >= 0 and mean["auto"][1] <= regret_bar
        ok_rows += ok
        margins.append(margin)
        auto_regrets.append(mean["auto"][1])
        print(f"{row:>18} {budget:>4} " + " ".join(f"{f'{mean[k][0]:.1f}/{mean[k][1]:.0f}%':>{width}}" for k in kinds)
              + f"   {'yes' if ok else 'NO'}")
    auto_seconds = [c["seconds"] for v in results.values() for c in v["auto"]]
    print(f"\nauto fit seconds per case: median {np.median(auto_seconds):.2f}, max {np.max(auto_seconds):.2f}")
    summary = [f"auto_spearman_min_margin={min(margins):.2f}", f"auto_top1_regret_max={max(auto_regrets):.1f}",
               f"rows_ok={ok_rows}/{len(results)}", f"cases={len(cases)}"]
    if not args.no_timing:
        wall, cpu = fit_seconds()
        threads = os.environ.get("OPENBLAS_NUM_THREADS")
        print(f"auto fitted on 1,000 runs x 100 domains (sparse swarm): {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"(OPENBLAS_NUM_THREADS={threads}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        summary.append(f"fit_1000x100_s={wall:.1f} fit_1000x100_cpu_s={cpu:.1f}")
    print("")
    print(f"swarms: {' '.join(summary)} seconds={time.time() - started:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
