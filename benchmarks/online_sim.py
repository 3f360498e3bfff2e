"""Online mixers on dynamic simulators: stratified, best static in hindsight, aioli, auto.

    python benchmarks/online_sim.py            # 18 cases (6 families x K = 3, 8, 20), 3 runs each
    python benchmarks/online_sim.py --quick    # 6 cases, 2 runs each
    python benchmarks/online_sim.py --draws 10 # 10 draws of the suite (seeds 0..9): 180 cases
    python benchmarks/online_sim.py --spikes 0.03  # 3% of the evaluations read 0.3 too high
    python benchmarks/online_sim.py --noise-scale 0.5  # half the suite's evaluation noise (0: none)
    python benchmarks/online_sim.py --oracle   # + auto's control law steered by the true gradient
    python benchmarks/online_sim.py --jacobian-noise 0.3  # auto+J with a noisy proxy Jacobian
    python benchmarks/online_sim.py --jacobian-study 512  # auto+J's Jacobian from 512 noisy proxies
    python benchmarks/online_sim.py --sizes 40:40000:0.01 --draws 3 --seed 100  # other K, steps, noise
    python benchmarks/online_sim.py --transfer dense --draws 3  # every family with dense transfer
    python benchmarks/online_sim.py --proxy-blend 0.5  # auto+proxy from half proxy, half uniform

Every case is a random dynamic loss model from mixopt.online.simulate (per-domain losses falling
with cumulative, diminishing-returns exposure through a transfer matrix; repetition penalties,
negative transfer, forgetting, weighted objectives; noisy evaluations). Losses reported are the
final noise-free objective; each method's is the mean over `--reps` runs (fresh mixer seed and
eval-noise stream per run). gap closed = (L_strat - L_method) / (L_strat - L_best_static).
Extra columns: doremi (reference = a stratified run's losses), the static recommendation of a
10x shorter proxy run (`proxy`), auto started from that recommendation (`auto+proxy`;
`--proxy-blend w`: from (1 - w) uniform + w times it, a hedge against a proxy whose optimum is not
the large run's), and auto started from uniform with that proxy's per-domain Jacobian at uniform
(`auto+J`: option `jacobian`, the transfer structure a proxy study's smooth surrogate gives; exact, or estimated
from N simulated proxies with `--jacobian-study N`, or with `--jacobian-noise s` each entry off by
s times its column's mean absolute value, at random).
`--oracle` adds `auto`'s control law fed the simulator's true gradient instead of its estimate
(OracleAuto): how much of auto's shortfall is estimation.
The mixers (and the proxy's static search) get the repetition caps a user who knows each domain's
size would give them (max_weights = 4 epochs' worth, simulate.repetition_caps; only the repetition
family has small domains); `--no-caps` runs them without. Stratified and the best static mixture in
hindsight are never capped.
The last lines: the cost of one ask + tell at K = 100 (median over rounds of a full run, in
microseconds), then the one-line summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt import online  # noqa: E402
from mixopt.online import simulate as S  # noqa: E402
from mixopt.online.auto import AutoMixer  # noqa: E402
from mixopt.online.base import project  # noqa: E402


class OracleAuto(AutoMixer):
    """`auto`'s control law (and its rate scale) steered by the simulator's true gradient instead
    of the estimated gains: the gap closed with perfect knowledge of what one more step of each
    domain is worth now."""

    def __init__(self, sim: S.Simulator, *args, **kwargs):
        self.sim = sim
        super().__init__(*args, **kwargs)

    def _gains(self, rate):
        return S.true_gains(self.sim)


def mean_run(method: str, sim: S.Simulator, reps: int, **options) -> float:
    """Mean final objective of `reps` runs of an online method ("oracle": OracleAuto)."""
    values = []
    for rep in range(reps):
        if method == "oracle":
            mixer = OracleAuto(sim, sim.K, sim.steps, seed=rep, objective=sim.weights, **options)
        else:
            mixer = online.create(method, domains=sim.K, steps=sim.steps, seed=rep, objective=sim.weights, **options)
        values.append(S.run(mixer, sim, seed=1000 + rep).objective)
    return float(np.mean(values))


def reference_trajectory(sim: S.Simulator, rounds: int = 100):
    """A stratified run's noise-free losses every steps // rounds steps: DoReMi's reference model."""
    sim.reset(0)
    n = max(1, sim.steps // rounds)
    uniform = np.full(sim.K, 1.0 / sim.K)
    at, losses = [0], [sim.losses()]
    while sim.t < sim.steps:
        sim.train(uniform, min(n, sim.steps - sim.t))
        at.append(sim.t)
        losses.append(sim.losses())
    return np.array(losses), np.array(at, dtype=float)


def proxy_recommendation(sim: S.Simulator, caps=None) -> np.ndarray:
    """The best static mixture of a run 10x shorter (within `caps`): what a proxy study would recommend."""
    proxy = S.Simulator(S.proxy_model(sim.model))
    return S.best_static(proxy, upper=caps)[0]


def blended_prior(recommendation: np.ndarray, weight: float, caps=None) -> np.ndarray:
    """(1 - weight) * uniform + weight * recommendation, within `caps`: where auto+proxy starts."""
    K = len(recommendation)
    return project((1.0 - weight) / K + weight * recommendation, None, caps)


def noisy_proxy_jacobian(sim: S.Simulator, noise: float = 0.0, seed: int = 0, study: int = 0) -> np.ndarray:
    """The per-domain Jacobian of a 10x shorter run's final losses at uniform (what a proxy study
    would tell auto): exact, or estimated from `study` noisy proxies (simulate.study_jacobian);
    each entry then off by `noise` times its column's mean absolute entry at random."""
    uniform = np.full(sim.K, 1.0 / sim.K)
    jacobian = S.study_jacobian(sim, uniform, runs=study, seed=seed) if study else S.proxy_jacobian(sim, uniform)
    if noise > 0:
        rng = np.random.default_rng(seed)
        jacobian = jacobian + noise * np.abs(jacobian).mean(axis=0)[None, :] * rng.standard_normal(jacobian.shape)
    return jacobian


def ask_tell_us(method: str, K: int = 100, steps: int = 400_000, runs: int = 3, **options) -> float:
    """Median wall time of one ask() + next_steps + tell() at K domains, in microseconds."""
    times = []
    for run in range(runs):
        mixer = online.create(method, domains=K, steps=steps, seed=run, **options)
        rng = np.random.default_rng(run)
        losses = np.full(K, 3.0)
        while not mixer.done:
            start = time.perf_counter()
            p = mixer.ask()
            n = mixer.next_steps
            losses = losses - 1e-4 * p * n / K + 1e-3 * rng.standard_normal(K)
            mixer.tell(losses)
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def parse_sizes(text: str) -> list[tuple[int, int, float]]:
    """"K:STEPS:NOISE,..." -> [(K, steps, noise), ...] (argparse type: errors exit with status 2)."""
    sizes = []
    for item in text.split(","):
        parts = item.split(":")
        try:
            K, steps, noise = int(parts[0]), int(parts[1]), float(parts[2])
        except (ValueError, IndexError):
            raise argparse.ArgumentTypeError(f"expected K:STEPS:NOISE, got {item!r}") from None
        if len(parts) != 3 or K < 2 or steps < 100 or not noise >= 0:
            raise argparse.ArgumentTypeError(f"need K >= 2, STEPS >= 100 and NOISE >= 0, got {item!r}")
        sizes.append((K, steps, noise))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one case per family, 2 runs each")
    parser.add_argument("--reps", type=int, default=None, help="runs per method and case")
    parser.add_argument("--seed", type=int, default=0, help="seed of the (first) draw of the suite")
    parser.add_argument("--spikes", type=float, default=0.0,
                        help="chance per evaluation of a loss spike (+0.3 on every domain): robustness")
    parser.add_argument("--noise-scale", type=float, default=1.0,
                        help="multiply every case's evaluation noise by this (0: noise-free evaluations)")
    parser.add_argument("--oracle", action="store_true",
                        help="add auto's control law steered by the true gradient (column oracle_gc)")
    parser.add_argument("--auto", type=json.loads, default={}, metavar="JSON",
                        help='options for auto, e.g. \'{"outlier": 0}\' (settings sweeps)')
    parser.add_argument("--jacobian-noise", type=float, default=0.0,
                        help="auto+J's proxy Jacobian: add this many times each column's mean absolute "
                             "entry, times a standard normal, to each entry")
    parser.add_argument("--jacobian-study", type=int, default=0, metavar="N",
                        help="auto+J's Jacobian estimated from N simulated proxies with the case's eval noise "
                             "(simulate.study_jacobian) instead of exact (0)")
    parser.add_argument("--jacobian-weight", type=float, default=1.0,
                        help="auto+J's jacobian_weight (1: the Jacobian's transfer as it is; 0: own-data model)")
    parser.add_argument("--sizes", type=parse_sizes, default=None, metavar="K:STEPS:NOISE[,...]",
                        help="run the six families at these sizes instead of the suite's "
                             "3:5000:0.003,8:10000:0.01,20:20000:0.02 (settings outside the suite)")
    parser.add_argument("--transfer", choices=S.TRANSFER_KINDS, default=None,
                        help="give every family this kind of cross-domain transfer instead of its own "
                             "(dense: every domain teaches every other)")
    parser.add_argument("--proxy-blend", type=float, default=1.0, metavar="W",
                        help="auto+proxy starts from (1 - W) uniform + W times the proxy's recommendation "
                             "(1: the recommendation itself)")
    parser.add_argument("--no-caps", action="store_true",
                        help="give the mixers no repetition caps (max_weights) from the domains' sizes")
    parser.add_argument("--draws", type=int, default=1,
                        help="draws of the suite (seeds seed, seed+1, ...): the same families and sizes, "
                             "new random models -- a stand-in for simulators not tuned on")
    args = parser.parse_args()
    if args.noise_scale < 0:
        parser.error(f"--noise-scale must be >= 0, got {args.noise_scale:g}")
    if args.jacobian_noise < 0:
        parser.error(f"--jacobian-noise must be >= 0, got {args.jacobian_noise:g}")
    if args.jacobian_study < 0:
        parser.error(f"--jacobian-study must be >= 0 (0: exact), got {args.jacobian_study}")
    if not 0 <= args.jacobian_weight <= 1:
        parser.error(f"--jacobian-weight must be in [0, 1], got {args.jacobian_weight:g}")
    if not 0 <= args.proxy_blend <= 1:
        parser.error(f"--proxy-blend must be in [0, 1], got {args.proxy_blend:g}")
    reps = args.reps or (2 if args.quick else 3)
    started = time.time()
    cases = [case for draw in range(args.draws)
             for case in S.suite(quick=args.quick, seed=args.seed + draw, settings=args.sizes,
                                 transfer=args.transfer)]
    header = (f"{'case':40s} {'L_strat':>8s} {'L_best':>8s} {'aioli':>8s} {'auto':>8s} {'aioli_gc':>8s} "
              f"{'auto_gc':>8s} {'doremi':>8s} {'proxy':>8s} {'auto+px':>8s} {'auto+J':>8s} {'autoJ_gc':>8s}"
              + (f" {'oracle_gc':>9s}" if args.oracle else ""))
    print(f"online sim: {len(cases)} cases, {reps} runs per method; losses = final objective (lower is better); "
          f"mixers {'without' if args.no_caps else 'with'} repetition caps"
          + (f"; loss spikes in {args.spikes:.0%} of the evaluations" if args.spikes > 0 else "")
          + (f"; evaluation noise x{args.noise_scale:g}" if args.noise_scale != 1.0 else "")
          + (f"; every family with {args.transfer} transfer" if args.transfer else "")
          + (f"; auto+proxy from {args.proxy_blend:g} x the proxy's recommendation + "
             f"{1 - args.proxy_blend:g} x uniform" if args.proxy_blend != 1.0 else ""))
    print(header)
    rows = []
    for case in cases:
        sim = case.simulator()
        if args.noise_scale != 1.0:
            sim = S.Simulator(S.with_noise_scale(sim.model, args.noise_scale))
        if args.spikes > 0:
            sim = S.Simulator(S.with_spikes(sim.model, args.spikes))
        strat = mean_run("stratified", sim, 1)
        best = S.best_static_cached(case)[1]
        bounds = {} if args.no_caps else {"max_weights": S.repetition_caps(sim.model)}
        aioli = mean_run("aioli", sim, reps, **bounds)
        auto = mean_run("auto", sim, reps, **bounds, **args.auto)
        ref, at = reference_trajectory(sim)
        doremi = mean_run("doremi", sim, reps, reference_losses=ref, reference_steps=at, **bounds)
        proxy_p = proxy_recommendation(sim, bounds.get("max_weights"))
        proxy = S.static_objective(sim, proxy_p)
        start = blended_prior(proxy_p, args.proxy_blend, bounds.get("max_weights"))
        auto_proxy = mean_run("auto", sim, reps, prior=start, **bounds, **args.auto)
        jacobian = noisy_proxy_jacobian(sim, args.jacobian_noise, seed=len(rows), study=args.jacobian_study)
        auto_j = mean_run("auto", sim, reps, jacobian=jacobian, jacobian_weight=args.jacobian_weight,
                          **bounds, **args.auto)
        gap = strat - best
        row = dict(case=case.name, strat=strat, best=best, aioli=aioli, auto=auto,
                   aioli_gc=(strat - aioli) / gap, auto_gc=(strat - auto) / gap, doremi=doremi,
                   proxy=proxy, auto_proxy=auto_proxy, auto_j=auto_j, auto_j_gc=(strat - auto_j) / gap)
        if args.oracle:
            row["oracle_gc"] = (strat - mean_run("oracle", sim, reps, **bounds, **args.auto)) / gap
        rows.append(row)
        print(f"{case.name:40s} {strat:8.4f} {best:8.4f} {aioli:8.4f} {auto:8.4f} {row['aioli_gc']:+8.2f} "
              f"{row['auto_gc']:+8.2f} {doremi:8.4f} {proxy:8.4f} {auto_proxy:8.4f} {auto_j:8.4f} "
              f"{row['auto_j_gc']:+8.2f}"
              + (f" {row['oracle_gc']:+9.2f}" if args.oracle else ""), flush=True)
    us_auto = ask_tell_us("auto")
    us_aioli = ask_tell_us("aioli", steps=200_000, runs=1)
    rng = np.random.default_rng(0)
    transfer = rng.uniform(0.0, 0.5, size=(100, 100)) * (rng.random((100, 100)) < 0.3)   # sparse, as in the sims
    us_auto_j = ask_tell_us("auto", jacobian=-(np.eye(100) + transfer))
    print(f"ask+tell at K=100 (median over a run's rounds): auto {us_auto:.0f} us, auto with a jacobian "
          f"{us_auto_j:.0f} us, aioli {us_aioli:.0f} us")
    n = len(rows)
    aioli_wins = sum(r["aioli"] < r["strat"] for r in rows)
    auto_wins = sum(r["auto"] < r["strat"] for r in rows)
    closed = np.array([r["auto_gc"] for r in rows])
    gaps = np.array([r["strat"] - r["best"] for r in rows])
    closed_proxy = np.array([r["strat"] - r["proxy"] for r in rows]) / gaps
    closed_auto_proxy = np.array([r["strat"] - r["auto_proxy"] for r in rows]) / gaps
    print(f"auto+proxy beats the proxy's static recommendation on "
          f"{sum(r['auto_proxy'] < r['proxy'] for r in rows)}/{n}; gap closed (min / mean / below 30% / at or "
          f"below stratified): proxy {closed_proxy.min():.2f} / {closed_proxy.mean():.2f} / "
          f"{int((closed_proxy < 0.3).sum())} / {int((closed_proxy <= 0).sum())}, auto+proxy "
          f"{closed_auto_proxy.min():.2f} / {closed_auto_proxy.mean():.2f} / {int((closed_auto_proxy < 0.3).sum())} / "
          f"{int((closed_auto_proxy <= 0).sum())}; elapsed {time.time() - started:.0f} s")
    oracle = ""
    if args.oracle:
        ideal = np.array([r["oracle_gc"] for r in rows])
        oracle = (f" oracle_gap_closed_min={ideal.min():.2f} oracle_gap_closed_mean={ideal.mean():.2f} "
                  f"oracle_below_30pct={int((ideal < 0.3).sum())}/{n}")
    closed_j = np.array([r["auto_j_gc"] for r in rows])
    print(f"online sim: cases={n} aioli_beats_stratified={aioli_wins}/{n} auto_beats_stratified={auto_wins}/{n} "
          f"auto_gap_closed_min={closed.min():.2f} auto_gap_closed_mean={closed.mean():.2f} "
          f"auto_below_30pct={int((closed < 0.3).sum())}/{n} ask_tell_us_100={us_auto:.0f} "
          f"autoJ_beats_stratified={sum(r['auto_j'] < r['strat'] for r in rows)}/{n} "
          f"autoJ_gap_closed_min={closed_j.min():.2f} autoJ_gap_closed_mean={closed_j.mean():.2f} "
          f"autoJ_below_30pct={int((closed_j < 0.3).sum())}/{n}" + oracle)


if __name__ == "__main__":
    main()
