"""The mixer base class: argument validation, bounds, the ask/tell bookkeeping and JSON state.

Subclasses implement three hooks and stay free of bookkeeping:

    _plan()                  -> (proportions, steps) of the next segment (called once per ask)
    _observe(p, n, losses)   update from the (K,) losses measured after n steps trained with p
    _get_state() / _set_state(dict)   their dynamic state, JSON-ready

and set `self.mixture` (the current non-probe mixture) whenever it changes.

One module on purpose (about 430 lines): the ask/tell protocol, its bookkeeping, caps and saved
state are what every mixer shares; a mixer's own logic lives in its subclass's module.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mixopt.errors import InputError, StoreError
from mixopt.io import atomic_write_json

STATE_FORMAT = "mixopt.online"
STATE_VERSION = 1
_TOLERANCE = 1e-9


# ---------------------------------------------------------------- validation helpers


def check_int(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float(name: str, value, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise InputError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise InputError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def check_vector(name: str, values, length: int, *, nonnegative: bool = False,
                 allow_nan: bool = False) -> np.ndarray:
    if isinstance(values, (str, bytes)):
        raise InputError(f"{name} must be {length} numbers, got a string")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be {length} numbers: {exc}") from exc
    if array.shape != (length,):
        raise InputError(f"{name} must have shape ({length},) (one value per domain), got shape {array.shape}")
    bad = ~np.isfinite(array) & ~(np.isnan(array) if allow_nan else False)
    if np.any(bad):
        what = "finite or NaN" if allow_nan else "finite"
        raise InputError(f"{name} must be {what}; bad values at domains {np.flatnonzero(bad).tolist()}")
    if nonnegative and np.any(array < 0):
        raise InputError(f"{name} must be >= 0; negative at domains {np.flatnonzero(array < 0).tolist()}")
    return array


def check_weights(name: str, values, length: int) -> np.ndarray:
    """Non-negative weights with a positive sum, normalised to sum to one. Weights that already sum
    to one within rounding are kept as they are: dividing by a sum of 1 - 1e-16 again would move
    them in the last bit, and a mixer rebuilt from its saved prior must get the same prior back."""
    array = check_vector(name, values, length, nonnegative=True)
    total = array.sum()
    if not total > 0:
        raise InputError(f"{name} must have a positive sum")
    return array if abs(total - 1.0) <= 1e-12 else array / total


def check_domains(domains) -> list[str]:
    if isinstance(domains, bool):
        raise InputError(f"domains must be a list of names or a count, got {domains!r}")
    if isinstance(domains, numbers.Integral):
        count = check_int("domains", domains, minimum=1)
        return [f"d{index}" for index in range(count)]
    if isinstance(domains, (str, bytes)) or not isinstance(domains, Sequence):
        raise InputError(f"domains must be a list of names or a count, got {type(domains).__name__}")
    names = list(domains)
    if not names:
        raise InputError("domains must name at least one domain")
    for name in names:
        if not isinstance(name, str) or not name:
            raise InputError(f"domains must be non-empty strings, got {name!r}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"domains must be unique, repeated: {duplicates}")
    return names


# ---------------------------------------------------------------- simplex with bounds


def project(weights: np.ndarray, lower: np.ndarray | None, upper: np.ndarray | None) -> np.ndarray:
    """Scale non-negative weights onto {sum = 1, lower <= p <= upper}: p = clip(c * q, lower, upper).

    This is the KL (multiplicative) projection, natural for exponentiated-gradient mixers: ratios
    between unclipped domains are kept. Exact (piecewise-linear root), O(K^2) only with bounds."""
    q = np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    if lower is None and upper is None:
        total = q.sum()
        return q / total if total > 0 else np.full(len(q), 1.0 / len(q))
    lo = np.zeros(len(q)) if lower is None else lower
    hi = np.ones(len(q)) if upper is None else upper
    if not q.max() > 0:
        q = np.ones(len(q))
    q = q / q.max()                       # no overflow in the breakpoints below
    q = np.where(q > 1e-300, q, 0.0)
    positive = q > 0
    with np.errstate(divide="ignore"):
        candidates = np.concatenate([lo[positive] / q[positive], hi[positive] / q[positive], [0.0]])
    candidates = np.unique(candidates)
    totals = np.clip(candidates[:, None] * q[None, :], lo, hi).sum(axis=1)
    index = int(np.searchsorted(totals, 1.0))
    if index >= len(candidates):          # even the largest scale stays below 1: all at upper
        return _fix_sum(np.where(positive, hi, lo), lo, hi)
    if index == 0 or totals[index] == totals[index - 1]:
        scale = candidates[index]
    else:
        a, b = candidates[index - 1], candidates[index]
        fa, fb = totals[index - 1], totals[index]
        scale = a + (1.0 - fa) * (b - a) / (fb - fa)
    return _fix_sum(np.clip(scale * q, lo, hi), lo, hi)


def _fix_sum(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    error = 1.0 - p.sum()
    if error == 0.0:
        return p
    room = (hi - p) if error > 0 else (p - lo)
    total = room.sum()
    if total > 0:
        p = np.clip(p + error * room / total, lo, hi)
    return p


# ---------------------------------------------------------------- JSON helpers


def to_json(array) -> list | None:
    """A float array as nested lists with NaN written as null (state files are strict JSON)."""
    if array is None:
        return None
    array = np.asarray(array, dtype=np.float64)
    return np.where(np.isnan(array), None, array).tolist() if array.size else array.tolist()


def from_json(values) -> np.ndarray:
    if values is None:
        return None
    array = np.array(values, dtype=object)
    array = np.where(array == None, np.nan, array).astype(np.float64)  # noqa: E711
    return array


def _option_to_json(value):
    if isinstance(value, np.ndarray):
        return to_json(value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


# ---------------------------------------------------------------- the base class


class OnlineMixer:
    """One online mixer: `ask()` proportions for the next `next_steps` steps, `tell(losses)` after.

    Common keyword options of every method: `min_weights`, `max_weights` (per-domain bounds, a
    scalar or K values) and `objective` (K non-negative weights of the per-domain losses in the
    objective; equal weights when omitted)."""

    method: ClassVar[str] = "base"
    #: method-specific options and their defaults (None: computed from the other arguments)
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, domains, steps, prior=None, seed=0, *, min_weights=None, max_weights=None,
                 objective=None, **options):
        self.domains = check_domains(domains)
        self.K = len(self.domains)
        self.steps = check_int("steps", steps, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.lower = None if min_weights is None else self._bound("min_weights", min_weights)
        self.upper = None if max_weights is None else self._bound("max_weights", max_weights)
        lo = np.zeros(self.K) if self.lower is None else self.lower
        hi = np.ones(self.K) if self.upper is None else self.upper
        if np.any(lo > hi + _TOLERANCE):
            raise InputError(f"min_weights exceed max_weights at domains {np.flatnonzero(lo > hi).tolist()}")
        if lo.sum() > 1 + _TOLERANCE:
            raise InputError(f"min_weights sum to {lo.sum():.6g} > 1: no mixture satisfies them")
        if hi.sum() < 1 - _TOLERANCE:
            raise InputError(f"max_weights sum to {hi.sum():.6g} < 1: no mixture satisfies them")
        self.objective = (np.full(self.K, 1.0 / self.K) if objective is None
                          else check_weights("objective", objective, self.K))
        if prior is None:
            self.prior = self.project(np.ones(self.K))
            self._prior_given = False
        else:
            self.prior = check_weights("prior", prior, self.K)
            outside = (self.prior < lo - 1e-7) | (self.prior > hi + 1e-7)
            if np.any(outside):
                raise InputError(f"prior lies outside min_weights/max_weights at domains "
                                 f"{[self.domains[i] for i in np.flatnonzero(outside)]}")
            self._prior_given = True
        defaults = self._defaults(options)
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            known = ", ".join(sorted(defaults)) or "none"
            raise InputError(f"unknown option(s) {unknown} for method {self.method!r} (its options: {known}; "
                             f"all methods: min_weights, max_weights, objective)")
        self.options = {**defaults, **options}
        self.rng = np.random.default_rng(self.seed)
        self.step = 0           # training steps consumed (told)
        self.round = 0          # tell() calls so far
        self._pending: tuple[np.ndarray, int] | None = None
        self.mixture = self.prior.copy()
        self._configure()

    # ---- hooks
    def _defaults(self, options: Mapping) -> dict[str, Any]:
        """The method's options with their defaults. A method whose defaults depend on the options
        given (auto: its preset with a Jacobian) overrides this."""
        return self.defaults

    def _configure(self) -> None:
        """Validate self.options and set up the initial state."""

    def _plan(self) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _observe(self, p: np.ndarray, n: int, losses: np.ndarray) -> None:
        """Default: nothing to learn."""

    def _exact_segment(self) -> bool:
        """True if the pending segment must be trained for exactly `next_steps` (tell's `steps`)."""
        return False

    def _get_state(self) -> dict:
        return {}

    def _set_state(self, state: dict) -> None:
        pass

    # ---- public protocol
    @property
    def done(self) -> bool:
        """True once `steps` training steps have been told (asking afterwards changes nothing)."""
        return self.step >= self.steps

    @property
    def remaining(self) -> int:
        return self.steps - self.step

    def ask(self) -> np.ndarray:
        """(K,) proportions for the next `next_steps` training steps (the same until `tell`)."""
        self._ensure_pending()
        return self._pending[0].copy()

    @property
    def next_steps(self) -> int:
        """Training steps for the proportions of the pending `ask()` (0: evaluate only)."""
        self._ensure_pending()
        return self._pending[1]

    def tell(self, losses, steps: int | None = None) -> None:
        """Report (K,) per-domain eval losses measured after training `next_steps` steps.

        `steps`: the steps actually trained on the asked proportions, for a trainer that evaluates
        on its own interval instead of after `next_steps` (0 to `remaining`; None: `next_steps`).
        A segment whose length the method relies on (aioli's probes) must be trained as asked."""
        if self._pending is None:
            raise InputError("losses: tell() needs a pending ask(); call ask() before each tell()")
        losses = check_vector("losses", losses, self.K, allow_nan=True)
        p, n = self._pending
        if steps is not None:
            steps = check_int("steps", steps)
            if steps > self.remaining:
                raise InputError(f"steps ({steps}) exceed the {self.remaining} steps left in the run")
            if steps != n and self._exact_segment():
                raise InputError(f"steps: this {self.method} segment must be trained for exactly next_steps "
                                 f"({n}) steps, got {steps}")
            n = steps
        if self.step < self.steps or n > 0:
            self._observe(p, n, losses)
        self.step += n
        self.round += 1
        self._pending = None

    def _ensure_pending(self) -> None:
        if self._pending is not None:
            return
        if self.step >= self.steps:
            self._pending = (self.mixture.copy(), 0)
            return
        p, n = self._plan()
        n = int(min(max(n, 0), self.steps - self.step))
        p = np.asarray(p, dtype=np.float64)
        if p.shape != (self.K,) or not np.all(np.isfinite(p)) or abs(p.sum() - 1) > 1e-6 or np.any(p < -1e-12):
            raise AssertionError(f"{self.method} planned an invalid mixture {p}")  # a bug, not bad input
        self._pending = (np.maximum(p, 0.0), n)

    def project(self, weights) -> np.ndarray:
        """Non-negative weights -> a mixture on the simplex inside the bounds (multiplicative)."""
        return project(weights, self.lower, self.upper)

    def objective_value(self, losses) -> float:
        """The objective of (K,) losses: the objective-weighted mean over the evaluated domains."""
        losses = np.asarray(losses, dtype=np.float64)
        seen = ~np.isnan(losses)
        if not np.any(seen):
            return float("nan")
        w = self.objective[seen]
        return float((w * losses[seen]).sum() / w.sum())

    # ---- state
    def config(self) -> dict:
        options = {key: _option_to_json(value) for key, value in self.options.items()}
        return {
            "method": self.method,
            "domains": list(self.domains),
            "steps": self.steps,
            "prior": to_json(self.prior) if self._prior_given else None,
            "seed": self.seed,
            "min_weights": to_json(self.lower),
            "max_weights": to_json(self.upper),
            "objective": to_json(self.objective),
            "options": options,
        }

    def state_dict(self) -> dict:
        """Everything needed to resume exactly: configuration, counters, random stream, learned state."""
        pending = None if self._pending is None else {"p": to_json(self._pending[0]), "n": self._pending[1]}
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            **self.config(),
            "step": self.step,
            "round": self.round,
            "pending": pending,
            "mixture": to_json(self.mixture),
            "rng": self.rng.bit_generator.state,
            "state": self._get_state(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore the dynamic state saved by `state_dict()` of a mixer with the same configuration."""
        state = _check_state(state)
        mine = json.loads(json.dumps(self.config()))
        theirs = {key: state.get(key) for key in mine}
        if theirs != mine:
            differing = sorted(key for key in mine if theirs[key] != mine[key])
            raise InputError(f"state: saved for a different mixer configuration (differs in {differing})")
        try:
            self.step = check_int("state.step", state["step"])
            self.round = check_int("state.round", state["round"])
            pending = state["pending"]
            self._pending = None if pending is None else (from_json(pending["p"]), int(pending["n"]))
            self.mixture = from_json(state["mixture"])
            self.rng = np.random.default_rng()
            self.rng.bit_generator.state = state["rng"]
            self._set_state(state["state"])
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"state: malformed mixer state ({type(exc).__name__}: {exc})") from exc

    def save(self, path: str | os.PathLike) -> Path:
        """Write the state atomically as JSON (a reader sees the old file or the new one)."""
        return atomic_write_json(path, self.state_dict())

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(method={self.method!r}, K={self.K}, steps={self.steps}, "
                f"step={self.step}, round={self.round})")

    def _bound(self, name: str, value) -> np.ndarray:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = np.full(self.K, float(value))
        array = check_vector(name, value, self.K, nonnegative=True)
        if np.any(array > 1):
            raise InputError(f"{name} must be <= 1")
        return array


def _check_state(state) -> Mapping:
    if not isinstance(state, Mapping):
        raise InputError(f"state must be a dict from state_dict() or a path, got {type(state).__name__}")
    if state.get("format") != STATE_FORMAT:
        raise InputError(f"state: not a mixopt online mixer state (format={state.get('format')!r})")
    if state.get("version") != STATE_VERSION:
        raise InputError(f"state: unsupported version {state.get('version')!r} (this mixopt reads {STATE_VERSION})")
    return state


def read_state(source) -> Mapping:
    """A state dict, or the JSON file a mixer saved."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"cannot read mixer state {path}: {exc.strerror or exc}") from exc
        try:
            source = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StoreError(f"mixer state {path} is not valid JSON: {exc}") from exc
    return _check_state(source)
