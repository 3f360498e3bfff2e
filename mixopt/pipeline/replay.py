"""Replaying a study from its run store: which batch the study asks for now, and what is settled.

Asking is deterministic given the seed and what has been told, so every stage reopens the study
and replays it from runs.parquet: each round's mixtures (and their run_ids) are the same whichever
way the study is driven (`mixopt recommend`, or `sample` / `run` / `fit` / `propose` in turn).

A round is *settled* when each of its runs has a final row in the store: "ok", "failed", or
"diverged" past its retries. A settled round is told to the study (failed runs as NaN rows) and
the next one is asked. After the last round come the seed-noise repeats: the first
`study.noise_repeats` mixtures of the first round under another seed, measured and not told.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mixopt.pipeline.context import NOISE_ROUND, NOISE_SEED_OFFSET, StudyContext
from mixopt.pipeline.store import STATUS_DIVERGED, STATUS_FAILED, STATUS_OK, run_key


@dataclass
class Batch:
    """Proxies to train together: one round of the study, or the seed-noise repeats."""

    mixtures: np.ndarray         # (n, K)
    seeds: list[int]
    round_index: int             # 0, 1, ... ; NOISE_ROUND for the repeats
    run_ids: list[str]
    description: str
    spec: object                 # the proxies' ProxySpec (a short round's is shortened)
    recipe: str                  # its hash, part of every run_id

    def __len__(self) -> int:
        return len(self.run_ids)


def settled_ids(ctx: StudyContext) -> set[str]:
    """run_ids with a final row: ok, failed, or diverged past the configured retries."""
    import polars as pl

    table = ctx.store.table
    final = table.filter(
        (pl.col("status") == STATUS_OK)
        | (pl.col("status") == STATUS_FAILED)
        | ((pl.col("status") == STATUS_DIVERGED) & (pl.col("attempt") > ctx.config.study.retries))
    )
    return set(final["run_id"].to_list())


def ok_ids(ctx: StudyContext) -> set[str]:
    return set(ctx.store.finished()["run_id"].to_list())


def pending_runs(ctx: StudyContext, batch: Batch, retry_failed: bool = False) -> list[int]:
    """Positions in the batch still to train: not settled (retry_failed: not ok)."""
    done = ok_ids(ctx) if retry_failed else settled_ids(ctx)
    return [i for i, run_id in enumerate(batch.run_ids) if run_id not in done]


def make_batch(ctx: StudyContext, mixtures: np.ndarray, seed: int, round_index: int, description: str,
               fraction: float = 1.0) -> Batch:
    """A batch of proxies at one seed, trained on `fraction` of the config's tokens."""
    spec, recipe = ctx.spec_at(fraction)
    seeds = [int(seed)] * len(mixtures)
    run_ids = [run_key(w, s, recipe) for w, s in zip(mixtures, seeds)]
    return Batch(np.asarray(mixtures, dtype=np.float64), seeds, round_index, run_ids, description, spec, recipe)


def round_fraction(ctx: StudyContext, round_index: int) -> float:
    """The share of the config's tokens a round's proxies train on (the seed-noise repeats: 1.0)."""
    fractions = ctx.study.round_fractions
    return fractions[round_index] if 0 <= round_index < len(fractions) else 1.0


def losses(ctx: StudyContext, run_ids: list[str]) -> np.ndarray:
    """(n, E) values of the objective's metric for these runs over the study's loss columns (the
    domains, then the eval sets); NaN rows where not ok."""
    metric, names = ctx.metric, ctx.loss_names
    by_id = {row["run_id"]: row for row in ctx.store.lookup(run_ids).iter_rows(named=True)}
    values = [[by_id[r][f"{metric}_{n}"] if r in by_id else np.nan for n in names] for r in run_ids]
    return np.array(values, dtype=np.float64).reshape(len(run_ids), len(names))


def next_batch(ctx: StudyContext) -> Batch | None:
    """The batch the study asks for now (without training anything), or None when complete."""
    study, config = ctx.study, ctx.config
    if not study.done:
        mixtures = study.ask()
        fraction = study.round_fraction
        if ctx.first_round is None and fraction >= 1.0:
            ctx.first_round = mixtures      # the first full-length round: the repeats come from it
        round_index = study.rounds_told
        length = "" if fraction >= 1.0 else f", short runs on {fraction:g} of the tokens"
        return make_batch(ctx, mixtures, config.study.seed, round_index,
                          f"round {round_index + 1}/{len(study.round_sizes)}{length}", fraction)
    if config.study.noise_repeats and not ctx.noise_told:
        repeats = ctx.first_round[: config.study.noise_repeats]
        return make_batch(ctx, repeats, config.study.seed + NOISE_SEED_OFFSET, NOISE_ROUND, "seed-noise repeats")
    return None


def tell(ctx: StudyContext, batch: Batch) -> None:
    """Tell a settled batch: a round's losses to the study; the seed-noise repeats are only marked."""
    if batch.round_index == NOISE_ROUND:
        ctx.noise_told = True
        return
    ctx.study.tell(batch.mixtures, losses(ctx, batch.run_ids))
    ctx.told_run_ids.extend(batch.run_ids)


def advance(ctx: StudyContext, train: Callable[[Batch, list[int]], None] | None = None,
            retry_failed: bool = False) -> Batch | None:
    """Replay the study through every settled round, telling their losses.

    Stops at the first batch with runs still to train (a round, then the seed-noise repeats):
    with `train` None it returns that batch; otherwise it calls train(batch, todo) (todo: positions
    in the batch to train), tells the round and goes on. retry_failed: runs that failed count as
    still to train. Returns None when every batch is settled (the study is complete)."""
    while True:
        batch = next_batch(ctx)
        if batch is None:
            return None
        todo = pending_runs(ctx, batch, retry_failed)
        if todo:
            if train is None:
                return batch
            train(batch, todo)
        tell(ctx, batch)
