"""The large run: a mixture-weighted batch source, a training loop driven by an online mixer, and a
Ray named actor through which several training workers share one mixer.

    settings = load_train_config("configs/train.yaml")
    mixer = build_mixer(settings, domains, prior)              # online.create with training_options
    result = train_run(settings, domains, mixer, out_dir)      # also writes out_dir/train_result.json

The loop follows the online protocol (mixopt/online/__init__.py): every round it asks the mixer for
proportions p and a number of steps n, trains n steps on batches drawn from p, evaluates every
domain on its fixed held-out windows, tells the mixer those losses, appends one row to
`train_log.parquet` (step, tokens, phase, w_<d>, loss_<d>, train_loss, probe, seconds: the schema
mixopt/report.py plots) and checkpoints: model and optimizer as .npz (plain arrays, no pickle),
mixer and batch source as JSON. A run started again with the same out_dir resumes where the last
checkpoint left it (its mixer too), and a finished run is not trained again.

torch is imported inside the functions that need it, so `import mixopt.training` stays light.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from mixopt.config import Section, read_yaml, validate_mapping
from mixopt.errors import ConfigError, DataError, InputError
from mixopt.io import atomic_write, atomic_write_json, atomic_write_parquet, read_input_json

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
LOG_NAME = "train_log.parquet"
RESULT_NAME = "train_result.json"
CHECKPOINT_DIR = "checkpoint"


# ----------------------------------------------------------------------------- configuration
class ModelSettings(Section):
    preset: str | dict[str, Any] = "cpu-0.5m"
    """A name in configs/presets.yaml or a dict of dims (n_layer, n_head, d_model, d_ff)."""
    tokens: int = Field(default=1_048_576, gt=0)
    """Training tokens of the run (rounded down to whole steps)."""
    batch_size: int = Field(default=8, gt=0)
    seq_len: int = Field(default=128, gt=0)
    lr: float = Field(default=3e-3, gt=0)
    warmup: float = Field(default=0.1, ge=0, lt=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    final_lr: float = Field(default=0.1, ge=0, le=1)
    weight_decay: float = Field(default=0.1, ge=0)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    grad_clip: float = Field(default=1.0, ge=0)


class EndPhase(Section):
    """An end-of-training phase on a static mixture: the online mixture's prior with the named
    domains' weights multiplied by their factors ("Does your data spark joy?")."""
    fraction: float = Field(default=0.15, gt=0, lt=1)
    upweight: dict[str, float] = Field(default_factory=dict)


class OnlineSettings(Section):
    method: str = "auto"
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-method options for mixopt.online.create, e.g. {auto: {rounds: 40}}, over
    mixopt.online.TRAINING_OPTIONS (auto: perturb 0.3 and NARROW_CONTROL: leak 0.05, a factor of 3, no guard)."""
    end_phase: EndPhase | None = None
    max_epochs: float | None = Field(default=None, gt=0)
    """How many times the run may read each domain's training tokens: the online mixers stay
    below max_epochs * tokens_d / the run's tokens. None: the study's max_epochs (from --mixture),
    else 4."""
    min_weights: dict[str, float] = Field(default_factory=dict)
    max_weights: dict[str, float] = Field(default_factory=dict)
    """Per-domain bounds of the online mixers, on top of the study's (from --mixture)."""


class TrainSettings(Section):
    corpus: str = "data/corpus"
    domains: list[str] | None = None
    """Domains in order (default: those of --mixture, else every domain of the corpus)."""
    model: ModelSettings = Field(default_factory=ModelSettings)
    online: OnlineSettings = Field(default_factory=OnlineSettings)
    eval_tokens: int = Field(default=2048, gt=0)
    """Held-out tokens per domain evaluated after every round (the same windows every time)."""
    final_eval_tokens: int = Field(default=16384, gt=0)
    """Held-out tokens per domain of the final evaluation."""
    seed: int = Field(default=0, ge=0)
    threads: int = Field(default=2, gt=0)
    checkpoint: bool = True
    """Write a checkpoint (model, optimizer, mixer, source) after every round."""

    @property
    def steps(self) -> int:
        return self.model.tokens // (self.model.batch_size * self.model.seq_len)


def parse_train_config(payload: Any, source: str = "train config") -> TrainSettings:
    settings = validate_mapping(TrainSettings, payload, source)
    if settings.steps < 1:
        raise ConfigError(f"{source}: model.tokens must be at least batch_size * seq_len "
                          f"({settings.model.batch_size * settings.model.seq_len})")
    return settings


def load_train_config(path: str | Path) -> TrainSettings:
    return parse_train_config(read_yaml(path), source=str(path))


def read_mixture(path: str | Path) -> tuple[list[str], np.ndarray, dict]:
    """(domains, weights, payload) of a recommendation.json (keys `domains`, `weights`)."""
    path = Path(path)
    payload = read_input_json(path, "mixture")
    if not isinstance(payload, dict) or "domains" not in payload or "weights" not in payload:
        raise InputError(f"mixture: {path} needs keys `domains` and `weights` (a recommendation.json)")
    domains, weights = payload["domains"], payload["weights"]
    if (not isinstance(domains, list) or not isinstance(weights, list) or len(domains) != len(weights)
            or not all(isinstance(d, str) for d in domains)):
        raise InputError(f"mixture: {path}: `domains` and `weights` must be lists of the same length")
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise InputError(f"mixture: {path}: weights must be finite, non-negative, with a positive sum")
    return list(domains), w / w.sum(), payload


def align_weights(weights: np.ndarray, from_domains: Sequence[str], to_domains: Sequence[str]) -> np.ndarray:
    missing = [d for d in to_domains if d not in from_domains]
    if missing:
        raise InputError(f"mixture: has no weight for domains {missing}")
    index = {d: i for i, d in enumerate(from_domains)}
    w = np.array([weights[index[d]] for d in to_domains], dtype=np.float64)
    if not w.sum() > 0:
        raise InputError("mixture: zero total weight on the training domains")
    return w / w.sum()


# ----------------------------------------------------------------------------- the batch source
def _torch():
    import torch

    return torch


_SOURCE_CLASS = None


def _source_class():
    """MixtureBatchSource: _BatchSource and torch's IterableDataset, built on first use so that
    importing mixopt.training does not import torch."""
    global _SOURCE_CLASS
    if _SOURCE_CLASS is None:
        from torch.utils.data import IterableDataset

        _SOURCE_CLASS = type("MixtureBatchSource", (_BatchSource, IterableDataset),
                             {"__doc__": _BatchSource.__doc__, "__module__": __name__})
    return _SOURCE_CLASS


def __getattr__(name: str):
    if name == "MixtureBatchSource":
        return _source_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _BatchSource:
    """Batches of `batch_size` windows of `seq_len + 1` tokens drawn from the domains' train
    shards in proportions that may change while iterating (a PyTorch IterableDataset; use it with
    DataLoader(source, batch_size=None) or iterate it directly).

    Step t gives domain j floor(B C_j + u_t) - floor(B C_{j-1} + u_t) rows (systematic rounding
    of the cumulative weights C with golden-ratio offsets u_t: counts within one row of B w_j per
    step and cumulative counts within a few rows of the target); the k-th window of domain j starts
    at a uniform position from domain j's own random stream (seed, domain). So two runs with the
    same seed see the same windows of a domain in the same order, whatever their mixtures.

    Weights: `set_weights(p)` (the training loop does this every round), or `weights_fn` (called
    every `refresh_every` steps: a Ray mixer actor's current proportions, for DataLoader workers in
    other processes). `state_dict()` / `load_state_dict()` are JSON-ready for resuming.
    """

    def __init__(self, corpus, domains: Sequence[str], batch_size: int, seq_len: int, seed: int = 0,
                 weights=None, weights_fn: Callable[[], Sequence[float]] | None = None, refresh_every: int = 1):
        from workers.data import domain_key

        missing = [d for d in domains if d not in corpus.domains]
        if missing:
            raise DataError(f"domains {missing} are not in the corpus at {corpus.directory} (it has {corpus.domains})")
        self.domains = list(domains)
        self.K = len(self.domains)
        self.batch_size, self.length, self.seed = int(batch_size), int(seq_len) + 1, int(seed)
        self.streams = [corpus.stream(d, "train") for d in self.domains]
        self.weights_fn = weights_fn
        self.refresh_every = max(1, int(refresh_every))
        self.step = 0
        self.u0 = float(np.random.default_rng([self.seed, 0x0FF5E7]).random())
        self.rngs = [np.random.default_rng([self.seed, domain_key(d)]) for d in self.domains]
        self.rows_taken = np.zeros(self.K, dtype=np.int64)
        self.weights = np.full(self.K, 1.0 / self.K)
        if weights is not None:
            self.set_weights(weights)

    def set_weights(self, weights) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.K,) or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
            raise InputError(f"weights must be {self.K} finite non-negative numbers with a positive sum, got {w}")
        self.weights = w / w.sum()

    def counts(self, step: int) -> np.ndarray:
        offset = (self.u0 + GOLDEN * step) % 1.0
        cumulative = self.batch_size * np.concatenate([[0.0], np.cumsum(self.weights)])
        cumulative[-1] = self.batch_size
        return np.diff(np.floor(cumulative + offset).astype(np.int64))

    def next_batch(self) -> np.ndarray:
        if self.weights_fn is not None and self.step % self.refresh_every == 0:
            self.set_weights(self.weights_fn())
        rows = []
        for j, n in enumerate(self.counts(self.step)):
            if n:
                rows.append(self.streams[j].windows(self.rngs[j].random(int(n)), self.length))
                self.rows_taken[j] += n
        self.step += 1
        return np.concatenate(rows, axis=0)

    def __iter__(self):
        torch = _torch()
        while True:
            yield torch.from_numpy(self.next_batch())

    def state_dict(self) -> dict:
        return {"domains": self.domains, "seed": self.seed, "step": self.step, "weights": self.weights.tolist(),
                "rows_taken": self.rows_taken.tolist(), "rngs": [r.bit_generator.state for r in self.rngs]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("domains") != self.domains or state.get("seed") != self.seed:
            raise InputError("source state: saved for other domains or another seed")
        self.step = int(state["step"])
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.rows_taken = np.asarray(state["rows_taken"], dtype=np.int64)
        for rng, saved in zip(self.rngs, state["rngs"]):
            rng.bit_generator.state = saved


# ----------------------------------------------------------------------------- mixers
def run_space(settings: TrainSettings, domains: Sequence[str], train_tokens: dict[str, int],
              study: dict | None = None):
    """The mixtures a run may train on (a MixtureSpace): bounds and repetition caps for this run's
    own tokens, max_epochs * train_tokens[d] / settings.model.tokens, so that an online mixer
    never repeats a domain more often than the static search allowed.

    `study`: a recommendation.json payload; its config's min_weights, max_weights and max_epochs
    apply, under the train config's `online` ones (which win where both name a domain)."""
    from mixopt.space import MixtureSpace

    space = ((study or {}).get("config") or {}).get("space") or {}
    max_epochs = settings.online.max_epochs or space.get("max_epochs") or 4.0
    bounds = {}
    for name in ("min_weights", "max_weights"):
        merged = {**(space.get(name) or {}), **getattr(settings.online, name)}
        bounds[name] = {d: v for d, v in merged.items() if d in domains}
        unknown = sorted(set(getattr(settings.online, name)) - set(domains))
        if unknown:
            raise InputError(f"online.{name} names domains the run does not train on: {unknown}")
    missing = [d for d in domains if not train_tokens.get(d)]
    if missing:
        raise InputError(f"domains {missing} have no training tokens in the corpus")
    try:
        return MixtureSpace(list(domains), [train_tokens[d] for d in domains], target_tokens=settings.model.tokens,
                            max_epochs=max_epochs, **bounds)
    except InputError as exc:     # the run's tokens are model.tokens here, not a study's target_tokens
        raise InputError(f"online bounds of a {settings.model.tokens:,}-token run (max_epochs {max_epochs:g}): "
                         + str(exc).replace("target_tokens", "model.tokens")) from None


def build_mixer(settings: TrainSettings, domains: Sequence[str], prior, method: str | None = None,
                seed: int | None = None, space=None, jacobian=None):
    """The online mixer of a run: `method` (default settings.online.method) over the run's steps,
    from `prior`; with an end phase, a Schedule whose last phase holds the upweighted prior.

    `space` (run_space's MixtureSpace): the mixers stay inside its bounds and repetition caps;
    a prior outside them is brought inside (multiplicatively, as the mixers move).
    `jacobian` ((K, K) in `domains` order, `mixopt jacobian`'s): auto's option `jacobian`."""
    from mixopt import online
    from mixopt.online.base import project

    bounds = {} if space is None else {"min_weights": space.lower, "max_weights": space.upper}
    if space is not None and prior is not None:
        prior = project(np.asarray(prior, dtype=np.float64), space.lower, space.upper)
    method = method or settings.online.method
    if method not in online.METHODS:
        raise InputError(f"online must be one of {list(online.METHODS)}, got {method!r}")
    options = online.training_options(method, settings.online.options.get(method, {}))
    if jacobian is not None:
        if method != "auto":
            raise InputError(f"jacobian: only the auto mixer uses a Jacobian, not {method}")
        options["jacobian"] = jacobian
    seed = settings.seed if seed is None else seed
    steps = settings.steps
    if method in ("static", "stratified") and "round_steps" not in options:
        options["round_steps"] = max(1, steps // 20)          # evaluate (and log) 20 times
    end = settings.online.end_phase
    if end is None:
        return online.create(method, domains=list(domains), steps=steps, prior=prior, seed=seed, **options, **bounds)
    base = np.full(len(domains), 1.0 / len(domains)) if prior is None else np.asarray(prior, dtype=np.float64)
    final = online.upweight(base, end.upweight, list(domains))
    if space is not None:
        final = project(final, space.lower, space.upper)
    phases = [online.Phase(until=1.0 - end.fraction, method=method, prior=prior, options=options),
              online.Phase(until=1.0, method="static", prior=final)]
    return online.Schedule(list(domains), steps, phases, seed=seed, **bounds)


def _phase_name(mixer) -> str:
    from mixopt.online import Schedule

    if isinstance(mixer, RemoteMixer):
        return mixer._fetch()["phase"]
    if isinstance(mixer, Schedule):
        if mixer.mixer is None:
            return f"{len(mixer.phases) - 1}:{mixer.phases[-1].method}"
        return f"{mixer.index}:{mixer.phases[mixer.index].method}"
    return f"0:{getattr(mixer, 'method', 'remote')}"


def _probing(mixer) -> bool:
    inner = getattr(mixer, "mixer", mixer)
    return bool(getattr(inner, "probing", False))


# ----------------------------------------------------------------------------- the training loop
def _evaluate(model, held_out: dict[str, np.ndarray], batch_size: int) -> dict[str, float]:
    torch = _torch()
    out = {}
    model.eval()
    with torch.no_grad():
        for domain, windows in held_out.items():
            total = 0.0
            for start in range(0, len(windows), batch_size):
                chunk = torch.from_numpy(windows[start:start + batch_size])
                total += float(model(chunk[:, :-1], chunk[:, 1:], reduction="sum"))
            out[domain] = total / (windows.shape[0] * (windows.shape[1] - 1))
    model.train()
    return out


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    atomic_write(path, write)


def _optimizer_arrays(optimizer, names: dict) -> dict[str, np.ndarray]:
    arrays = {}
    for param, state in optimizer.state.items():
        name = names[param]
        for key, value in state.items():
            arrays[f"{name}::{key}"] = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    return arrays


def _load_optimizer(optimizer, names: dict, arrays) -> None:
    torch = _torch()
    by_name = {name: param for param, name in names.items()}
    for key in arrays.files:
        name, field = key.split("::")
        optimizer.state[by_name[name]][field] = torch.from_numpy(np.array(arrays[key]))


def train_run(settings: TrainSettings, domains: Sequence[str], mixer, out_dir: str | Path,
              log: Callable[[str], None] | None = None, label: str | None = None) -> dict:
    """Train one model under `mixer` (an OnlineMixer, Schedule or RemoteMixer); see the module doc.
    Returns the result dict also written to out_dir/train_result.json."""
    torch = _torch()
    from mixopt.data.corpus import Corpus
    from workers.data import eval_windows
    from workers.model import GPT, param_layout
    from workers.presets import load_preset
    from workers.train import lr_factor  # the proxies' schedule: same warmup, cosine/linear/constant

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda line: None)
    result_path = out / RESULT_NAME
    if result_path.exists():
        done = json.loads(result_path.read_text(encoding="utf-8"))
        if done.get("status") == "ok":
            log(f"{out}: finished already; not trained again")
            return done
    torch.set_num_threads(settings.threads)
    domains = list(domains)
    if getattr(mixer, "K", len(domains)) != len(domains):
        raise InputError(f"mixer has {mixer.K} domains, the run {len(domains)}")
    if getattr(mixer, "steps", settings.steps) != settings.steps:
        raise InputError(f"mixer plans {mixer.steps} steps, the run has {settings.steps}")
    m = settings.model
    corpus = Corpus.open(settings.corpus, verify="size")
    cfg = load_preset(m.preset, corpus.vocab_size)
    source = _source_class()(corpus, domains, m.batch_size, m.seq_len, seed=settings.seed)
    held_out = eval_windows(corpus, domains, settings.eval_tokens, m.seq_len)
    model = GPT(cfg, seed=settings.seed)
    decay = {name for name, _, is_decayed in param_layout(cfg) if is_decayed}
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": m.weight_decay},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=m.lr, betas=(m.beta1, m.beta2), eps=1e-8)
    names = {p: n for n, p in named}
    steps, tokens_per_step = settings.steps, m.batch_size * m.seq_len
    rows: list[dict] = []
    step = 0
    seconds = 0.0
    ckpt = out / CHECKPOINT_DIR
    if settings.checkpoint and (ckpt / "meta.json").exists():
        meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
        if meta.get("domains") != domains or meta.get("steps") != steps:
            raise InputError(f"{out}: holds a checkpoint of another run (domains or steps differ); use a new --out")
        from mixopt import online

        with np.load(ckpt / "model.npz") as arrays:
            model.load_state_dict({k: torch.from_numpy(np.array(arrays[k])) for k in arrays.files})
        with np.load(ckpt / "optimizer.npz") as arrays:
            _load_optimizer(optimizer, names, arrays)
        saved = online.load(ckpt / "mixer.json")
        if hasattr(mixer, "load_state_dict") and not isinstance(mixer, RemoteMixer):
            mixer = saved
        source.load_state_dict(json.loads((ckpt / "source.json").read_text(encoding="utf-8")))
        step, seconds = int(meta["step"]), float(meta["seconds"])
        if (out / LOG_NAME).exists():
            import polars as pl

            rows = pl.read_parquet(out / LOG_NAME).to_dicts()
        log(f"{out}: resumed at step {step}/{steps}")
    started = time.time() - seconds
    model.train()
    while not mixer.done:
        p = np.asarray(mixer.ask(), dtype=np.float64)
        n = int(mixer.next_steps)
        phase, probe = _phase_name(mixer), _probing(mixer)
        source.set_weights(p)
        running = 0.0
        for _ in range(n):
            batch = torch.from_numpy(source.next_batch())
            for group in optimizer.param_groups:
                group["lr"] = m.lr * lr_factor(step, steps, m)
            loss = model(batch[:, :-1], batch[:, 1:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if m.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), m.grad_clip)
            optimizer.step()
            running += float(loss.detach())
            step += 1
        if not math.isfinite(running):
            raise DataError(f"training diverged before step {step} (non-finite loss)")
        losses = _evaluate(model, held_out, m.batch_size * 4)
        vector = np.array([losses[d] for d in domains])
        mixer.tell(vector)
        row = {"step": step, "tokens": step * tokens_per_step, "phase": phase, "probe": probe, "segment_steps": n}
        row.update({f"w_{d}": float(w) for d, w in zip(domains, p)})
        row.update({f"loss_{d}": float(v) for d, v in zip(domains, vector)})
        row["train_loss"] = running / n if n else float("nan")
        row["seconds"] = time.time() - started
        rows.append(row)
        if settings.checkpoint:
            _write_log(out, rows)
            _checkpoint(ckpt, model, optimizer, names, mixer, source, domains, steps, step, row["seconds"])
    _write_log(out, rows)
    final_windows = eval_windows(corpus, domains, settings.final_eval_tokens, m.seq_len)
    final = _evaluate(model, final_windows, m.batch_size * 4)
    bpt = corpus.bytes_per_token("val")
    mean_mixture = _mean_mixture(rows, domains)
    result = {
        "status": "ok", "label": label, "method": getattr(mixer, "method", "remote"), "domains": domains,
        "steps": steps, "tokens": steps * tokens_per_step, "seconds": time.time() - started,
        "params": cfg.num_params(), "loss": final, "mean_loss": float(np.mean([final[d] for d in domains])),
        "bpb": {d: final[d] / math.log(2) / bpt[d] for d in domains},
        "mean_mixture": dict(zip(domains, mean_mixture.tolist())), "rounds": len(rows),
        "probe_steps": int(sum(r["segment_steps"] for r in rows if r["probe"])),
        **_mixer_record(mixer, domains),
    }
    atomic_write_json(result_path, result)
    if settings.checkpoint:
        atomic_write_json(ckpt / "mixer.json", mixer.state_dict())
    try:
        plot_weights(rows, domains, out / "weights.png", title=label or result["method"])
    except Exception as exc:  # a missing plotting backend must not lose a finished run
        log(f"could not plot the weight trajectories: {exc}")
    return result


def _mixer_record(mixer, domains: Sequence[str]) -> dict:
    """What the run's mixer was: {min_weights, max_weights} per domain (None: unbounded or not known)
    and `mixer`, its config (method, options, prior, bounds; None for a remote or foreign mixer)."""
    config = None if isinstance(mixer, RemoteMixer) else getattr(mixer, "config", None)
    config = config() if callable(config) else None
    bounds = (config or {}).get("common", config) or {}        # a Schedule keeps its bounds in `common`
    record = {}
    for name in ("min_weights", "max_weights"):
        value = bounds.get(name)
        record[name] = None if value is None else dict(zip(domains, np.asarray(value, dtype=np.float64).tolist()))
    return {**record, "mixer": config}


def _mean_mixture(rows: list[dict], domains: Sequence[str]) -> np.ndarray:
    total = np.zeros(len(domains))
    for r in rows:
        total += r["segment_steps"] * np.array([r[f"w_{d}"] for d in domains])
    return total / max(total.sum(), 1e-12)


def _write_log(out: Path, rows: list[dict]) -> None:
    import polars as pl

    atomic_write_parquet(out / LOG_NAME, pl.DataFrame(rows))


def _checkpoint(ckpt: Path, model, optimizer, names, mixer, source, domains, steps, step, seconds) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    _save_npz(ckpt / "model.npz", {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    _save_npz(ckpt / "optimizer.npz", _optimizer_arrays(optimizer, names))
    atomic_write_json(ckpt / "mixer.json", mixer.state_dict())
    atomic_write_json(ckpt / "source.json", source.state_dict())
    atomic_write_json(ckpt / "meta.json", {"domains": list(domains), "steps": steps, "step": step, "seconds": seconds})


def plot_weights(rows: list[dict], domains: Sequence[str], path: Path, title: str = "") -> Path:
    """A stacked plot of the proportions of every round (each band one domain), as a PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = np.array([r["step"] - r["segment_steps"] for r in rows] + [rows[-1]["step"]], dtype=float)
    weights = np.array([[r[f"w_{d}"] for d in domains] for r in rows])
    weights = np.vstack([weights, weights[-1:]]).T
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.stackplot(starts, weights, labels=list(domains), step="post")
    ax.set_xlim(starts[0], starts[-1])
    ax.set_ylim(0, 1)
    ax.set_xlabel("training step")
    ax.set_ylabel("mixture weight (stacked)")
    ax.set_title(f"Domain weights over training {title}".strip(), fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, reverse=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


# ----------------------------------------------------------------------------- Ray: one shared mixer
class MixerService:
    """The body of the Ray named mixer actor: one mixer, `workers` training workers.

    Every worker asks for round r (it waits until the mixer has reached it), trains, and tells
    its own losses for round r (and, if it trains on its own interval, the steps it trained: the
    workers must agree); when all `workers` have told, the mixer is told their mean (NaN where no
    worker evaluated a domain) and round r + 1 opens. Async methods: waiting workers do
    not block the actor, and nothing polls."""

    def __init__(self, state: dict, workers: int = 1):
        from mixopt import online

        self.mixer = online.load(state)
        self.workers = int(workers)
        self.reports: dict[int, list] = {}
        self.steps_told: dict[int, int | None] = {}   # the steps the round's first report trained
        self.rounds = 0
        self.condition = None

    def _cond(self):
        if self.condition is None:
            self.condition = asyncio.Condition()
        return self.condition

    async def ask(self, round_: int) -> dict:
        cond = self._cond()
        async with cond:
            await cond.wait_for(lambda: self.rounds >= round_)
            p = self.mixer.ask()
            return {"round": self.rounds, "p": p.tolist(), "n": int(self.mixer.next_steps),
                    "done": bool(self.mixer.done), "phase": _phase_name(self.mixer), "probe": _probing(self.mixer)}

    async def tell(self, round_: int, losses: list, steps: int | None = None) -> int:
        cond = self._cond()
        async with cond:
            if round_ != self.rounds:
                raise InputError(f"losses: told for round {round_}, but the mixer is at round {self.rounds}")
            told = self.steps_told.setdefault(round_, steps)
            if steps != told:
                raise InputError(f"steps: a worker told {steps} for round {round_}, another told {told}")
            self.reports.setdefault(round_, []).append(np.asarray(losses, dtype=np.float64))
            if len(self.reports[round_]) == self.workers:
                stacked = np.stack(self.reports[round_])
                with np.errstate(invalid="ignore"):
                    seen = ~np.isnan(stacked)
                    mean = np.where(seen.any(axis=0), np.nansum(stacked, axis=0) / np.maximum(seen.sum(axis=0), 1), np.nan)
                try:
                    self.mixer.tell(mean, steps=told)
                except InputError:                  # this report is not taken: the worker may tell again
                    self.reports[round_].pop()
                    if not self.reports[round_]:
                        del self.reports[round_], self.steps_told[round_]
                    raise
                del self.reports[round_], self.steps_told[round_]
                self.rounds += 1
                cond.notify_all()
            return self.rounds

    async def state(self) -> dict:
        return self.mixer.state_dict()

    async def weights(self) -> list:
        return self.mixer.ask().tolist()


def mixer_actor(name: str, mixer=None, workers: int = 1, namespace: str | None = None):
    """The Ray named actor `name` holding one mixer (created from `mixer` if it does not exist yet;
    an existing one is returned as it is). ray must be initialised (mixopt.runner.init_ray)."""
    import ray

    cls = ray.remote(num_cpus=0, max_concurrency=64)(MixerService)
    if mixer is None:
        try:
            return ray.get_actor(name, namespace=namespace)
        except ValueError as exc:
            raise InputError(f"no mixer actor named {name!r}: create it with a mixer first") from exc
    return cls.options(name=name, namespace=namespace, get_if_exists=True).remote(mixer.state_dict(), workers)


class RemoteMixer:
    """The mixer protocol (ask, next_steps, tell, done, state_dict, save) over a mixer actor, for
    one training worker. Each worker tells its own losses; the actor averages them."""

    def __init__(self, handle, domains: Sequence[str], steps: int):
        self.handle = handle
        self.K = len(domains)
        self.steps = int(steps)
        self.method = "remote"
        self.round = 0
        self._answer = None

    def _fetch(self) -> dict:
        import ray

        if self._answer is None:
            self._answer = ray.get(self.handle.ask.remote(self.round))
        return self._answer

    def ask(self) -> np.ndarray:
        return np.asarray(self._fetch()["p"])

    @property
    def next_steps(self) -> int:
        return self._fetch()["n"]

    @property
    def done(self) -> bool:
        return self._fetch()["done"]

    @property
    def probing(self) -> bool:
        return self._fetch()["probe"]

    def tell(self, losses, steps: int | None = None) -> None:
        import ray

        self._fetch()
        ray.get(self.handle.tell.remote(self.round, np.asarray(losses, dtype=np.float64).tolist(), steps))
        self.round += 1
        self._answer = None

    def state_dict(self) -> dict:
        import ray

        return ray.get(self.handle.state.remote())

    def save(self, path) -> Path:
        return atomic_write_json(path, self.state_dict())
