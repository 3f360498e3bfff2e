"""Online mixers in a real CPU training run on the default corpus, at a fixed token budget.

    python benchmarks/online_real.py                       # 4 runs of configs/train.yaml's model
    python benchmarks/online_real.py --tokens 524288 --out runs/online_real
    python benchmarks/online_real.py --seeds 0,1,2         # 3 seeds per method (init and batches)
    python benchmarks/online_real.py --methods auto --auto '{"perturb": 1.0}'   # auto's options
    python benchmarks/online_real.py --methods auto,autoJ --jacobian runs/demo/jacobian.json

Trains one model per method -- stratified (uniform), static (the recommendation held), aioli (the
paper's recipe, from uniform), auto (from the recommendation; autoJ: the same given the study's
Jacobian of `mixopt jacobian`, --jacobian) -- with the same initialisation, data
streams and token budget (mixopt.large_run.train_run), then compares the final held-out loss (mean
over domains, nats/token, on final_eval_tokens per domain; with several seeds, per seed and the
mean over seeds). Each run's train_log.parquet and weights.png are in OUT/<method>/ (OUT/<method>/
seed<k>/ with --seeds). Finished runs are reused. The last line is the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt.config import load_train_config  # noqa: E402
from mixopt.data.corpus import Corpus  # noqa: E402
from mixopt.large_run import align_weights, build_mixer, run_space, train_run  # noqa: E402
from mixopt.pipeline.results import Recommendation  # noqa: E402
from mixopt.tools.jacobian import read_jacobian  # noqa: E402

METHODS = ("stratified", "static", "aioli", "auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/train.yaml")
    parser.add_argument("--mixture", default="runs/demo/recommendation.json")
    parser.add_argument("--tokens", type=int, default=None, help="override model.tokens")
    parser.add_argument("--out", default="runs/online_real")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds (settings.seed: initialisation and batches); default the config's")
    parser.add_argument("--jacobian", default=None, help="jacobian.json (mixopt jacobian) for the autoJ method")
    parser.add_argument("--auto", type=json.loads, default={}, metavar="JSON",
                        help="options for auto on top of the config's, e.g. '{\"perturb\": 1.0}'")
    args = parser.parse_args()
    settings = load_train_config(args.config)
    if args.tokens:
        settings = settings.model_copy(update={"model": settings.model.model_copy(update={"tokens": args.tokens})})
    if args.auto:
        options = dict(settings.online.options)
        options["auto"] = {**options.get("auto", {}), **args.auto}
        settings = settings.model_copy(update={"online": settings.online.model_copy(update={"options": options})})
    seeds = [settings.seed] if args.seeds is None else [int(s) for s in args.seeds.split(",")]
    recommendation = Recommendation.from_json(args.mixture, label="mixture")
    domains = settings.domains or recommendation.domains
    prior = align_weights(recommendation.proportions, recommendation.domains, domains)
    space = run_space(settings, domains, Corpus.open(settings.corpus, verify="size").tokens("train"),
                      recommendation.payload)
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS + ("autoJ",)]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {list(METHODS) + ['autoJ']}")
    if "autoJ" in methods and args.jacobian is None:
        parser.error("--methods autoJ needs --jacobian (a `mixopt jacobian` file)")
    jacobian = None if args.jacobian is None else read_jacobian(args.jacobian, domains)
    results: dict[str, list[float]] = {}
    started = time.time()
    print(f"online real: {len(domains)} domains, {settings.steps} steps x "
          f"{settings.model.batch_size * settings.model.seq_len} "
          f"tokens, preset {settings.model.preset}, {settings.threads} threads, seeds {seeds}", flush=True)
    for method in methods:
        for seed in seeds:
            run_settings = settings.model_copy(update={"seed": seed})
            mixer = build_mixer(run_settings, domains, None if method in ("stratified", "aioli") else prior,
                                method="auto" if method == "autoJ" else method, space=space,
                                jacobian=jacobian if method == "autoJ" else None)
            out = Path(args.out) / method if args.seeds is None else Path(args.out) / method / f"seed{seed}"
            r = train_run(run_settings, domains, mixer, out, label=method, log=lambda line: print(line, flush=True))
            results.setdefault(method, []).append(r["mean_loss"])
            top = sorted(r["mean_mixture"].items(), key=lambda kv: -kv[1])[:3]
            print(f"{method:10s} seed {seed}  loss {r['mean_loss']:.4f}  rounds {r['rounds']:4d}  "
                  f"probe steps {r['probe_steps']:5d}  {r['seconds']:6.0f} s  "
                  f"top mean weights {', '.join(f'{d} {w:.2f}' for d, w in top)}", flush=True)
    mean = {m: float(sum(v) / len(v)) for m, v in results.items()}
    if len(seeds) > 1:
        for m, v in results.items():
            print(f"{m:10s} mean {mean[m]:.4f} over seeds {seeds}: {' '.join(f'{x:.4f}' for x in v)}")
    parts = [f"{m}={v:.4f}" for m, v in mean.items()]
    delta = ""
    if "stratified" in mean:
        delta = " " + " ".join(f"{m}_vs_stratified={v - mean['stratified']:+.4f}" for m, v in mean.items()
                               if m != "stratified")
    print(f"online real: tokens={settings.model.tokens} seeds={len(seeds)} {' '.join(parts)}{delta} "
          f"elapsed_s={time.time() - started:.0f}")


if __name__ == "__main__":
    main()
