"""AutoMixer: the ask/tell protocol around GainEstimator (estimate.py) and the control law (control.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mixopt.online.auto import control
from mixopt.online.auto.estimate import TINY, GainEstimator, PairMiddle
from mixopt.online.auto.settings import SIMULATOR, AutoSettings, preset_for
from mixopt.online.base import OnlineMixer, from_json, to_json


class AutoMixer(OnlineMixer):
    """Greedy exponentiated gradient on own-data gains corrected for transfer: the model and the
    control law are in mixopt/online/auto/__init__.py, the options in AutoSettings.

    Rounds: one evaluation at step 0, then rounds of `round_steps` steps (steps // rounds unless
    given). After two clean evaluations, rounds come in antithetic pairs (p exp(+perturb s), then
    p exp(-perturb s)) until the last `taper` share of the run; every clean evaluation updates the
    estimate and, once a pair is in, steers the mixture."""

    method = "auto"
    defaults = SIMULATOR.as_options()          # with a `jacobian`: WITH_JACOBIAN's (_defaults)

    def _defaults(self, options: Mapping) -> dict[str, Any]:
        return preset_for(options).as_options()

    def _configure(self) -> None:
        self.settings = AutoSettings(**self.options).checked(self.K, self.steps)
        self.options = self.settings.as_options()
        self.estimator = GainEstimator(self.settings, self.objective)
        self.sensitivity_tilt = (np.zeros(self.K) if self.settings.sensitivity is None else
                                 control.sensitivity_tilt(self.settings.sensitivity, self.objective, self.prior))
        self.theta_prior = np.log(np.maximum(self.prior, TINY))
        self.theta = self.theta_prior.copy()
        self.mixture = self.project(np.exp(self.theta))
        self.started = False
        self.phase = 0                           # 1: the next round is a pair's second half
        self.tilt = np.zeros(self.K)             # log-tilt of the pair's first half
        self.rho = np.zeros(self.K)              # the latest relative gains (diagnostics)

    # ------------------------------------------------------------------ plan
    def _plan(self):
        if not self.started:
            return self.mixture.copy(), 0                  # evaluate at step 0
        s = self.settings
        n = s.round_steps
        p = self.mixture
        if self.phase == 1:
            return self.project(p * np.exp(-self.tilt)), n
        end = self.steps * (1 - s.taper)
        if s.perturb == 0 or self.K < 2 or self.step + 2 * n > end or len(self.estimator.cleans) < 2:
            self.tilt = np.zeros(self.K)
            return p.copy(), n
        signs = np.ones(self.K)
        signs[: self.K // 2] = -1.0
        signs = self.rng.permutation(signs)
        if self.K % 2:
            signs[self.rng.integers(self.K)] = 0.0
        self.tilt = s.perturb * signs
        return self.project(p * np.exp(self.tilt)), n

    # ------------------------------------------------------------------ observe
    def _observe(self, q, n, losses) -> None:
        t = self.step + n
        if not self.started:
            self.started = True                            # the step-0 level: log t undefined
            return
        if n == 0:                                         # told that nothing was trained: no new step
            return
        if self.phase == 0 and np.any(self.tilt != 0):    # a pair's middle
            self.estimator.add_middle(PairMiddle(t, losses.copy(), (q - self.mixture) * n, self.mixture.copy()))
            self.phase = 1
            return
        self.phase = 0
        self.tilt = np.zeros(self.K)
        self.estimator.add_clean(t, losses)
        self._update(t)

    def _update(self, t: int) -> None:
        """Steer on the gains at step t, once a pair is in (until then nothing says that the mixture matters)."""
        estimator = self.estimator
        if not estimator.pairs:
            return
        rate = estimator.rates(t)
        estimator.rate = rate
        scale = float((self.objective * np.abs(rate)).sum())
        if not scale > 0:
            return
        gains = self._gains(rate)
        rho = (control.relative_gains(gains, self.mixture, scale)
               + self.sensitivity_tilt / (1.0 + estimator.pairs / 3.0))
        self._steer(rho)

    def _gains(self, rate: np.ndarray) -> np.ndarray:
        """G: the estimated gain of one more step of each domain (a hook: benchmarks feed true gains)."""
        return self.estimator.gains(rate, self.mixture)

    def _steer(self, rho: np.ndarray) -> None:
        """The control law: one exponentiated-gradient step on the relative gains, then the guard."""
        self.rho = np.clip(rho, -control.RHO_MAX, control.RHO_MAX)
        theta = control.next_logits(self.theta, self.theta_prior, self.rho, self.settings)
        proposed = self.project(np.exp(theta - theta.max()))
        self.mixture = control.hold(self.mixture, proposed, self._climbing(), self.project)
        self.theta = np.log(np.maximum(self.mixture, TINY))

    def _climbing(self) -> np.ndarray:
        """The domains the guard holds at their current share (control.climbing)."""
        estimator = self.estimator
        if not estimator.cleans:
            return np.zeros(self.K, dtype=bool)
        return control.climbing(estimator.cleans[-1].losses, estimator.lowest, estimator.noise, self.mixture,
                                self.prior, self.settings.guard)

    # ------------------------------------------------------------------ state
    def _get_state(self) -> dict:
        return {"theta": to_json(self.theta), "tilt": to_json(self.tilt), "rho": to_json(self.rho),
                "started": self.started, "phase": self.phase, **self.estimator.state()}

    def _set_state(self, state: dict) -> None:
        self.theta = from_json(state["theta"])
        self.tilt = from_json(state["tilt"])
        self.rho = from_json(state["rho"])
        self.started = bool(state["started"])
        self.phase = int(state["phase"])
        self.estimator.set_state(state)
