"""Does the recommendation stay honest when the proxies are noisy?

    python benchmarks/trust.py            # 5 families x 4 seeds x 4 noise levels, 20 + 20 flat studies
    python benchmarks/trust.py --quick    # 5 families x 2 seeds x 3 noise levels, 5 + 5 flat studies

A mixture optimizer must never recommend, with confidence, a mixture that is worse than the prior
(the natural mixture). Every study here spends `--budget` proxies through mixopt.optimize with its
defaults and is checked against the noise-free proxy objective:

  * the simulators of benchmarks/simulated.py, with their observation noise multiplied from a few
    hundredths of each loss column's spread (where mixtures are easy to tell apart) up to several
    times it (where the noise drowns the differences between mixtures);
  * flat objectives (K = 9 and K = 30): every domain's loss is a constant plus seed noise (a part
    common to the run and a part per domain), so every claimed gain is a false positive.

Columns, per noise level:
    significant   share of studies that claim a significant gain (and recommend the candidate)
    harmful       studies whose recommendation is truly worse than the prior
    covered       share of studies whose gain interval holds the candidate's true gain over the prior
    gain          mean true gain over the prior (negative: better) of the recommendation, and of the
                  search's candidate, recommended or not
    spread/noise  the spread of the observed objective over the study's runs, over the noise of one run
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simulated import FAMILIES, make_problem  # noqa: E402

import mixopt  # noqa: E402
from mixopt import MixtureSpace  # noqa: E402


def simulated_study(problem, noise: float, budget: int, seed: int) -> dict:
    problem.noise = noise
    result = mixopt.optimize(problem.space, problem.evaluator(seed), budget=budget, objective=problem.objective,
                             seed=seed)
    truth = problem.proxy_objective
    gain = result.gain
    candidate_gain = float(truth(gain.candidate[None, :])[0] - truth(result.prior[None, :])[0])
    noise_of_one_run = noise * float(np.mean(problem.params_proxy["column_spread"]))
    return {
        "significant": gain.significant,
        "covered": gain.low <= candidate_gain <= gain.high,
        "chosen_gain": float(truth(result.weights[None, :])[0] - truth(result.prior[None, :])[0]),
        "candidate_gain": candidate_gain,
        "estimate": gain.estimate,
        "ratio": float(np.nanstd(result.observed)) / noise_of_one_run,
    }


def flat_study(K: int, seed: int, budget: int) -> tuple[bool, float]:
    """(claimed a significant gain, total variation of the recommendation from the prior)."""
    rng = np.random.default_rng([777, K, seed])
    tokens = 10 ** rng.uniform(6.5, 7.5, K)
    space = MixtureSpace([f"d{j}" for j in range(K)], tokens, target_tokens=tokens.sum() * 2, max_epochs=4.0)
    level = 2.6 + 0.3 * rng.standard_normal(K)

    def evaluate(X):
        return level + 0.013 * rng.standard_normal((len(X), 1)) + 0.026 * rng.standard_normal((len(X), K))

    result = mixopt.optimize(space, evaluate, budget=budget, seed=seed)
    return result.gain.significant, float(0.5 * np.abs(result.weights - result.prior).sum())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 3 noise levels, 5 flat studies per K")
    parser.add_argument("--budget", type=int, default=40, help="proxies per study")
    parser.add_argument("--seeds", type=int, default=None, help="simulator seeds per family")
    parser.add_argument("--flat", type=int, default=None, help="flat studies per K (K = 9 and 30)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 4)
    noises = (0.03, 0.3, 1.0) if args.quick else (0.03, 0.3, 1.0, 3.0)
    flat = args.flat if args.flat is not None else (5 if args.quick else 20)
    started = time.time()

    rows = []
    for family in FAMILIES:
        for seed in range(seeds):
            problem = make_problem(family, seed)
            for noise in noises:
                row = {**simulated_study(problem, noise, args.budget, seed), "noise": noise}
                rows.append(row)
                print(f"{family:>8} seed {seed} noise {noise:4.2f} spread/noise {row['ratio']:5.1f} "
                      f"significant {row['significant']!s:5} covered {row['covered']!s:5} "
                      f"recommended {row['chosen_gain']:+.4f} candidate {row['candidate_gain']:+.4f} "
                      f"claimed {row['estimate']:+.4f}  [{time.time() - started:.0f}s]", flush=True)
    flat_rows = [flat_study(K, seed, args.budget) for K in (9, 30) for seed in range(flat)]

    print("\nnoise  studies  spread/noise  significant  harmful  covered  gain, recommended  gain, candidate")
    for noise in noises:
        part = [r for r in rows if r["noise"] == noise]
        print(f"{noise:5.2f}  {len(part):7d}  {np.median([r['ratio'] for r in part]):12.1f}  "
              f"{np.mean([r['significant'] for r in part]):11.2f}  "
              f"{sum(r['chosen_gain'] > 1e-12 for r in part):7d}  {np.mean([r['covered'] for r in part]):7.2f}  "
              f"{np.mean([r['chosen_gain'] for r in part]):+17.4f}  "
              f"{np.mean([r['candidate_gain'] for r in part]):+15.4f}")
    false_positives = sum(claimed for claimed, _ in flat_rows)
    largest_move = max(move for _, move in flat_rows)
    print(f"\nflat objectives (K = 9 and 30, {flat} studies each): {false_positives} claimed a significant gain; "
          f"largest move from the prior {largest_move:.3f} (total variation)")
    print(f"trust: harmful={sum(r['chosen_gain'] > 1e-12 for r in rows)}/{len(rows)} "
          f"covered={np.mean([r['covered'] for r in rows]):.2f} "
          f"significant={np.mean([r['significant'] for r in rows]):.2f} "
          f"flat_false_positives={false_positives}/{len(flat_rows)} flat_max_tv={largest_move:.3f} "
          f"seconds={time.time() - started:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
