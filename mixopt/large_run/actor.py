"""One mixer shared by several training workers: a Ray named actor, and the mixer protocol over it.

    handle = mixer_actor("mixer", mixer, workers=2)                 # once, anywhere in the cluster
    remote = RemoteMixer(mixer_actor("mixer"), domains, steps)      # in each worker (found by name)
    train_run(settings, domains, remote, out_dir)                   # as with a local mixer

Every worker asks for round r (it waits until the mixer has reached it), trains, and tells its
own losses for round r; when all of them have told, the mixer is told their mean and round r + 1
opens. ray must be initialised (mixopt.cluster.init_ray).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mixopt.errors import InputError
from mixopt.io import atomic_write_json
from mixopt.large_run.mixers import phase_name, probing


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
                    "done": bool(self.mixer.done), "phase": phase_name(self.mixer), "probe": probing(self.mixer)}

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
                    mean = np.where(seen.any(axis=0), np.nansum(stacked, axis=0) / np.maximum(seen.sum(axis=0), 1),
                                    np.nan)
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
    an existing one is returned as it is). ray must be initialised (mixopt.cluster.init_ray)."""
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
    def phase(self) -> str:
        """The actor's mixer's phase_name for this round."""
        return self._fetch()["phase"]

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
