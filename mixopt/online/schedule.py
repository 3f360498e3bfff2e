"""Phase schedules: a run split into phases, each with its own mixer, behind the same protocol.

    schedule = Schedule(domains, steps=T, phases=[
        Phase(until=0.85, method="auto", prior=p_static),              # adapt around the static answer
        Phase(until=1.0, method="static", prior=upweight(p_static, {"books": 2.0, "wiki": 2.0})),
    ])
    while not schedule.done:
        p = schedule.ask(); n = schedule.next_steps; train(p, n); schedule.tell(eval_losses())

An end-of-training phase that upweights the small high-quality domains over the last 10-20% of the
tokens is what "Does your data spark joy?" found best; the online mixers adapt within their phase
only (each phase's mixer sees `steps` = that phase's steps). A phase without a prior starts from
the final mixture of the phase before it (uniform for the first phase).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixopt.errors import InputError
from mixopt.io import atomic_write_json
from mixopt.online.base import (
    STATE_FORMAT,
    STATE_VERSION,
    check_domains,
    check_float,
    check_int,
    check_weights,
    from_json,
    to_json,
)
from mixopt.online.registry import METHODS, create, load_mixer


@dataclass(frozen=True)
class Phase:
    """One phase: it ends at `until` (a fraction of the run's steps, 0 < until <= 1)."""

    until: float
    method: str = "static"
    prior: Any = None                          # (K,) weights, a {domain: weight} mapping, or None
    options: Mapping = field(default_factory=dict)


def upweight(mixture, factors: Mapping[str, float], domains: Sequence[str]) -> np.ndarray:
    """`mixture` with the named domains' weights multiplied by their factors, renormalised."""
    domains = check_domains(domains)
    weights = check_weights("mixture", mixture, len(domains)).copy()
    if not isinstance(factors, Mapping):
        raise InputError("factors must map domain names to multipliers")
    for name, factor in factors.items():
        if name not in domains:
            raise InputError(f"factors names an unknown domain {name!r} (domains: {domains})")
        weights[domains.index(name)] *= check_float(f"factors[{name!r}]", factor, 0.0)
    return check_weights("mixture after upweighting", weights, len(domains))


class Schedule:
    """A sequence of phases, each run by its own online mixer; the mixer protocol as a whole.

    Common keyword options (min_weights, max_weights, objective) go to every phase's mixer;
    a phase's `options` go to its own."""

    method = "schedule"

    def __init__(self, domains, steps, phases: Sequence[Phase], seed=0, **common):
        self.domains = check_domains(domains)
        self.K = len(self.domains)
        self.steps = check_int("steps", steps, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        unknown = sorted(set(common) - {"min_weights", "max_weights", "objective"})
        if unknown:
            raise InputError(f"unknown option(s) {unknown} for a schedule (common options: min_weights, "
                             f"max_weights, objective; put method options in Phase.options)")
        self.common = common
        if isinstance(phases, (str, bytes)) or not isinstance(phases, Sequence) or not phases:
            raise InputError("phases must be a non-empty list of Phase")
        self.phases = [self._check_phase(i, phase) for i, phase in enumerate(phases)]
        ends = [phase.until for phase in self.phases]
        if any(b <= a for a, b in zip(ends, ends[1:])):
            raise InputError(f"phases: `until` must increase, got {ends}")
        if ends[-1] != 1.0:
            raise InputError(f"phases: the last phase must end at until=1.0, got {ends[-1]}")
        self.bounds = [0] + [int(round(u * self.steps)) for u in ends]
        self.index = -1
        self.mixer = None
        self.last_mixture = None
        self._advance()

    def _check_phase(self, index: int, phase) -> Phase:
        if not isinstance(phase, Phase):
            raise InputError(f"phases[{index}] must be a Phase, got {type(phase).__name__}")
        until = check_float(f"phases[{index}].until", phase.until, 0.0, 1.0, low_open=True)
        if phase.method not in METHODS:
            raise InputError(f"phases[{index}].method must be one of {list(METHODS)}, got {phase.method!r}")
        prior = phase.prior
        if isinstance(prior, Mapping):
            unknown = sorted(set(prior) - set(self.domains))
            if unknown:
                raise InputError(f"phases[{index}].prior names unknown domains {unknown}")
            prior = [float(prior.get(name, 0.0)) for name in self.domains]
        if prior is not None:
            prior = check_weights(f"phases[{index}].prior", prior, self.K)
        if not isinstance(phase.options, Mapping):
            raise InputError(f"phases[{index}].options must be a dict")
        return Phase(until=until, method=phase.method, prior=prior, options=dict(phase.options))

    def _advance(self) -> None:
        """Start the next phase that has steps (its prior: its own, else the last mixture)."""
        while self.index + 1 < len(self.phases):
            self.index += 1
            length = self.bounds[self.index + 1] - self.bounds[self.index]
            if length <= 0:
                continue
            phase = self.phases[self.index]
            prior = phase.prior if phase.prior is not None else self.last_mixture
            self.mixer = create(phase.method, self.domains, length, prior=prior,
                                seed=self.seed + self.index, **self.common, **phase.options)
            return
        self.mixer = None

    # ---- protocol
    @property
    def phase(self) -> int:
        return self.index

    @property
    def step(self) -> int:
        if self.mixer is None:
            return self.steps
        return self.bounds[self.index] + self.mixer.step

    @property
    def done(self) -> bool:
        return self.mixer is None

    @property
    def mixture(self) -> np.ndarray:
        return (self.mixer.mixture if self.mixer is not None else self.last_mixture).copy()

    def ask(self) -> np.ndarray:
        if self.mixer is None:
            return self.last_mixture.copy()
        return self.mixer.ask()

    @property
    def next_steps(self) -> int:
        return 0 if self.mixer is None else self.mixer.next_steps

    def tell(self, losses, steps: int | None = None) -> None:
        """As OnlineMixer.tell; `steps` may not cross into the next phase."""
        if self.mixer is None:
            raise InputError("losses: the schedule is done; nothing to tell")
        if steps is not None and check_int("steps", steps) > self.mixer.remaining:
            raise InputError(f"steps ({steps}) exceed the {self.mixer.remaining} steps left in phase {self.index}; "
                             f"a segment may not cross into the next phase")
        self.mixer.tell(losses, steps=steps)
        if self.mixer.done:
            self.last_mixture = self.mixer.mixture.copy()
            self._advance()

    # ---- state
    def config(self) -> dict:
        return {
            "method": self.method, "domains": list(self.domains), "steps": self.steps, "seed": self.seed,
            "common": {key: to_json(value) if value is not None else None for key, value in self.common.items()},
            "phases": [{"until": p.until, "method": p.method, "prior": to_json(p.prior),
                        "options": {k: to_json(v) if isinstance(v, np.ndarray) else v
                                    for k, v in p.options.items()}} for p in self.phases],
        }

    def state_dict(self) -> dict:
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION, **self.config(),
            "index": self.index, "last_mixture": to_json(self.last_mixture),
            "mixer": None if self.mixer is None else self.mixer.state_dict(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        try:
            self.index = int(state["index"])
            self.last_mixture = from_json(state["last_mixture"])
            self.mixer = None if state["mixer"] is None else load_mixer(state["mixer"])
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"state: malformed schedule state ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def from_state(cls, state: Mapping) -> "Schedule":
        try:
            phases = [Phase(until=p["until"], method=p["method"], prior=p["prior"], options=p["options"])
                      for p in state["phases"]]
            schedule = cls(state["domains"], state["steps"], phases, seed=state["seed"],
                           **{k: v for k, v in state["common"].items()})
        except (KeyError, TypeError) as exc:
            raise InputError(f"state: malformed schedule state ({type(exc).__name__}: {exc})") from exc
        schedule.load_state_dict(state)
        return schedule

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_json(path, self.state_dict())

    def __repr__(self) -> str:
        return f"Schedule(K={self.K}, steps={self.steps}, phase={self.index}/{len(self.phases)}, step={self.step})"
