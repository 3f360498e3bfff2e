"""Online mixers in a real CPU training run on the default corpus, at a fixed token budget.

    python benchmarks/online_real.py                       # 4 runs of configs/train.yaml's model
    python benchmarks/online_real.py --tokens 524288 --out runs/online_real

Trains one model per method -- stratified (uniform), static (the recommendation held), aioli (the
paper's recipe, from uniform), auto (from the recommendation) -- with the same initialisation, data
streams and token budget (mixopt.training.train_run), then compares the final held-out loss (mean
over domains, nats/token, on final_eval_tokens per domain). Each run's train_log.parquet and
weights.png are in OUT/<method>/. Finished runs are reused. The last line is the summary.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixopt.data.corpus import Corpus  # noqa: E402
from mixopt.training import (align_weights, build_mixer, load_train_config, read_mixture, run_space,  # noqa: E402
                             train_run)

METHODS = ("stratified", "static", "aioli", "auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/train.yaml")
    parser.add_argument("--mixture", default="runs/demo/recommendation.json")
    parser.add_argument("--tokens", type=int, default=None, help="override model.tokens")
    parser.add_argument("--out", default="runs/online_real")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    settings = load_train_config(args.config)
    if args.tokens:
        settings = settings.model_copy(update={"model": settings.model.model_copy(update={"tokens": args.tokens})})
    mix_domains, weights, study = read_mixture(args.mixture)
    domains = settings.domains or mix_domains
    prior = align_weights(weights, mix_domains, domains)
    space = run_space(settings, domains, Corpus.open(settings.corpus, verify="size").tokens("train"), study)
    results = {}
    started = time.time()
    print(f"online real: {len(domains)} domains, {settings.steps} steps x {settings.model.batch_size * settings.model.seq_len} "
          f"tokens, preset {settings.model.preset}, {settings.threads} threads", flush=True)
    for method in args.methods.split(","):
        mixer = build_mixer(settings, domains, None if method in ("stratified", "aioli") else prior, method=method,
                            space=space)
        r = train_run(settings, domains, mixer, Path(args.out) / method, label=method,
                      log=lambda line: print(line, flush=True))
        results[method] = r
        top = sorted(r["mean_mixture"].items(), key=lambda kv: -kv[1])[:3]
        print(f"{method:10s} loss {r['mean_loss']:.4f}  rounds {r['rounds']:4d}  probe steps {r['probe_steps']:5d}  "
              f"{r['seconds']:6.0f} s  top mean weights {', '.join(f'{d} {w:.2f}' for d, w in top)}", flush=True)
    base = results.get("stratified")
    parts = [f"{m}={r['mean_loss']:.4f}" for m, r in results.items()]
    delta = ""
    if base is not None:
        delta = " " + " ".join(f"{m}_vs_stratified={r['mean_loss'] - base['mean_loss']:+.4f}"
                               for m, r in results.items() if m != "stratified")
    print(f"online real: tokens={settings.model.tokens} {' '.join(parts)}{delta} elapsed_s={time.time() - started:.0f}")


if __name__ == "__main__":
    main()
