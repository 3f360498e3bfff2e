"""Training throughput of the proxy pool against a naive one-model-at-a-time loop.

    python benchmarks/proxy_throughput.py --device cpu
    python benchmarks/proxy_throughput.py --device cuda --vocab 50000

Two ways to train proxies of the same preset, batch, sequence length and precision (fp32 on CPU,
bf16 autocast on CUDA), on the same data:

- naive: a plain eager PyTorch loop that trains one model at a time (workers.proxies with
  packed=False: an nn.Module GPT, torch.optim.AdamW, clip_grad_norm_) in this process, with
  torch's default thread count (every core).
- pool: what `mixopt recommend` runs: Ray tasks from workers.remote.submit_pack, each holding
  `--cpus-per-task` CPUs (torch's thread count follows) and on CUDA a `--gpus-per-task` share of
  the GPU, each training `--proxies-per-task` proxies as one packed computation, `--tasks` of them
  at once. Defaults: the study defaults of mixopt.config.StudyConfig (4 proxies per task, 1 CPU,
  a quarter GPU), and as many tasks as fit the machine at once (2 on this 2-core CPU). torch.compile
  as recommend would use it for a real proxy run (ProxySpec.compile=None compiles runs of 200
  steps or more; the default recipe has 586): --compile auto; on/off to force.

Rates are training tokens per second in the steady state, timed inside the training loops (the
first steps, Ray start-up, worker start-up and evaluation are left out of both). The pool's rate is
the tokens of every task divided by the wall-clock span from the first task's steady start to the
last task's end, so tasks that do not overlap count against it. Naive and pool measurements
alternate, `--repeats` times; the medians are reported (shared machines are noisy), with the CPU
the rest of the machine used meanwhile.

MFU = aggregate tokens/s x training FLOPs per token (6 N + 12 L d T, ModelConfig.flops_per_token)
/ peak. On CPU the peak is measured here: the best of several 2048 x 2048 fp32 matmuls with every
core (what MKL reaches; it is below the vendor's FMA peak). On CUDA it is the H100's dense bf16
peak, 989 TFLOP/s.

The last line is the summary:
    proxy throughput: device=cpu preset=<name> packed=<tokens/s> naive=<tokens/s> ratio_vs_naive=<x> mfu=<percent>
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

H100_BF16_DENSE_FLOPS = 989e12


def log(message: str) -> None:
    print(message, flush=True)


def build_corpus(directory: Path) -> Path:
    """The committed fixture corpus (tests/fixtures/corpus, 7 domains of real text), prepared into
    `directory`: what the benchmark trains on when no --corpus is given."""
    from mixopt.data.prepare import prepare_corpus

    return prepare_corpus(directory, source="fixture").corpus.directory


def study_defaults() -> dict:
    """How `mixopt recommend` packs proxies by default (the study section of its config)."""
    defaults = {"proxies_per_task": 4, "cpus_per_task": 1.0, "gpus_per_task": 0.25}
    try:
        from mixopt.config import StudyConfig

        for name in defaults:
            defaults[name] = StudyConfig.model_fields[name].default
    except (ImportError, AttributeError, KeyError):
        pass
    return defaults


def cpu_peak_flops(seconds: float = 2.0) -> float:
    """Best fp32 matmul rate of this machine with torch's default threads (2048^3 products)."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * 2048**3 / (time.perf_counter() - start))
    return best


class MachineLoad:
    """Busy CPU seconds of the whole machine (Linux /proc/stat), to report others' load."""

    def __init__(self):
        self.start = self._busy()
        self.wall = time.time()

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
            user, nice, system = (int(x) for x in fields[:3])
            return (user + nice + system) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def cores(self) -> float | None:
        end = self._busy()
        if end is None or self.start is None:
            return None
        return (end - self.start) / max(time.time() - self.wall, 1e-9)


def run_naive(corpus, domains, mixture, spec) -> dict:
    from workers.proxies import train_proxies

    load = MachineLoad()
    result = train_proxies(str(corpus), domains, mixture[None, :], [0], spec, threads=None, packed=False)[0]
    timing = result["timing"]
    busy = load.cores()
    ours = timing["steady_cpu_seconds"] / timing["steady_seconds"]
    return {"rate": timing["tokens_per_second"], "ours": ours, "busy": busy, "status": result["status"]}


def run_pool(corpus, domains, mixtures, spec, args) -> dict:
    import ray

    from workers.remote import submit_pack

    load = MachineLoad()
    per_task = args.proxies_per_task
    refs = [
        submit_pack(str(corpus), domains, mixtures[t * per_task : (t + 1) * per_task],
                    list(range(t * per_task, (t + 1) * per_task)), spec,
                    num_cpus=args.cpus_per_task, num_gpus=args.gpus_per_task, max_retries=0)
        for t in range(args.tasks)
    ]
    packs = ray.get(refs)
    busy = load.cores()
    timings = [pack[0]["timing"] for pack in packs]
    tokens = sum(t["steady_tokens"] for t in timings)
    span = max(t["train_end"] for t in timings) - min(t["steady_start"] for t in timings)
    ours = sum(t["steady_cpu_seconds"] for t in timings) / span
    statuses = {r["status"] for pack in packs for r in pack}
    overlap = min(t["train_end"] for t in timings) - max(t["steady_start"] for t in timings)
    return {"rate": tokens / span, "ours": ours, "busy": busy, "status": ",".join(sorted(statuses)),
            "overlap": overlap / span, "threads": [pack[0].get("threads") for pack in packs]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--preset", default=None, help="default: cpu-0.5m on cpu, regmix-1m on cuda")
    parser.add_argument("--vocab", type=int, default=None, help="model vocabulary (default: the corpus's, 256)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None, help="training steps per proxy per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=None, help="concurrent Ray tasks (default: fill the machine)")
    parser.add_argument("--proxies-per-task", type=int, default=None)
    parser.add_argument("--cpus-per-task", type=float, default=None)
    parser.add_argument("--gpus-per-task", type=float, default=None)
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="torch.compile in the pool: auto = as for a proxy run of the default recipe "
                             "(ProxySpec().tokens), which is what recommend does")
    parser.add_argument("--naive-compile", action="store_true", help="also torch.compile the naive loop")
    parser.add_argument("--corpus", default=None,
                        help="a prepared corpus, e.g. data/corpus (default: the test fixture corpus)")
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    cores = os.cpu_count() or 1
    on_cuda = args.device == "cuda"
    study = study_defaults()
    args.preset = args.preset or ("regmix-1m" if on_cuda else "cpu-0.5m")
    args.steps = args.steps or (200 if on_cuda else 20)
    args.cpus_per_task = args.cpus_per_task or study["cpus_per_task"]
    args.gpus_per_task = args.gpus_per_task if args.gpus_per_task is not None else (
        study["gpus_per_task"] if on_cuda else 0.0)
    args.proxies_per_task = args.proxies_per_task or study["proxies_per_task"]
    if args.tasks is None:  # as many as Ray can run at once: the whole GPU, or every core
        args.tasks = max(1, int(1 / args.gpus_per_task)) if on_cuda else max(1, int(cores // args.cpus_per_task))

    from workers.presets import load_preset
    from workers.proxies import wants_compile
    from workers.spec import ProxySpec

    with tempfile.TemporaryDirectory(prefix="mixopt-bench-") as tmp:
        corpus = Path(args.corpus) if args.corpus else build_corpus(Path(tmp) / "corpus")
        from mixopt.data.corpus import Corpus

        opened = Corpus.open(corpus)
        domains = opened.domains
        vocab = args.vocab or opened.vocab_size
        cfg = load_preset(args.preset, vocab)
        recipe = ProxySpec(preset=args.preset, batch_size=args.batch_size, seq_len=args.seq_len,
                           vocab_size=args.vocab, device=args.device)   # a real proxy run's length
        pool_compile = wants_compile(recipe) if args.compile == "auto" else args.compile == "on"
        spec = dataclasses.replace(recipe, tokens=args.steps * args.batch_size * args.seq_len,
                                   eval_tokens=args.seq_len, curve_every=args.steps, compile=pool_compile)
        naive_spec = dataclasses.replace(spec, compile=args.naive_compile)
        flops_per_token = cfg.flops_per_token(args.seq_len)
        log(f"corpus {corpus} domains={domains} vocab={vocab}; preset {args.preset}: "
            f"{cfg.num_params() / 1e6:.2f}M parameters, {flops_per_token / 1e6:.2f} MFLOP per training token")

        if on_cuda:
            peak, peak_note = H100_BF16_DENSE_FLOPS, "H100 dense bf16 peak"
        else:
            peak = cpu_peak_flops()
            peak_note = f"best 2048^2 fp32 matmul with {torch.get_num_threads()} threads"
        log(f"peak {peak / 1e9:.1f} GFLOP/s ({peak_note}; measured again at the end, the best is used)"
            if not on_cuda else f"peak {peak / 1e12:.0f} TFLOP/s ({peak_note})")

        import ray

        ray.init(address="local", num_cpus=cores, num_gpus=torch.cuda.device_count() if on_cuda else 0,
                 include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        log(f"pool: {args.tasks} Ray tasks x {args.proxies_per_task} packed proxies, "
            f"num_cpus={args.cpus_per_task} num_gpus={args.gpus_per_task} per task, compile={pool_compile} "
            f"({args.compile}); naive: one model at a time, {torch.get_num_threads()} threads, "
            f"compile={naive_spec.compile}; {args.steps} steps per proxy, batch {args.batch_size}x{args.seq_len}")

        rng = np.random.default_rng(0)
        mixtures = rng.dirichlet(np.ones(len(domains)), size=args.tasks * args.proxies_per_task)
        # start the workers and import torch there; compile (cached on disk for the measured runs)
        run_pool(corpus, domains, mixtures, dataclasses.replace(spec, tokens=3 * spec.tokens_per_step), args)
        run_naive(corpus, domains, mixtures[0], dataclasses.replace(naive_spec, tokens=3 * spec.tokens_per_step))
        naive_rates, pool_rates, others = [], [], []
        for repeat in range(args.repeats):
            naive = run_naive(corpus, domains, mixtures[0], naive_spec)
            naive_rates.append(naive["rate"])
            log(f"repeat {repeat + 1}/{args.repeats} naive: {naive['rate']:>9,.0f} tokens/s  "
                f"(used {naive['ours']:.2f} cores; others used {_others(naive)}) {naive['status']}")
            pool = run_pool(corpus, domains, mixtures, spec, args)
            pool_rates.append(pool["rate"])
            log(f"repeat {repeat + 1}/{args.repeats} pool:  {pool['rate']:>9,.0f} tokens/s  "
                f"(used {pool['ours']:.2f} cores; others used {_others(pool)}; "
                f"tasks overlapped {pool['overlap']:.0%}) {pool['status']}")
            others.extend(x["busy"] - x["ours"] for x in (naive, pool) if x["busy"] is not None)
        ray.shutdown()
        if not on_cuda:
            peak = max(peak, cpu_peak_flops())  # again: the quietest of two measurements

    packed_rate, naive_rate = statistics.median(pool_rates), statistics.median(naive_rates)
    if others and statistics.median(others) > 0.25:
        log(f"note: other processes used a median {statistics.median(others):.2f} cores during the measurements; "
            "a shared machine slows the 2-thread naive loop more than 1-thread pool tasks, so the ratio is "
            "less reliable than on an idle machine")
    mfu = packed_rate * flops_per_token / peak
    log(f"naive MFU {naive_rate * flops_per_token / peak:.1%}; pool MFU {mfu:.1%} of {peak / 1e9:.1f} GFLOP/s")
    print(f"proxy throughput: device={args.device} preset={args.preset} packed={packed_rate:.0f} "
          f"naive={naive_rate:.0f} ratio_vs_naive={packed_rate / naive_rate:.2f} mfu={100 * mfu:.1f}", flush=True)
    return 0


def _others(measurement: dict) -> str:
    if measurement["busy"] is None:
        return "n/a"
    return f"{max(0.0, measurement['busy'] - measurement['ours']):.2f}"


if __name__ == "__main__":
    sys.exit(main())
