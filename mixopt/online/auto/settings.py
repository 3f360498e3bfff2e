"""Every option of `auto` in one place: AutoSettings (default, unit, meaning) and its presets.

    SIMULATOR      create("auto", ...): large tilt pairs (free where losses depend on cumulative
                   exposure only) and the wide control with the guard
    WITH_JACOBIAN  create("auto", ..., jacobian=J): the same tilts, the narrow control, no guard
    TRAINING       a real training run (mixopt.online.training_options("auto")): gentle tilt pairs
                   and the narrow control

Options given to create("auto", ...) replace the preset's fields of the same name. The mixer keeps
the checked settings (`AutoSettings.checked`) and saves them as its options. Why each preset holds
what it holds: docs/decisions/0005 (control and guard), 0006 (Jacobian), 0007 (real training).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from mixopt.errors import InputError
from mixopt.online.base import check_float, check_int

CLEAN_KEEP = 12            # recent clean evaluations kept (rate fits and interpolation)
RATE_DEGREE = 2            # the local rate fit: a polynomial of this degree in log step


def _option(default, unit: str, meaning: str):
    return field(default=default, metadata={"unit": unit, "meaning": meaning})


@dataclass(frozen=True)
class AutoSettings:
    """The options of `auto` (see mixopt/online/auto/__init__.py for the model and control law
    they belong to). Array fields are None in every preset; a mixer's own settings hold them."""

    # the run's rhythm and its tilt pairs
    rounds: int = _option(100, "evaluations", "evaluations over the run (one ask/tell each)")
    round_steps: int | None = _option(None, "steps", "steps per round; None: steps // rounds")
    perturb: float = _option(1.0, "log factor", "a tilt pair's tilt: p exp(+-perturb s) (1: x2.7 either way)")
    taper: float = _option(0.15, "share of the run", "no tilt pair starts in this last share of the run")
    # estimation: rates, noise, spikes and the ridge fits of the tilt pairs
    window: int = _option(10, "evaluations", "clean evaluations in each domain's rate fit")
    forget: float = _option(0.8, "weight", "weight of the old noise estimate in each update (0, 1]")
    outlier: float = _option(4.0, "noise sds", "loss-spike threshold and Huber cut of the pair fits; 0: off")
    own_rate_scale: float = _option(0.3, "objective rates", "prior sd of eps_i, the own-data rate correction")
    own_scale: float = _option(0.15, "share", "prior sd of k, the own-data share (prior mean 1)")
    transfer_scale: float = _option(0.3, "objective rates", "prior sd of delta_i, the transfer correction")
    jacobian: np.ndarray | None = _option(
        None, "loss per unit share", "(K, K) J[i, j] = dL_j / dp_i of the proxies at the prior; None: own-data model")
    jacobian_weight: float = _option(1.0, "weight", "share of the Jacobian's response; the rest own-data [0, 1]")
    sensitivity: np.ndarray | None = _option(
        None, "loss per unit share", "(K,) or (K, K) static surrogate's gradient at the prior: a fading tilt")
    # control: how the mixture moves on the estimated gains
    eta: float = _option(0.3, "log share per relative gain", "gain of the exponentiated-gradient step")
    max_step: float = _option(0.5, "log share", "largest move of one domain's log share per round")
    leak: float = _option(0.03, "per round", "pull of the log shares back towards the prior's [0, 1]")
    max_tilt: float = _option(float(np.log(4.0)), "log factor", "the mixture stays within exp(+-max_tilt) of the prior")
    guard: float = _option(4.0, "noise sds", "a domain at or below its prior whose loss climbs this far stays; 0: off")

    def as_options(self) -> dict[str, Any]:
        """{option: value} in the form create("auto", **options) takes and a saved state holds."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def checked(self, K: int, steps: int) -> AutoSettings:
        """These settings validated for a mixer of K domains and `steps` steps (InputError naming
        the option), with numbers as int / float, arrays as float64 and round_steps resolved."""
        rounds = check_int("rounds", self.rounds, 1)
        round_steps = (max(1, steps // rounds) if self.round_steps is None
                       else check_int("round_steps", self.round_steps, 1))
        window = check_int("window", self.window, RATE_DEGREE + 2)
        if window > CLEAN_KEEP:
            raise InputError(f"window must be <= {CLEAN_KEEP}, got {window}")
        return replace(
            self, rounds=rounds, round_steps=round_steps, window=window,
            perturb=check_float("perturb", self.perturb, 0.0, 3.0),
            taper=check_float("taper", self.taper, 0.0, 1.0),
            forget=check_float("forget", self.forget, 0.0, 1.0, low_open=True),
            outlier=check_float("outlier", self.outlier, 0.0),
            own_rate_scale=check_float("own_rate_scale", self.own_rate_scale, 0.0, low_open=True),
            own_scale=check_float("own_scale", self.own_scale, 0.0, low_open=True),
            transfer_scale=check_float("transfer_scale", self.transfer_scale, 0.0, low_open=True),
            jacobian=None if self.jacobian is None else _check_jacobian(self.jacobian, K),
            jacobian_weight=check_float("jacobian_weight", self.jacobian_weight, 0.0, 1.0),
            sensitivity=None if self.sensitivity is None else _check_sensitivity(self.sensitivity, K),
            eta=check_float("eta", self.eta, 0.0),
            max_step=check_float("max_step", self.max_step, 0.0),
            leak=check_float("leak", self.leak, 0.0, 1.0),
            max_tilt=check_float("max_tilt", self.max_tilt, 0.0),
            guard=check_float("guard", self.guard, 0.0),
        )


SIMULATOR = AutoSettings()                                  # the defaults above
WITH_JACOBIAN = replace(SIMULATOR, leak=0.05, max_tilt=float(np.log(3.0)), guard=0.0)   # the narrow control
TRAINING = replace(WITH_JACOBIAN, perturb=0.3)              # gentle tilts (x1.35) and the narrow control
PRESETS = {"simulator": SIMULATOR, "with_jacobian": WITH_JACOBIAN, "training": TRAINING}


def preset_for(options: Mapping) -> AutoSettings:
    """The preset that create("auto", **options) starts from: WITH_JACOBIAN if a `jacobian` is given."""
    return WITH_JACOBIAN if options.get("jacobian") is not None else SIMULATOR


def _check_jacobian(value, K: int) -> np.ndarray:
    try:
        J = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"jacobian must be numbers: {exc}") from exc
    if J.shape != (K, K) or not np.all(np.isfinite(J)):
        raise InputError(f"jacobian must be finite with shape ({K}, {K}), got shape {J.shape}")
    return J


def _check_sensitivity(value, K: int) -> np.ndarray:
    try:
        s = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"sensitivity must be numbers: {exc}") from exc
    if s.shape not in ((K,), (K, K)) or not np.all(np.isfinite(s)):
        raise InputError(f"sensitivity must be finite with shape ({K},) or ({K}, {K}), got shape {s.shape}")
    return s
