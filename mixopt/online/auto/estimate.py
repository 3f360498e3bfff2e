"""What `auto` believes: each domain's rate, the evaluation noise, and the gains the tilt pairs imply.

GainEstimator keeps the recent clean evaluations (no exposure deviation outstanding) and the
middles of tilt pairs not yet used; from them it fits each domain's rate (a quadratic in log step),
screens loss spikes, and folds every pair into two ridge regressions: eps (per domain: the part of
its rate that its own data buys) and (k, delta) (the own-data share and a per-domain transfer
correction). `gains` turns them into G, the gain of one more step of each domain. The model and
its symbols: mixopt/online/auto/__init__.py.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mixopt.online.auto.settings import CLEAN_KEEP, RATE_DEGREE, AutoSettings
from mixopt.online.base import from_json, to_json

TINY = 1e-12
USABLE_RATE = 0.2          # a Jacobian column shares out a rate only if p . J[:, j] < -this * p . |J[:, j]|


class Evaluation(NamedTuple):
    """A clean evaluation: the losses at `step` with no exposure deviation outstanding."""

    step: int
    losses: np.ndarray


class PairMiddle(NamedTuple):
    """The middle evaluation of a tilt pair: the first half trained, the second not yet."""

    step: int
    losses: np.ndarray
    deviation: np.ndarray      # D = (q - p) * n: steps of each domain beyond what p would have given
    mixture: np.ndarray        # p, the mixture the pair tilts around


class Interpolation(NamedTuple):
    """The losses at a step interpolated from the clean evaluations around it."""

    value: np.ndarray          # (K,)
    weight_sq: float           # sum of the squared weights: its noise variance in units of one evaluation's


class PairReading(NamedTuple):
    """One pair's middle read against its interpolation (unseen domains: 0)."""

    excess: np.ndarray         # y: each domain's loss above its interpolation
    seen: np.ndarray           # evaluated, with a known noise level
    rate: np.ndarray           # each domain's rate at the middle
    objective_rate: float      # R = w . rate
    noise: np.ndarray          # per-domain noise variance, no domain quieter than the median
    weight_sq: float           # the interpolation's, see Interpolation
    residual: float            # w . y ~ -G . D
    variance: float            # the residual's (per-domain errors as if fully correlated)


class RidgePrior(NamedTuple):
    """The prior of (k, delta): mean (1, 0, ..., 0), precision 1 / sd^2."""

    mean: np.ndarray
    precision: np.ndarray


class GainPosterior(NamedTuple):
    mean: np.ndarray           # (k, delta_1, ..., delta_K)
    covariance: np.ndarray


# ---------------------------------------------------------------- the transfer model


def response(jacobian: np.ndarray | None, weight: float, p: np.ndarray) -> np.ndarray | None:
    """a[i, j]: what one more step of domain i does to domain j's loss, in units of j's rate at
    mixture p (one step of the mixture p is worth sum_i p_i a[i, j] = 1 of them). Without a
    Jacobian, None: every domain learns only from its own data, a = diag(1 / p).
    With one (J[i, j] = dL_j / dp_i of the proxies' final losses at the prior), a[:, j] =
    J[:, j] / (p . J[:, j]): the transfer structure of the static surrogate, renormalised to the
    current mixture; a column whose loss does not fall at p (p . J[:, j] >= -USABLE_RATE sum_i
    p_i |J[i, j]|: no usable rate to share out) stays own-only. `weight` w < 1 mixes in the
    own-data model: w a + (1 - w) diag(1 / p), for a J estimated from few proxies."""
    if jacobian is None:
        return None
    J = jacobian
    along = p @ J
    size = p @ np.abs(J)
    usable = along < -USABLE_RATE * size
    own = np.diag(1.0 / p)
    a = own.copy()
    a[:, usable] = J[:, usable] / along[usable]
    return a if weight == 1.0 else weight * a + (1.0 - weight) * own


def effect(a: np.ndarray | None, D: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(a^T D)_j: the exposure deviation D as steps' worth of each domain's rate."""
    return D / p if a is None else D @ a


def spread(a: np.ndarray | None, v: np.ndarray, p: np.ndarray) -> np.ndarray:
    """a @ v: per-domain values (rates) spread back to the domains whose data buys them."""
    return v / p if a is None else a @ v


# ---------------------------------------------------------------- the estimator


class GainEstimator:
    """Rates, noise and the pairs' ridge fits of one run; `gains(rate, p)` is what they imply."""

    def __init__(self, settings: AutoSettings, objective: np.ndarray):
        self.settings = settings
        self.objective = objective
        K = len(objective)
        self.K = K
        self.cleans: list[Evaluation] = []       # the recent clean evaluations
        self.middles: list[PairMiddle] = []      # pairs' middles not yet used
        self.noise = np.full(K, np.nan)          # eval noise variance per domain (leave-one-out)
        self.own_P = np.zeros(K)                 # ridge sums for eps (per domain), never forgotten
        self.own_q = np.zeros(K)
        self.gain_P = np.zeros((K + 1, K + 1))   # ridge sums for (k, delta), never forgotten
        self.gain_q = np.zeros(K + 1)
        self.pairs = 0
        self.spikes = 0                          # clean evaluations dropped as loss spikes
        self.lowest = np.full(K, np.nan)         # each domain's lowest clean loss so far (the guard)
        self.own_rate = np.zeros(K)              # diagnostics of the latest gains: eps, k, delta, rates
        self.own_share = 1.0
        self.transfer = np.zeros(K)
        self.rate = np.zeros(K)

    # ---- evaluations in
    def add_middle(self, middle: PairMiddle) -> None:
        self.middles.append(middle)

    def add_clean(self, step: int, losses: np.ndarray) -> None:
        """A clean evaluation: screen and keep it, update the noise, fold the pairs it completes."""
        self.cleans = (self.cleans + [Evaluation(step, losses.copy())])[-CLEAN_KEEP:]
        self.lowest = np.fmin(self.lowest, losses)
        self._update_noise()
        while self.middles and self._use_middle(self.middles[0]):
            self.middles.pop(0)

    # ---- interpolation from clean evaluations (cubic in log step, two on each side)
    def interpolate(self, t: float, exclude: float | None = None) -> Interpolation | None:
        """The losses at step t, or None without 1 clean evaluation before and 2 after (with
        `outlier` on and no `exclude`: 4 after, so that its neighbours are screened)."""
        before = [c for c in self.cleans if c.step < t and c.step != exclude][-2:]
        later = [c for c in self.cleans if c.step > t and c.step != exclude]
        after = later[:2]
        if exclude is None and self.settings.outlier > 0 and len(later) < 4:
            return None                                            # its neighbours are not screened yet
        if len(after) < 2 or not before:
            return None
        nodes = np.log([c.step for c in before + after])
        x = np.log(t)
        diff = x - nodes
        w = np.array([np.prod(np.delete(diff, i)) / np.prod(nodes[i] - np.delete(nodes, i))
                      for i in range(len(nodes))])
        values = np.stack([c.losses for c in before + after])
        return Interpolation((w[:, None] * values).sum(axis=0), float((w * w).sum()))

    def _update_noise(self) -> None:
        """Screen the third-newest clean evaluation against its neighbours (cubic through two on
        each side) and fold its error into the noise estimates. With `outlier` = c > 0: a jump of
        the objective by more than c noise sds drops the evaluation (a loss spike), and no error
        counts for more than c^2 times the current variance. (A single domain's jump is kept: with
        little noise, curvature that the cubic misses looks like one, and dropping it would read as
        a difference between domains.)"""
        if len(self.cleans) < 5:
            return
        screened = self.cleans[-3]
        fit = self.interpolate(screened.step, exclude=screened.step)
        if fit is None:
            return
        error = screened.losses - fit.value
        e2 = error ** 2 / (1.0 + fit.weight_sq)
        c = self.settings.outlier
        known = ~np.isnan(self.noise)
        if c > 0 and known.sum() >= max(1, self.K // 2):
            sd = np.sqrt(np.where(known, self.noise, 0.0) * (1.0 + fit.weight_sq))
            ok = ~np.isnan(error) & known
            w = self.objective
            if abs(float((w * np.where(ok, error, 0.0)).sum())) > c * float((w * np.where(ok, sd, 0.0)).sum()):
                self.spikes += 1
                self.cleans.pop(-3)
                return
            e2 = np.where(known, np.minimum(e2, c * c * self.noise), e2)
        lam = self.settings.forget
        fresh = np.isnan(self.noise)
        update = np.where(fresh, e2, lam * self.noise + (1 - lam) * e2)
        self.noise = np.where(np.isnan(e2), self.noise, update)

    # ---- the pairs' regressions
    def _use_middle(self, middle: PairMiddle) -> bool:
        """Fold one pair into the eps and (k, delta) regressions; False: wait for clean evaluations after it."""
        fit = self.interpolate(middle.step)
        known = ~np.isnan(self.noise)
        if fit is None or not np.any(known):
            return bool(self.cleans) and self.cleans[0].step > middle.step     # neighbours gone: drop it
        reading = self._read(middle, fit, known)
        self.pairs += 1
        if reading.objective_rate > 0 and reading.variance > 0:
            share = np.maximum(middle.mixture, TINY)
            a = response(self.settings.jacobian, self.settings.jacobian_weight, share)
            self._fold_own_rate(reading, effect(a, middle.deviation, share))      # own-only: D_i / p_i
            # the own-data gains under the eps just updated, per domain whose data buys them
            own = spread(a, self.objective * (reading.rate + reading.objective_rate * self.own_rate_now()), share)
            self._fold_gain(reading, own, middle.deviation)
        return True

    def _read(self, middle: PairMiddle, fit: Interpolation, known: np.ndarray) -> PairReading:
        w = self.objective
        y = middle.losses - fit.value
        seen = ~np.isnan(y) & known
        rate = np.where(seen, self.rates(middle.step), 0.0)
        noise = np.maximum(self.noise, np.median(self.noise[known]))   # no domain quieter than the median
        return PairReading(
            excess=y, seen=seen, rate=rate, objective_rate=float((w * rate).sum()), noise=noise,
            weight_sq=fit.weight_sq, residual=float((w * np.where(seen, y, 0.0)).sum()),
            variance=float((w * np.sqrt(np.where(seen, noise, 0.0))).sum()) ** 2 * (1.0 + fit.weight_sq))

    def _fold_own_rate(self, reading: PairReading, effect_: np.ndarray) -> None:
        """Per domain: y_i + r_i effect_i ~ eps_i x_i with x_i = -R effect_i, Huber-weighted."""
        seen, noise, ww = reading.seen, reading.noise, reading.weight_sq
        x = -reading.objective_rate * effect_
        inverse = np.where(seen, 1.0 / (noise * (1.0 + ww)), 0.0)
        target = np.where(seen, reading.excess + reading.rate * effect_, 0.0)
        c = self.settings.outlier
        if c > 0:                  # Huber weights on the residual's predictive sd (noise + estimate)
            sd = np.sqrt(np.where(seen, noise * (1.0 + ww), 0.0)
                         + x * x / (self.own_P + self.settings.own_rate_scale ** -2))
            z = np.abs(target - self.own_rate_now() * x) / np.maximum(sd, TINY)
            inverse = inverse * np.minimum(1.0, c / np.maximum(z, TINY))
        self.own_P += inverse * x * x
        self.own_q += inverse * x * target

    def _fold_gain(self, reading: PairReading, own: np.ndarray, D: np.ndarray) -> None:
        """The objective: residual ~ x . (k, delta) with x = -(own . D, R D), Huber-weighted."""
        x = -np.concatenate([[own @ D], reading.objective_rate * D])
        weight = 1.0
        c = self.settings.outlier
        if c > 0:
            posterior = self.gain_posterior()
            z = (abs(reading.residual - float(x @ posterior.mean))
                 / np.sqrt(reading.variance + float(x @ posterior.covariance @ x)))
            weight = min(1.0, c / max(z, TINY))
        self.gain_P += weight * np.outer(x, x) / reading.variance
        self.gain_q += weight * x * reading.residual / reading.variance

    # ---- rates: a quadratic in log step through the recent clean evaluations
    def rates(self, t: float) -> np.ndarray:
        """Each domain's current rate of loss decrease per step (0 without enough evaluations)."""
        recent = [c for c in self.cleans if c.step <= t][-self.settings.window:]
        if len(recent) < RATE_DEGREE + 2:
            return np.zeros(self.K)
        X = np.vander(np.log([c.step for c in recent]) - np.log(t), RATE_DEGREE + 1, increasing=True)
        Y = np.stack([c.losses for c in recent])                   # (M, K)
        seen = ~np.isnan(Y)
        A = np.einsum("mk,ma,mb->kab", seen.astype(np.float64), X, X)
        b = np.einsum("mk,ma->ka", np.where(seen, Y, 0.0), X)
        enough = seen.sum(axis=0) >= RATE_DEGREE + 2
        A[~enough] = np.eye(RATE_DEGREE + 1)
        slope = np.linalg.solve(A, b[..., None])[:, 1, 0]
        return np.where(enough, -slope / t, 0.0)

    # ---- the estimates
    def _gain_prior(self) -> RidgePrior:
        s = self.settings
        mean = np.zeros(self.K + 1)
        mean[0] = 1.0
        return RidgePrior(mean, np.concatenate([[s.own_scale ** -2], np.full(self.K, s.transfer_scale ** -2)]))

    def gain_mean(self) -> np.ndarray:
        """(k, delta): the ridge solution of the pairs' objective residuals."""
        prior = self._gain_prior()
        return np.linalg.solve(self.gain_P + np.diag(prior.precision), self.gain_q + prior.precision * prior.mean)

    def gain_posterior(self) -> GainPosterior:
        """(k, delta) and their covariance."""
        prior = self._gain_prior()
        inverse = np.linalg.inv(self.gain_P + np.diag(prior.precision))
        return GainPosterior(inverse @ (self.gain_q + prior.precision * prior.mean), inverse)

    def own_rate_now(self) -> np.ndarray:
        """eps: the ridge solution of the pairs' per-domain residuals."""
        return self.own_q / (self.own_P + self.settings.own_rate_scale ** -2)

    def gains(self, rate: np.ndarray, mixture: np.ndarray) -> np.ndarray:
        """G: the estimated gain of one more step of each domain at `mixture` (the model in
        mixopt/online/auto/__init__.py); keeps eps, k and delta as diagnostics."""
        w = self.objective
        solution = self.gain_mean()
        self.own_share, self.transfer = float(solution[0]), solution[1:]
        self.own_rate = self.own_rate_now()
        R = float((w * rate).sum())
        p = np.maximum(mixture, TINY)
        a = response(self.settings.jacobian, self.settings.jacobian_weight, p)
        return self.own_share * spread(a, w * (rate + R * self.own_rate), p) + R * self.transfer

    # ---- state (keys and layout of the mixer's saved state)
    _ARRAYS = ("noise", "own_P", "own_q", "gain_P", "gain_q", "own_rate", "transfer", "rate", "lowest")

    def state(self) -> dict:
        state = {name: to_json(getattr(self, name)) for name in self._ARRAYS}
        state.update(pairs=self.pairs, spikes=self.spikes, own_share=self.own_share,
                     cleans=[[c.step, to_json(c.losses)] for c in self.cleans],
                     middles=[[m.step, to_json(m.losses), to_json(m.deviation), to_json(m.mixture)]
                              for m in self.middles])
        return state

    def set_state(self, state: dict) -> None:
        for name in self._ARRAYS:
            setattr(self, name, from_json(state[name]))
        self.gain_P = self.gain_P.reshape(self.K + 1, self.K + 1)
        self.pairs = int(state["pairs"])
        self.spikes = int(state.get("spikes", 0))
        self.own_share = float(state["own_share"])
        self.cleans = [Evaluation(int(c[0]), from_json(c[1])) for c in state["cleans"]]
        self.middles = [PairMiddle(int(m[0]), from_json(m[1]), from_json(m[2]), from_json(m[3]))
                        for m in state["middles"]]
