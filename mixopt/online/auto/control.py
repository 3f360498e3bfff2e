"""How `auto` moves: relative gains in, a new mixture out (the control law of
mixopt/online/auto/__init__.py: the step, the leak, the tilt cap and the guard)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mixopt.online.auto.settings import AutoSettings

RHO_MAX = 3.0              # relative gains beyond this are estimation noise, not information


def relative_gains(gains: np.ndarray, mixture: np.ndarray, scale: float) -> np.ndarray:
    """rho = (G - p . G) / scale: each domain's gain over the current mixture's, in units of the
    objective's absolute rate `scale` = sum_j w_j |r_j|."""
    return (gains - (mixture * gains).sum()) / scale


def sensitivity_tilt(sensitivity: np.ndarray, objective: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """A prior tilt in rho units from the static surrogate's gradient at the prior ((K,), or its
    (K, K) per-domain Jacobian weighted by the objective): down the gradient, largest entry 0.5."""
    s = objective @ sensitivity if sensitivity.ndim == 2 else sensitivity
    centred = s - (prior * s).sum()
    top = np.abs(centred).max()
    return np.zeros(len(s)) if top == 0 else -0.5 * centred / top


def next_logits(theta: np.ndarray, theta_prior: np.ndarray, rho: np.ndarray, settings: AutoSettings) -> np.ndarray:
    """theta + clip(eta rho, +-max_step) - leak (theta - theta_prior), kept within +-max_tilt of theta_prior."""
    s = settings
    step = np.clip(s.eta * rho, -s.max_step, s.max_step) - s.leak * (theta - theta_prior)
    return np.clip(theta + step, theta_prior - s.max_tilt, theta_prior + s.max_tilt)


def climbing(latest: np.ndarray, lowest: np.ndarray, noise: np.ndarray, mixture: np.ndarray,
             prior: np.ndarray, guard: float) -> np.ndarray:
    """The guard's domains: at or below their prior share, with the newest clean loss (`latest`)
    more than `guard` noise sds above their lowest (0: none). Their loss climbs while they train,
    which the own-data model reads as "its own data hurts it"; where other domains' data hurts
    them (negative transfer) that reading is wrong, and cutting them further lets the others push
    their loss up faster still (a cliff). A domain above its prior may be over-repeated instead
    (what max_weights bounds)."""
    if guard == 0:
        return np.zeros(len(mixture), dtype=bool)
    with np.errstate(invalid="ignore"):
        rising = np.nan_to_num(latest - lowest - guard * np.sqrt(noise), nan=-1.0) > 0
    return rising & (mixture <= prior * (1 + 1e-9))


def hold(old: np.ndarray, new: np.ndarray, held: np.ndarray, project: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`new`, except that no `held` domain gets less than its share in `old`; the others make room
    in proportion to their shares (then `project` onto the bounds)."""
    if not held.any() or held.all():
        return new
    kept = np.where(held, np.maximum(new, old), new)
    room = 1.0 - kept[held].sum()
    free = new[~held].sum()
    if room <= 0 or free <= 0:
        return new
    kept[~held] *= room / free
    return project(kept)
