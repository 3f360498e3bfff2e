"""Training and evaluating proxies: many at once as one packed computation, or one at a time.

    results = train_proxies(corpus_dir, domains, mixtures, seeds, spec)

Each proxy trains `spec.steps` steps of AdamW (decoupled weight decay on matrices and embeddings,
none on norm gains), linear warmup then cosine (or linear, or constant) decay, its own gradient
norm clipped to `spec.grad_clip`; then it is scored on the same held-out windows of every domain,
with its last weights or with their average over the end of training (spec.average: a tail mean
or an EMA, kept beside the optimizer state and evaluated once).
Data order follows workers/data.py (common random numbers for proxies that share a seed);
initial weights follow workers/model.py:init_state (a function of the seed only).

packed=True (the default) trains all the proxies given as one PackedGPT: one batched forward and
backward per step, one optimizer update over a flat (P, N) buffer. packed=False trains them one
after the other as plain GPT modules with torch.optim.AdamW, through the training step that the
large run shares (workers/loop.py): the reference the tests compare against, and the "naive"
baseline of benchmarks/proxy_throughput.py.

Divergence: a proxy whose training loss or gradient norm becomes NaN or infinite is frozen at that
step (its updates are masked to zero; nothing of it reaches the other proxies, whose math is
independent of it) and reported with status "diverged" and NaN losses. The pack goes on.

Device: "auto" is cuda when visible, else cpu. On cuda the forward runs under bf16 autocast
(weights, gradients and optimizer state stay fp32), batches go through pinned host memory with
non-blocking copies. On cpu everything is fp32. spec.compile (auto: runs of 200 steps or more)
wraps the forward in torch.compile on either device.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from mixopt.data.corpus import Corpus
from workers.averaging import WeightAverage
from workers.data import MixtureSampler, eval_windows, normalize_mixture
from workers.loop import adamw, autocast, evaluate, lr_factor, resolve_device, to_device, train_step
from workers.model import GPT, PackedGPT, init_state
from workers.presets import ModelConfig, load_preset
from workers.spec import ProxySpec

__all__ = ["PackedRun", "ProxySpec", "WeightAverage", "train_proxies", "wants_compile"]

STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"
STEADY_AFTER = 2
"""Steps excluded from the steady-state timing (first-call allocations, compilation)."""
COMPILE_MIN_STEPS = 200
"""spec.compile=None compiles runs of at least this many steps."""

log = logging.getLogger(__name__)


class _Timer:
    """Wall-clock marks of a training loop, synchronizing cuda so that the marks mean something."""

    def __init__(self, device: torch.device):
        self.device = device
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.marks[name] = time.time()
        self.marks[name + "_cpu"] = time.process_time()  # CPU seconds of this process, all threads


class PackedTrainer:
    """AdamW on a PackedGPT's flat buffers, with per-proxy clipping, learning rate and freezing."""

    def __init__(self, model: PackedGPT, spec: ProxySpec, lr_scales: torch.Tensor):
        self.model, self.spec = model, spec
        self.m = torch.zeros_like(model.data)
        self.v = torch.zeros_like(model.data)
        self.buffer = torch.empty_like(model.data)
        self.lr_scales = lr_scales.view(-1, 1)                                  # (P, 1)
        self.alive = torch.ones(model.P, 1, dtype=torch.bool, device=model.device)
        self.died_at = torch.full((model.P,), -1, dtype=torch.long, device=model.device)
        self.count = 0

    def step(self, losses: torch.Tensor, lr: float, step_index: int) -> None:
        """One optimizer update from the gradients in model.grad (losses: this step's (P,) losses)."""
        spec, data, g = self.spec, self.model.data, self.model.grad
        norms = torch.linalg.vector_norm(g, dim=1, keepdim=True)                # (P, 1), per proxy
        alive = self.alive & torch.isfinite(norms) & torch.isfinite(losses.detach()).view(-1, 1)
        self.died_at = torch.where(self.alive.view(-1) & ~alive.view(-1), step_index, self.died_at)
        self.alive = alive
        if spec.grad_clip > 0:
            g.mul_((spec.grad_clip / (norms + 1e-6)).clamp_(max=1.0))           # as clip_grad_norm_
        self.count += 1
        bias1 = 1.0 - spec.beta1 ** self.count
        bias2 = 1.0 - spec.beta2 ** self.count
        self.m.lerp_(g, 1.0 - spec.beta1)
        self.v.mul_(spec.beta2).addcmul_(g, g, value=1.0 - spec.beta2)
        update = torch.sqrt(self.v, out=self.buffer).div_(math.sqrt(bias2)).add_(spec.eps)
        update = torch.div(self.m, update, out=self.buffer)
        update.masked_fill_(~alive, 0.0)                                        # frozen proxies
        lr_now = torch.where(alive, lr * self.lr_scales, 0.0)                   # (P, 1)
        with torch.no_grad():
            data[:, : self.model.n_decay].mul_(1.0 - lr_now * spec.weight_decay)
            data.addcmul_(update, lr_now / bias1, value=-1.0)


def wants_compile(spec: ProxySpec) -> bool:
    """Whether a run of this spec is compiled (spec.compile, or auto: long enough runs)."""
    return spec.steps >= COMPILE_MIN_STEPS if spec.compile is None else spec.compile


def _compiled(fn):
    """torch.compile(fn), falling back to fn itself, with a warning, if compilation fails (no C++
    compiler on a CPU node, an inductor bug): a proxy run never fails for want of a compiler."""
    compiled = torch.compile(fn)
    current = [compiled]

    def call(*args):
        try:
            return current[0](*args)
        except Exception as exc:
            if current[0] is fn:
                raise
            log.warning("torch.compile failed (%s: %s); training eagerly", type(exc).__name__, str(exc)[:200])
            current[0] = fn
            return fn(*args)

    return call


def _check_inputs(domains, mixtures, seeds, lr_scales) -> tuple[list[str], np.ndarray, list[int], list[float]]:
    domains = [str(d) for d in domains]
    if not domains:
        raise ValueError("domains must not be empty")
    if len(set(domains)) != len(domains):
        raise ValueError(f"domains must be distinct, got {domains}")
    mixtures = np.asarray(mixtures, dtype=np.float64)
    if mixtures.ndim != 2 or mixtures.shape[1] != len(domains):
        raise ValueError(f"mixtures must have shape (n, {len(domains)}) (one column per domain), got {mixtures.shape}")
    if mixtures.shape[0] == 0:
        raise ValueError("mixtures must have at least one row")
    mixtures = np.stack([normalize_mixture(row, len(domains)) for row in mixtures])
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(mixtures):
        raise ValueError(f"seeds must have one entry per mixture ({len(mixtures)}), got {len(seeds)}")
    if lr_scales is None:
        lr_scales = [1.0] * len(mixtures)
    lr_scales = [float(x) for x in lr_scales]
    if len(lr_scales) != len(mixtures) or any(not x > 0 for x in lr_scales):
        raise ValueError(f"lr_scales must hold one positive number per mixture, got {lr_scales}")
    return domains, mixtures, seeds, lr_scales


def train_proxies(
    corpus_dir: str,
    domains: Sequence[str],
    mixtures: np.ndarray,
    seeds: Sequence[int],
    spec: ProxySpec,
    threads: int | None = None,
    packed: bool = True,
    lr_scales: Sequence[float] | None = None,
    eval_sets: Sequence[str] | None = None,
) -> list[dict]:
    """Train one proxy per row of `mixtures` (columns in `domains` order) with its seed.

    threads: torch's CPU thread count for this call (None: leave it as it is).
    lr_scales: optional per-proxy multipliers of spec.lr (default 1).
    eval_sets: held-out sets of the corpus scored besides the domains, never trained on (None:
    every eval set of the corpus).
    Returns one dict per proxy, in order:
        status   "ok" or "diverged"
        loss     {name: nats per token on the held-out windows} (every domain of `domains`, then
                 every eval set)
        bpb      {domain: bits per byte} = loss / ln 2 / (val bytes per token)
        tokens   training tokens seen;  steps: optimizer steps taken
        seconds  wall seconds of the pack divided by the proxies in it (device time per proxy)
        curve    mean training loss of every spec.curve_every steps
        plus seed, pack_size, device, diverged_at (step or None), timing (marks of the pack).
    """
    if isinstance(spec, dict):
        spec = ProxySpec(**spec)
    domains, mixtures, seeds, lr_scales = _check_inputs(domains, mixtures, seeds, lr_scales)
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    device = resolve_device(spec.device)
    corpus = Corpus.open(corpus_dir, verify="size")
    missing = [d for d in domains if d not in corpus.domains]
    if missing:
        raise ValueError(f"domains {missing} are not in the corpus at {corpus_dir} (it has {corpus.domains})")
    cfg = load_preset(spec.preset, spec.vocab_size or corpus.vocab_size)
    streams = [corpus.stream(d, "train") for d in domains]
    scored = domains + [str(e) for e in (corpus.eval_sets if eval_sets is None else eval_sets)]
    held_out = eval_windows(corpus, scored, spec.eval_tokens, spec.seq_len)
    bytes_per_token = corpus.bytes_per_token("val")
    samplers = [
        MixtureSampler(streams, domains, w, seed, spec.batch_size, spec.seq_len, spec.steps)
        for w, seed in zip(mixtures, seeds)
    ]
    if packed:
        results = _train_packed(cfg, spec, device, samplers, seeds, lr_scales, held_out)
    else:
        results = [
            _train_single(cfg, spec, device, sampler, seed, scale, held_out)
            for sampler, seed, scale in zip(samplers, seeds, lr_scales)
        ]
    for result, seed in zip(results, seeds):
        result["seed"] = seed
        result["device"] = str(device)
        result["threads"] = torch.get_num_threads()
        result["bpb"] = {d: result["loss"][d] / math.log(2) / bytes_per_token[d] for d in scored}
    return results


class PackedRun:
    """A pack in training, one step at a time: the PackedGPT, its PackedTrainer, the proxies'
    samplers and the weight average. `_train_packed` runs it to the end and evaluates once;
    benchmarks/proxy_signal.py also evaluates it at intermediate steps and reads both the last and
    the averaged weights of one run."""

    def __init__(self, cfg: ModelConfig, spec: ProxySpec, device: torch.device, samplers: list[MixtureSampler],
                 seeds: list[int], lr_scales: list[float]):
        self.spec, self.device, self.samplers = spec, device, samplers
        self.P = len(samplers)
        self.model = PackedGPT(cfg, [init_state(cfg, seed) for seed in seeds], device)
        self.trainer = PackedTrainer(self.model, spec, torch.tensor(lr_scales, dtype=torch.float32, device=device))
        self.loss_fn = _compiled(self.model.loss) if wants_compile(spec) else self.model.loss
        self.batch = np.empty((self.P, spec.batch_size, spec.seq_len + 1), dtype=np.int64)
        self.average = WeightAverage(spec)
        self.curve: list[list[float]] = []
        self.running = torch.zeros(self.P, device=device)

    def step(self, step: int) -> None:
        """Train step `step` (0, 1, 2, ... in order) of every proxy."""
        spec = self.spec
        for p, sampler in enumerate(self.samplers):
            sampler.batch(step, out=self.batch[p])
        windows = to_device(self.batch, self.device)
        with autocast(self.device, spec.autocast):
            losses = self.loss_fn(windows[..., :-1], windows[..., 1:])
        self.model.backward(losses)
        self.trainer.step(losses, spec.lr * lr_factor(step, spec.steps, spec), step)
        self.average.update(step, self.model.data)
        self.running += losses.detach()
        if (step + 1) % spec.curve_every == 0 or step == spec.steps - 1:
            self.curve.append((self.running / ((step % spec.curve_every) + 1)).tolist())
            self.running.zero_()

    def evaluate(self, held_out: dict[str, np.ndarray], averaged: bool | None = None) -> dict[str, list[float]]:
        """Every proxy's mean loss on every domain's held-out windows, with the last weights or the
        averaged ones (None: as the spec says)."""
        averaged = self.spec.average != "none" if averaged is None else averaged
        if not averaged:
            return _evaluate_packed(self.model, self.spec, self.device, held_out)
        if self.average.value is None:
            raise RuntimeError("no averaged weights yet: the averaging window has not started")
        data = self.model.data
        last = data.detach().clone()
        with torch.no_grad():
            data.copy_(self.average.value)
        try:
            return _evaluate_packed(self.model, self.spec, self.device, held_out)
        finally:
            with torch.no_grad():
                data.copy_(last)


def _train_packed(cfg: ModelConfig, spec: ProxySpec, device: torch.device, samplers: list[MixtureSampler],
                  seeds: list[int], lr_scales: list[float], held_out: dict[str, np.ndarray]) -> list[dict]:
    timer = _Timer(device)
    timer.mark("start")
    P, steps = len(samplers), spec.steps
    run = PackedRun(cfg, spec, device, samplers, seeds, lr_scales)
    timer.mark("train_start")
    for step in range(steps):
        if step == min(STEADY_AFTER, steps - 1):
            timer.mark("steady_start")
        run.step(step)
    timer.mark("train_end")
    losses_by_domain = run.evaluate(held_out)
    timer.mark("end")
    alive = run.trainer.alive.view(-1).tolist()
    died_at = run.trainer.died_at.tolist()
    seconds = timer.marks["end"] - timer.marks["start"]
    results = []
    for p in range(P):
        ok = alive[p] and all(math.isfinite(losses_by_domain[d][p]) for d in held_out)
        taken = steps if died_at[p] < 0 else died_at[p]
        results.append({
            "status": STATUS_OK if ok else STATUS_DIVERGED,
            "loss": {d: (losses_by_domain[d][p] if ok else math.nan) for d in held_out},
            "tokens": taken * spec.tokens_per_step,
            "steps": taken,
            "seconds": seconds / P,
            "curve": [c[p] for c in run.curve],
            "pack_size": P,
            "diverged_at": None if died_at[p] < 0 else died_at[p],
            "timing": _timing(timer.marks, steps, spec.tokens_per_step * P),
        })
    return results


@torch.no_grad()
def _evaluate_packed(model: PackedGPT, spec: ProxySpec, device: torch.device,
                     held_out: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Mean loss (nats per token) of every proxy on every domain's held-out windows."""
    batch_size = spec.eval_batch_size or spec.batch_size
    out = {}
    for domain, windows in held_out.items():
        total = torch.zeros(model.P, dtype=torch.float64, device=device)
        for start in range(0, len(windows), batch_size):
            chunk = to_device(windows[start : start + batch_size], device)
            chunk = chunk.unsqueeze(0).expand(model.P, -1, -1)   # the same windows for every proxy
            with autocast(device, spec.autocast):
                logits = model.logits(chunk[..., :-1])
            per_token = torch.nn.functional.cross_entropy(
                logits.float().flatten(0, 1), chunk[..., 1:].flatten(), reduction="none"
            )
            total += per_token.view(model.P, -1).sum(dim=1).double()
        out[domain] = (total / (windows.shape[0] * (windows.shape[1] - 1))).tolist()
    return out


def _train_single(cfg: ModelConfig, spec: ProxySpec, device: torch.device, sampler: MixtureSampler,
                  seed: int, lr_scale: float, held_out: dict[str, np.ndarray]) -> dict:
    """One proxy as a plain PyTorch loop: a GPT module and the shared step of workers/loop.py."""
    timer = _Timer(device)
    timer.mark("start")
    steps, curve_every = spec.steps, spec.curve_every
    model = GPT(cfg, seed=seed).to(device)
    optimizer = adamw(model, cfg, spec.lr, spec.weight_decay, (spec.beta1, spec.beta2), spec.eps)
    forward = _compiled(model) if wants_compile(spec) else model
    average = WeightAverage(spec)
    curve, running, diverged_at = [], 0.0, None
    timer.mark("train_start")
    for step in range(steps):
        if step == min(STEADY_AFTER, steps - 1):
            timer.mark("steady_start")
        windows = to_device(sampler.batch(step), device)
        lr = spec.lr * lr_scale * lr_factor(step, steps, spec)
        loss, norm = train_step(model, optimizer, windows, lr, spec.grad_clip, forward=forward, bf16=spec.autocast)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            diverged_at = step
            break
        if average.kind != "none":
            average.update(step, torch.nn.utils.parameters_to_vector(model.parameters()))
        running += loss
        if (step + 1) % curve_every == 0 or step == steps - 1:
            curve.append(running / ((step % curve_every) + 1))
            running = 0.0
    timer.mark("train_end")
    if diverged_at is None and average.value is not None:
        torch.nn.utils.vector_to_parameters(average.value, model.parameters())
    if diverged_at is None:
        losses = evaluate(model, held_out, spec.eval_batch_size or spec.batch_size, device, spec.autocast)
    else:
        losses = {d: math.nan for d in held_out}
    timer.mark("end")
    ok = diverged_at is None and all(math.isfinite(x) for x in losses.values())
    taken = steps if diverged_at is None else diverged_at
    return {
        "status": STATUS_OK if ok else STATUS_DIVERGED,
        "loss": losses if ok else {d: math.nan for d in held_out},
        "tokens": taken * spec.tokens_per_step,
        "steps": taken,
        "seconds": timer.marks["end"] - timer.marks["start"],
        "curve": curve,
        "pack_size": 1,
        "diverged_at": diverged_at,
        "timing": _timing(timer.marks, steps if diverged_at is None else diverged_at + 1, spec.tokens_per_step),
    }


def _timing(marks: dict[str, float], steps: int, tokens_per_step: int) -> dict:
    """Timing of a pack: wall-clock marks (unix seconds) and training tokens per second in the
    steady state (`steps` run, less the first STEADY_AFTER)."""
    if "steady_start" not in marks:  # stopped before the steady state began
        marks = {**marks, "steady_start": marks["train_start"], "steady_start_cpu": marks["train_start_cpu"]}
        steady_steps = steps
    else:
        steady_steps = steps - min(STEADY_AFTER, steps - 1)
    train = marks["train_end"] - marks["train_start"]
    steady = marks["train_end"] - marks["steady_start"]
    return {
        **{k: v for k, v in marks.items() if not k.endswith("_cpu")},
        "train_seconds": train,
        "steady_cpu_seconds": marks["train_end_cpu"] - marks["steady_start_cpu"],
        "steady_steps": steady_steps,
        "steady_seconds": steady,
        "steady_tokens": steady_steps * tokens_per_step,
        "tokens_per_second": steady_steps * tokens_per_step / steady if steady > 0 else math.nan,
    }
