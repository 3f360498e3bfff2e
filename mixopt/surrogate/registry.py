"""The registry of surrogate kinds: name -> factory(seed). The single-model kinds are registered
here; the package's __init__ adds the ensembles, which build their members through this same
registry (so the ensemble module never imports its package back)."""

from __future__ import annotations

from typing import Callable

from mixopt.errors import InputError
from mixopt.surrogate.base import Surrogate
from mixopt.surrogate.gp import GaussianProcessSurrogate
from mixopt.surrogate.lightgbm_model import LightGBMSurrogate
from mixopt.surrogate.linear import ConstantSurrogate, LinearSurrogate
from mixopt.surrogate.mixing_law import MixingLawSurrogate

SURROGATES: dict[str, Callable[[int], Surrogate]] = {
    "mixing-law": lambda seed: MixingLawSurrogate(seed=seed, features="w", l2=1e-4),
    "mixing-law-wlog": lambda seed: MixingLawSurrogate(seed=seed, features="wlog", l2=1e-3),
    "constant": lambda seed: ConstantSurrogate(seed=seed),
    "gp": lambda seed: GaussianProcessSurrogate(seed=seed),
    "linear": lambda seed: LinearSurrogate(seed=seed),
    "linear-wlog": lambda seed: LinearSurrogate(seed=seed, ridge=None, features="wlog"),
    "quadratic": lambda seed: LinearSurrogate(seed=seed, ridge=None, features="quad"),
    "lightgbm": lambda seed: LightGBMSurrogate(seed=seed),
    "regmix-lightgbm": lambda seed: LightGBMSurrogate(seed=seed, regmix=True),
    "quadratic-wlog": lambda seed: LinearSurrogate(seed=seed, ridge=None, features="wlogquad"),
}


def make_surrogate(kind: str, seed: int = 0) -> Surrogate:
    if kind not in SURROGATES:
        raise InputError(f"unknown surrogate {kind!r}; choose one of {sorted([*SURROGATES, 'auto'])}")
    return SURROGATES[kind](seed)
