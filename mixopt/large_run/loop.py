"""The large run's loop: one model trained under an online mixer, logged, checkpointed, resumable.

    result = train_run(settings, domains, mixer, out_dir)      # also writes out_dir/train_result.json

The loop follows the online protocol (mixopt/online/__init__.py): every round it asks the mixer for
proportions p and a number of steps n, trains n steps on batches drawn from p (workers/data.py:
MixtureBatchSource) with the training step proxies share (workers/loop.py), evaluates every
domain on its fixed held-out windows, tells the mixer those losses, appends one row to
`train_log.parquet` (step, tokens, phase, w_<d>, loss_<d>, train_loss, probe, seconds: the schema
`mixopt report` plots) and checkpoints (mixopt/large_run/checkpoint.py). A run started again with
the same out_dir resumes where the last checkpoint left it (its mixer too), and a finished run is
not trained again.

torch is imported inside train_run, so importing this module stays light.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mixopt.config import TrainSettings
from mixopt.errors import DataError, InputError
from mixopt.io import atomic_write, atomic_write_json, atomic_write_parquet
from mixopt.large_run import checkpoint
from mixopt.large_run.actor import RemoteMixer
from mixopt.large_run.mixers import phase_name, probing

LOG_NAME = "train_log.parquet"
RESULT_NAME = "train_result.json"
EVAL_BATCHES = 4
"""Windows per evaluation batch, in training batches."""


def train_run(settings: TrainSettings, domains: Sequence[str], mixer, out_dir: str | Path,
              log: Callable[[str], None] | None = None, label: str | None = None) -> dict:
    """Train one model under `mixer` (an OnlineMixer, Schedule or RemoteMixer); see the module doc.
    Returns the result dict also written to out_dir/train_result.json."""
    import torch

    from mixopt.data.corpus import Corpus
    from workers.data import MixtureBatchSource, eval_windows
    from workers.loop import adamw, evaluate, lr_factor, train_step
    from workers.model import GPT
    from workers.presets import load_preset

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
    source = MixtureBatchSource(corpus, domains, m.batch_size, m.seq_len, seed=settings.seed)
    held_out = eval_windows(corpus, domains, settings.eval_tokens, m.seq_len)
    model = GPT(cfg, seed=settings.seed)
    optimizer = adamw(model, cfg, m.lr, m.weight_decay, (m.beta1, m.beta2), eps=1e-8)
    names = {p: n for n, p in model.named_parameters()}
    steps, tokens_per_step = settings.steps, m.batch_size * m.seq_len
    rows: list[dict] = []
    step = 0
    seconds = 0.0
    ckpt = out / checkpoint.CHECKPOINT_DIR
    if settings.checkpoint and checkpoint.exists(ckpt):
        saved, step, seconds = checkpoint.load(ckpt, model, optimizer, names, source, domains, steps)
        if hasattr(mixer, "load_state_dict") and not isinstance(mixer, RemoteMixer):
            mixer = saved
        if (out / LOG_NAME).exists():
            import polars as pl

            rows = pl.read_parquet(out / LOG_NAME).to_dicts()
        log(f"{out}: resumed at step {step}/{steps}")
    started = time.time() - seconds
    model.train()
    while not mixer.done:
        p = np.asarray(mixer.ask(), dtype=np.float64)
        n = int(mixer.next_steps)
        phase, probe = _round_label(mixer)
        source.set_weights(p)
        running = 0.0
        for _ in range(n):
            batch = torch.from_numpy(source.next_batch())
            loss, norm = train_step(model, optimizer, batch, m.lr * lr_factor(step, steps, m), m.grad_clip)
            if not (math.isfinite(loss) and math.isfinite(norm)):
                raise DataError(f"training diverged at step {step + 1} (non-finite loss or gradient norm)")
            running += loss
            step += 1
        losses = evaluate(model, held_out, m.batch_size * EVAL_BATCHES)
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
            checkpoint.save(ckpt, model, optimizer, names, mixer, source, domains, steps, step, row["seconds"])
    _write_log(out, rows)
    final_windows = eval_windows(corpus, domains, settings.final_eval_tokens, m.seq_len)
    final = evaluate(model, final_windows, m.batch_size * EVAL_BATCHES)
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


def _round_label(mixer) -> tuple[str, bool]:
    """(phase, probing) of the round about to be trained, for the log; a RemoteMixer's from its actor."""
    if isinstance(mixer, RemoteMixer):
        return mixer.phase, mixer.probing
    return phase_name(mixer), probing(mixer)


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
