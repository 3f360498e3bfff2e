"""Simulated mixture studies with known optima: normalized regret against the budget.

    python benchmarks/simulated.py            # 5 families x 6 seeds, budgets 32, 64, 128 (about 10 min on 2 cores)
    python benchmarks/simulated.py --quick    # 5 families x 2 seeds, budgets 32 and 128

For every simulated problem and budget, four ways to choose a mixture for the large run:
    natural   the token-proportional mixture (inside the bounds and caps)
    uniform   equal weights (inside the bounds and caps)
    regmix    RegMix's recipe as published: proxies from its Dirichlet sampler around the token
              prior, LightGBM with its settings on the objective, the average of the top 128 of
              100,000 Dirichlet(prior) mixtures, no repetition caps at search time
    mixopt    mixopt.optimize(space, evaluate, budget, objective, seed) with its defaults

and the normalized regret (f(chosen) - f*) / (f(natural) - f*) of the large run's objective f
(0: the optimum, 1: no better than natural). The summary's regret_ratio_B is mixopt's mean regret
over RegMix's at budget B.

Simulated mixture problems with known optima, for benchmarks/simulated.py.

Each problem has K training domains (token counts spread over several orders of magnitude, a few
tiny), one validation loss per domain, an objective over those losses, and two loss functions:

    proxy(X)  what a small proxy run would measure: the family's law at proxy scale, plus
              observation noise (per loss column, and a shift common to the run: a seed effect);
    large(X)  the noise-free objective of the large run: the same family at large scale (its
              parameters moved: a proxy -> large shift that moves the optimum), evaluated at the
              *effective* mixture after repetition (a domain read for e epochs is worth
              D(e) = 1 + R(1 - exp(-(e - 1)/R)) fresh epochs, R = 15, Muennighoff et al. 2023; past
              4 epochs repeats add nothing), plus a penalty that grows with the weight read past 4
              epochs (memorisation), so no optimum lies beyond the caps.

Proxies see no repetition (they read few tokens); only the large run pays for it. The
MixtureSpace given to optimisers carries the repetition caps (max_epochs=4), as the real world would.

Families (all with cross-domain transfer inside clusters and interference between them):
    "dml"      Data Mixing Laws: L_i = c_i + k_i exp(sum_j t_ij w_j + pairwise w_j w_l terms)
    "power"    power law in effective data: L_i = c_i + B_i (eps_i + sum_j S_ij w_j)^-a_i + N_i . w
    "logquad"  logarithmic returns with quadratic interference: L_i = c_i - b_i log(eps_i + S_i . w) + w'Q_i w
    "bimix"    BiMix-like power law with multiplicative interactions:
               L_i = c_i + A_i (eps_i + S_i . w)^-a_i exp(M_i . w)
    "hill"     saturating (Hill) returns: L_i = c_i + k_i / (1 + (S_i . w / h_i)^g_i) + N_i . w
The first three were used while developing mixopt's defaults; "bimix" and "hill" were written
afterwards and held out, as a check that the defaults generalise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # small matrices on a shared 2-core machine

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import mixopt  # noqa: E402
from mixopt import MixtureSpace  # noqa: E402

FAMILIES = ("dml", "power", "logquad", "bimix", "hill")
DEVELOPMENT_FAMILIES = FAMILIES[:3]
MAX_EPOCHS = 4.0
REPEAT_HALF_LIFE = 15.0     # R in D(e): returns of repeated data decay on this scale (epochs)


@dataclass
class Problem:
    family: str
    seed: int
    space: MixtureSpace
    objective: np.ndarray              # (E,) weights over loss columns
    noise: float                       # observation noise, as a fraction of each column's spread
    params_proxy: dict
    params_large: dict
    penalty: float                     # large-run loss per unit weight read far past 4 epochs (memorisation)
    f_star: float = float("nan")
    w_star: np.ndarray | None = None

    @property
    def K(self) -> int:
        return self.space.K

    def proxy_losses(self, X: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Proxy losses (n, E); noisy when given a random stream for the noise."""
        X = np.atleast_2d(X)
        L = _losses(self.family, self.params_proxy, X)
        if rng is not None:
            scale = self.params_proxy["column_spread"]
            L = L + self.noise * scale * rng.standard_normal(L.shape)
            L = L + self.noise * scale.mean() * rng.standard_normal((len(X), 1))
        return L

    def evaluator(self, seed: int = 0):
        """What an optimiser may call: (n, K) -> noisy proxy losses (n, E), with its own noise
        stream (every method run gets the same stream for the same seed)."""
        rng = np.random.default_rng([12345, FAMILIES.index(self.family), self.seed, seed])
        return lambda X: self.proxy_losses(X, rng)

    def large(self, X: np.ndarray) -> np.ndarray:
        """The large run's noise-free objective (n,), repetition included."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        X = np.clip(X, 0.0, None)
        X = X / X.sum(axis=1, keepdims=True)
        share = self.space.tokens / self.space.target_tokens          # weight that reads one epoch
        epochs = X / share
        counted = np.minimum(epochs, MAX_EPOCHS)          # past the cap, repeats teach nothing new
        fresh = np.where(counted <= 1.0, counted,
                         1.0 + REPEAT_HALF_LIFE * (1.0 - np.exp(-(counted - 1.0) / REPEAT_HALF_LIFE)))
        effective = share * fresh
        over = np.clip(epochs / MAX_EPOCHS - 1.0, 0.0, None)
        L = _losses(self.family, self.params_large, effective) @ self.objective
        return L + self.penalty * np.sum(X * np.tanh(2.0 * over), axis=1)

    def proxy_objective(self, X: np.ndarray) -> np.ndarray:
        return self.proxy_losses(X) @ self.objective

    def regret(self, weights: np.ndarray) -> float:
        f_nat = float(self.large(self.space.natural)[0])
        return float((self.large(weights)[0] - self.f_star) / (f_nat - self.f_star))


# -- the families --------------------------------------------------------------------------------
def _losses(family: str, p: dict, W: np.ndarray) -> np.ndarray:
    if family == "dml":
        exponent = W @ p["T"].T
        for (j, k), q in zip(p["pairs"], p["Q"].T):
            exponent = exponent + np.outer(W[:, j] * W[:, k], q)
        return p["c"] + p["k"] * np.exp(exponent)
    if family == "power":
        data = p["eps"] + W @ p["S"].T
        return p["c"] + p["B"] * data ** (-p["alpha"]) + W @ p["N"].T
    if family == "logquad":
        data = p["eps"] + W @ p["S"].T
        quad = np.einsum("nj,ijl,nl->ni", W, p["Q"], W)
        return p["c"] - p["b"] * np.log(data) + quad
    if family == "bimix":
        data = p["eps"] + W @ p["S"].T
        return p["c"] + p["A"] * data ** (-p["alpha"]) * np.exp(W @ p["M"].T)
    if family == "hill":
        data = W @ p["S"].T
        return p["c"] + p["k"] / (1.0 + (data / p["h"]) ** p["gamma"]) + W @ p["N"].T
    raise ValueError(family)


def _clusters(K: int, rng: np.random.Generator) -> np.ndarray:
    n_clusters = max(2, int(round(K / rng.uniform(2.0, 4.0))))
    return rng.integers(0, n_clusters, size=K)


def _transfer(K: int, cluster: np.ndarray, rng: np.random.Generator, within=(0.1, 0.6), across=0.05) -> np.ndarray:
    same = cluster[:, None] == cluster[None, :]
    S = np.where(same, rng.uniform(*within, size=(K, K)), rng.uniform(0.0, across, size=(K, K)))
    np.fill_diagonal(S, 1.0)
    return S


def _family_params(family: str, K: int, rng: np.random.Generator) -> tuple[dict, dict]:
    cluster = _clusters(K, rng)
    same = cluster[:, None] == cluster[None, :]
    c = rng.uniform(2.0, 3.5, size=K)
    if family == "dml":
        self_t = rng.uniform(1.5, 5.0, size=K)
        T = np.where(same, -rng.uniform(0.1, 0.6, size=(K, K)) * self_t[:, None], rng.normal(0.0, 0.3, size=(K, K)))
        np.fill_diagonal(T, -self_t)
        n_pairs = int(rng.integers(1, K))
        pairs = [tuple(rng.choice(K, size=2, replace=False)) for _ in range(n_pairs)]
        Q = rng.normal(0.0, 2.0, size=(K, n_pairs)) * (rng.random((K, n_pairs)) < 0.5)
        proxy = dict(c=c, k=rng.uniform(0.5, 2.0, size=K), T=T, pairs=pairs, Q=Q)
        scale = rng.uniform(0.7, 1.0, size=K)[:, None]
        large = dict(c=c - rng.uniform(0.8, 1.2, size=K), k=proxy["k"] * rng.uniform(0.5, 0.9, size=K),
                     T=T * scale * np.exp(rng.normal(0.0, 0.1, size=(K, K))), pairs=pairs,
                     Q=Q * rng.uniform(0.7, 1.0))
        return proxy, large
    if family == "power":
        S = _transfer(K, cluster, rng)
        alpha = rng.uniform(0.15, 0.6, size=K)
        eps = 10 ** rng.uniform(-3.0, -1.5, size=K)
        B = rng.uniform(0.3, 1.0, size=K) * (0.1 ** alpha)
        N = rng.normal(0.0, 0.1, size=(K, K)) * ~same
        proxy = dict(c=c, B=B, alpha=alpha, eps=eps, S=S, N=N)
        large = dict(c=c - 1.0, B=B * rng.uniform(0.5, 0.9, size=K), alpha=alpha * rng.uniform(0.85, 1.1, size=K),
                     eps=eps * rng.uniform(0.5, 1.0, size=K),
                     S=np.clip(S * np.exp(rng.normal(0, 0.1, size=(K, K))), 0, 1),
                     N=N * rng.uniform(0.7, 1.0))
        np.fill_diagonal(large["S"], 1.0)
        return proxy, large
    if family == "logquad":
        S = _transfer(K, cluster, rng, within=(0.05, 0.4))
        b = rng.uniform(0.05, 0.25, size=K)
        eps = 10 ** rng.uniform(-2.5, -1.0, size=K)
        A = rng.normal(0.0, 0.3, size=(K, K, K))
        Q = 0.5 * (A + A.transpose(0, 2, 1))
        proxy = dict(c=c, b=b, eps=eps, S=S, Q=Q)
        large = dict(c=c - 1.0, b=b * rng.uniform(0.8, 1.1, size=K), eps=eps * rng.uniform(0.5, 1.0, size=K),
                     S=np.clip(S * np.exp(rng.normal(0, 0.1, size=(K, K))), 0, 1), Q=Q * rng.uniform(0.7, 1.0))
        np.fill_diagonal(large["S"], 1.0)
        return proxy, large
    if family == "bimix":
        S = _transfer(K, cluster, rng, within=(0.05, 0.5))
        alpha = rng.uniform(0.1, 0.5, size=K)
        eps = 10 ** rng.uniform(-3.0, -1.5, size=K)
        A = rng.uniform(0.2, 0.8, size=K) * (0.1 ** alpha)
        M = rng.normal(0.0, 0.4, size=(K, K))
        proxy = dict(c=c, A=A, alpha=alpha, eps=eps, S=S, M=M)
        large = dict(c=c - 1.0, A=A * rng.uniform(0.5, 0.9, size=K), alpha=alpha * rng.uniform(0.85, 1.1, size=K),
                     eps=eps * rng.uniform(0.5, 1.0, size=K),
                     S=np.clip(S * np.exp(rng.normal(0, 0.1, size=(K, K))), 0, 1),
                     M=M * rng.uniform(0.7, 1.0))
        np.fill_diagonal(large["S"], 1.0)
        return proxy, large
    if family == "hill":
        S = _transfer(K, cluster, rng, within=(0.05, 0.5))
        k = rng.uniform(0.5, 2.0, size=K)
        h = 10 ** rng.uniform(-2.0, -0.7, size=K)
        gamma = rng.uniform(0.5, 2.0, size=K)
        N = rng.normal(0.0, 0.15, size=(K, K)) * ~same
        proxy = dict(c=c, k=k, h=h, gamma=gamma, S=S, N=N)
        large = dict(c=c - 1.0, k=k * rng.uniform(0.5, 0.9, size=K), h=h * rng.uniform(0.6, 1.0, size=K),
                     gamma=gamma * rng.uniform(0.85, 1.15, size=K),
                     S=np.clip(S * np.exp(rng.normal(0, 0.1, size=(K, K))), 0, 1), N=N * rng.uniform(0.7, 1.0))
        np.fill_diagonal(large["S"], 1.0)
        return proxy, large
    raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")


def make_problem(family: str, seed: int, K: int | None = None) -> Problem:
    rng = np.random.default_rng([FAMILIES.index(family), seed])
    K = int(K if K is not None else rng.integers(5, 21))
    shares = 10 ** rng.uniform(-3.5, 0.0, size=K)
    shares[rng.choice(K, size=max(1, K // 6), replace=False)] = 10 ** rng.uniform(-4.5, -3.5)   # tiny domains
    total = 1e11
    tokens = shares / shares.sum() * total
    target = total * rng.uniform(0.5, 3.0)
    space = MixtureSpace([f"d{j}" for j in range(K)], tokens, target_tokens=target, max_epochs=MAX_EPOCHS)
    objective = np.full(K, 1.0 / K) if rng.random() < 0.5 else rng.dirichlet(np.full(K, 2.0))
    proxy, large = _family_params(family, K, rng)
    reference = space.sample(2000, rng)
    proxy["column_spread"] = _losses(family, proxy, reference).std(axis=0)
    spread = float((_losses(family, large, reference) @ objective).std())
    problem = Problem(family=family, seed=seed, space=space, objective=objective,
                      noise=float(rng.uniform(0.01, 0.05)), params_proxy=proxy, params_large=large,
                      penalty=spread)
    problem.f_star, problem.w_star = _global_minimum(problem, rng)
    return problem


def _global_minimum(problem: Problem, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """The large run's optimum. Past the caps weight is wasted and penalised, so the optimum over the
    whole simplex lies in the feasible set: local optimisation there, from the best of many draws
    (draws on the plain simplex are scored too, to confirm nothing beyond the caps does better)."""
    space, K = problem.space, problem.K
    pool = np.vstack([space.sample(20_000, rng), space.natural[None], space.uniform[None],
                      space.project(rng.dirichlet(np.ones(K), 5_000))])
    values = problem.large(pool)
    starts = pool[np.argsort(values)[:12]]
    best_value, best_w = float(values.min()), pool[np.argmin(values)]
    bounds = list(zip(space.lower, space.upper))
    constraint = {"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}
    for start in starts:
        result = minimize(lambda w: float(problem.large(w)[0]), start, method="SLSQP", bounds=bounds,
                          constraints=[constraint], options={"maxiter": 500, "ftol": 1e-13})
        w = space.project(result.x)[0]
        value = float(problem.large(w)[0])
        if value < best_value:
            best_value, best_w = value, w
    outside = rng.dirichlet(np.full(K, 0.5), 20_000)
    best_value = min(best_value, float(problem.large(outside).min()))
    return best_value, best_w


# -- RegMix's recipe, as published (sail-sg/regmix) ----------------------------------------------
REGMIX_LGBM = {"objective": "regression", "boosting_type": "gbdt", "learning_rate": 1e-2, "seed": 42,
               "verbosity": -1, "deterministic": True, "force_row_wise": True, "num_threads": 1}
REGMIX_ROUNDS = 1000


def regmix_proxy_mixtures(prior: np.ndarray, n: int, rng: np.random.Generator,
                          temperature: float = 0.5, min_strength: float = 0.1, max_strength: float = 5.0,
                          max_usage: float = 15.0, minimum: float = 2e-4, multiplier: int = 100) -> np.ndarray:
    """mixture_config/synthesize_mixture.py: Dirichlet(prior^T * strength) with a strength drawn from
    15 log-spaced values, rejection above min(prior * 15, 1), weights under 2e-4 zeroed, rounding to
    2e-4, de-duplication, then n drawn at random. (Where rejection leaves fewer than n, the rest are
    drawn without the bound: the original would fail.)"""
    bound = np.minimum(prior * max_usage, 1.0)
    tempered = prior**temperature
    tempered /= tempered.sum()
    strengths = np.logspace(np.log10(min_strength), np.log10(max_strength), 15)
    draws = n * multiplier
    alpha = tempered[None, :] * rng.choice(strengths, size=draws)[:, None]
    samples = rng.gamma(np.maximum(alpha, 1e-12))
    samples /= np.maximum(samples.sum(axis=1, keepdims=True), 1e-300)
    samples = samples[np.isfinite(samples).all(axis=1) & (samples.sum(axis=1) > 0)]
    accepted = samples[np.all(samples <= bound, axis=1)]
    if len(accepted) < n:
        accepted = np.vstack([accepted, samples[: n - len(accepted)]])
    accepted = np.where(accepted < minimum, 0.0, accepted)
    accepted /= accepted.sum(axis=1, keepdims=True)
    accepted = np.round(accepted / minimum) * minimum
    accepted = np.unique(accepted, axis=0)
    chosen = accepted[rng.choice(len(accepted), size=min(n, len(accepted)), replace=False)]
    return chosen / chosen.sum(axis=1, keepdims=True)


def regmix_recipe(problem: Problem, budget: int, seed: int = 0, candidates: int = 100_000, top_k: int = 128):
    """Proxies from RegMix's sampler around the token prior, LightGBM with RegMix's settings on the
    objective, then the average of the top_k of `candidates` Dirichlet(prior) mixtures
    (regression.ipynb). No caps at search time: the result may read a domain past max_epochs."""
    import lightgbm as lgb

    rng = np.random.default_rng([7, seed])
    prior = problem.space.tokens / problem.space.tokens.sum()
    X = regmix_proxy_mixtures(prior, budget, rng)
    y = problem.evaluator(seed)(X) @ problem.objective
    params = dict(REGMIX_LGBM)
    model = lgb.train(params, lgb.Dataset(X, label=y, params={"verbosity": -1}), num_boost_round=REGMIX_ROUNDS)
    samples = rng.dirichlet(np.maximum(prior, 1e-12), candidates)
    samples = samples[np.isfinite(samples).all(axis=1)]
    scores = model.predict(samples, num_threads=1)
    top = samples[np.argsort(scores, kind="stable")[:top_k]]
    return top.mean(axis=0)


# -- the benchmark -------------------------------------------------------------------------------
METHODS = ("natural", "uniform", "regmix", "mixopt")


def choose(method: str, problem: Problem, budget: int, seed: int) -> np.ndarray:
    space = problem.space
    if method == "natural":
        return space.natural
    if method == "uniform":
        return space.uniform
    if method == "regmix":
        return regmix_recipe(problem, budget, seed)
    if method == "mixopt":
        result = mixopt.optimize(space, problem.evaluator(seed), budget=budget, objective=problem.objective, seed=seed)
        if not space.contains(result.weights).all():
            raise AssertionError("mixopt recommended an infeasible mixture")
        return result.weights
    raise ValueError(method)


def table(rows: list[dict], budgets, methods) -> list[str]:
    lines = ["", "mean normalized regret (median) by budget; over_cap = share of choices past a repetition cap",
             f"{'budget':>6} " + " ".join(f"{m:>18}" for m in methods) + f" {'regmix over_cap':>16}"]
    for budget in budgets:
        cells = []
        for method in methods:
            values = np.array([r["regret"] for r in rows if r["budget"] == budget and r["method"] == method])
            cells.append(f"{values.mean():8.3f} ({np.median(values):6.3f})" if len(values) else f"{'-':>18}")
        over = [r["over_cap"] for r in rows if r["budget"] == budget and r["method"] == "regmix"]
        lines.append(f"{budget:>6} " + " ".join(f"{c:>18}" for c in cells)
                     + f" {np.mean(over) if over else float('nan'):16.2f}")
    return lines


def family_table(rows: list[dict], budgets, families) -> list[str]:
    lines = ["", "mean normalized regret by family: mixopt / regmix"]
    lines.append(f"{'family':>8} " + " ".join(f"{'B=' + str(b):>15}" for b in budgets))
    for family in families:
        cells = []
        for budget in budgets:
            ours = [r["regret"] for r in rows
                    if r["family"] == family and r["budget"] == budget and r["method"] == "mixopt"]
            theirs = [r["regret"] for r in rows
                      if r["family"] == family and r["budget"] == budget and r["method"] == "regmix"]
            cells.append(f"{np.mean(ours):.3f} / {np.mean(theirs):.3f}" if ours and theirs else "-")
        lines.append(f"{family:>8} " + " ".join(f"{c:>15}" for c in cells))
    return lines


def scoring_seconds(candidates: int = 1_000_000, repeats: int = 3) -> tuple[float, str]:
    """Seconds for the default surrogate to score `candidates` feasible mixtures (the objective the
    search minimises), best of `repeats`: the largest simulated problem (K = 20 domains, 20 loss
    columns), the default surrogate fitted on 128 proxy runs, candidates drawn beforehand."""
    problem = make_problem("dml", 0, K=20)
    rng = np.random.default_rng(0)
    X = problem.space.sample(128, rng)
    model = mixopt.fit(X, problem.evaluator(0)(X), seed=0)
    pool = problem.space.sample(candidates, rng)
    score = model.objective(problem.objective)
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, candidates, 250_000):
            score(pool[start:start + 250_000])
        best = min(best, time.perf_counter() - started)
    members = ", ".join(m for m, w in zip(getattr(model, "members", ()),
                                          getattr(model, "weights_", np.ones((1, 1))).sum(axis=1)) if w > 0)
    return best, f"K=20, 20 loss columns, {type(model).__name__} ({members})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds per family, budgets 32 and 128")
    parser.add_argument("--seeds", type=int, default=None, help="problems per family (default 6; 2 with --quick)")
    parser.add_argument("--budgets", type=str, default=None, help="comma-separated budgets (default 32,64,128)")
    parser.add_argument("--families", type=str, default=",".join(FAMILIES))
    parser.add_argument("--methods", type=str, default=",".join(METHODS))
    parser.add_argument("--no-timing", action="store_true", help="skip the scoring-time line")
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 6)
    budgets = [int(b) for b in (args.budgets or ("32,128" if args.quick else "32,64,128")).split(",")]
    families = args.families.split(",")
    methods = args.methods.split(",")
    rows: list[dict] = []
    started = time.time()
    for family in families:
        for seed in range(seeds):
            problem = make_problem(family, seed)
            line = [f"{family:>8} seed {seed} K={problem.K:2d}"]
            for budget in budgets:
                for method in methods:
                    if method in ("natural", "uniform") and budget != budgets[0]:
                        weights = choose(method, problem, budget, seed)
                    else:
                        weights = choose(method, problem, budget, seed)
                    regret = problem.regret(weights)
                    over = bool(np.any(weights > problem.space.upper + 1e-6))
                    rows.append(dict(family=family, seed=seed, budget=budget, method=method, regret=regret,
                                     over_cap=over))
                    if method in ("regmix", "mixopt"):
                        line.append(f"{method}@{budget}={regret:.3f}")
            print(" ".join(line) + f"  [{time.time() - started:.0f}s]", flush=True)
    for text in table(rows, budgets, methods) + family_table(rows, budgets, families):
        print(text)

    def mean(method, budget):
        return float(np.mean([r["regret"] for r in rows if r["method"] == method and r["budget"] == budget]))

    summary = []
    for budget in sorted(budgets, reverse=True):
        if "regmix" in methods and "mixopt" in methods:
            summary.append(f"regret_ratio_{budget}={mean('mixopt', budget) / mean('regmix', budget):.3f}")
    for budget in sorted(budgets, reverse=True):
        for method in ("mixopt", "regmix"):
            if method in methods:
                summary.append(f"{method}_{budget}={mean(method, budget):.3f}")
    if not args.no_timing:
        seconds, what = scoring_seconds()
        print(f"\nscoring 1,000,000 candidates: {seconds:.2f} s ({what}; OPENBLAS_NUM_THREADS=1)")
        summary.append(f"score_1M_s={seconds:.2f}")
    print("")
    print(f"simulated: {' '.join(summary)} problems={len(families) * seeds} seconds={time.time() - started:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
