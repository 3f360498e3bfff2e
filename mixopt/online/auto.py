"""`auto`: greedy exponentiated gradient on marginal gains read from every evaluation of the run.

Aioli re-estimates an interaction matrix every round from probe sweeps that take 13% to 70% of the
steps, from loss changes over a few steps, and its released settings keep the mixture close to
uniform. `auto` spends no steps on probes: each domain's own loss curve gives a first estimate of
what one more step of that domain is worth, and short antithetic tilts of the mixture (which net
out) correct it for transfer between domains. See AutoMixer for the method and
benchmarks/online_sim.py for how it compares.
"""

from __future__ import annotations

import numpy as np

from mixopt.errors import InputError
from mixopt.online.base import OnlineMixer, check_float, check_int, from_json, to_json

_TINY = 1e-12
RHO_MAX = 3.0              # relative gains beyond this are estimation noise, not information
CLEAN_KEEP = 12            # recent clean evaluations kept (rate fits and interpolation)
RATE_DEGREE = 2            # the local rate fit: a quadratic in log step
# the control: leak towards the prior, tilt cap (log of the factor either way) and guard (see _climbing). The
# default moves further and guards against the cliffs that come with that; the narrower one, without the
# guard, is kept with a Jacobian (larger moves on the proxies' transfer reach the simulators' cliffs, and
# without repetition caps the guard holds over-repeated domains) and in real training (online.TRAINING_OPTIONS:
# real runs do not reward moving further from the recommendation)
CONTROL = {"leak": 0.03, "max_tilt": float(np.log(4.0)), "guard": 4.0}
NARROW_CONTROL = {"leak": 0.05, "max_tilt": float(np.log(3.0)), "guard": 0.0}
USABLE_RATE = 0.2          # a Jacobian column shares out a rate only if p . J[:, j] < -this * p . |J[:, j]|


class AutoMixer(OnlineMixer):
    """Greedy exponentiated gradient on own-data gains corrected for transfer.

    Model. Write r_j for the rate at which domain j's loss currently falls (per step) and p for the
    mixture. If a domain learnt only from its own data, one more step of domain i would lower the
    objective by w_i r_i / p_i (w: objective weights): its loss falls at r_i while it gets a share
    p_i of the steps. Transfer (a domain teaching, or hurting, others) changes that, so the gain of
    domain i is modelled as

        G_i = k * w_i (r_i + R eps_i) / p_i + R * delta_i    (R = sum_j w_j r_j, the objective's rate)

    with eps_i a correction to the part of domain i's rate that its own data buys (prior 0, sd
    `own_rate_scale`: a loss that rises because other domains hurt it must not read as "its own
    data hurts it"), one own-data share k for all domains (prior 1, sd `own_scale`) and a
    per-domain transfer correction delta_i (prior 0, sd `transfer_scale`). eps and delta are in
    units of the objective's rate, so that they stay put while the rates fall.

    * Rates, short memory: each domain's losses at the last `window` clean evaluations (no
      exposure deviation outstanding, see below) are fitted by a quadratic in log step; r_j is
      minus its slope now. A local fit follows the curve when the mixture moves, where a global
      trend model would lag.
    * eps, k and delta, long memory: rounds come in antithetic pairs, the mixture tilted to
      p * exp(+perturb * s) for one round and p * exp(-perturb * s) for the next (s: a random
      balanced +-1 pattern), so the exposure deviation D = (q - p) * n is there at the pair's middle
      evaluation and gone at both ends. `perturb` is 1 by default (x2.7 up and down): on the
      simulators, where losses depend on cumulative exposure only, tilts are free and large ones
      find the most. In real training they are not: on the default corpus (1M tokens), tilts of
      perturb 1 alone (eta 0) ended 0.03-0.065 nats above the static mixture on each of three seeds,
      and `auto` with them 0.021 above stratified on average over five seeds; with perturb 0.3
      (x1.35) `auto` ended 0.007 below stratified, within the seeds' noise of static, and real
      training runs use that (online.TRAINING_OPTIONS, which also keeps NARROW_CONTROL;
      docs/benchmarks.md). At the middle, each
      domain's loss minus its interpolation from the clean evaluations around it (cubic in log step
      through two on each side) measures its own-data effect, -(r_i + R eps_i) D_i / p_i plus
      transfer: one observation of eps_i per pair and domain (ridge over all pairs, variance from
      the domain's leave-one-out interpolation errors). The objective's residual measures -G . D:
      one observation of (k, delta) per pair, also fitted by ridge regression over all pairs; its
      variance adds the per-domain errors as if fully correlated (eval noise shared by all domains
      does not average out).
    * The step waits for the first pair: until then nothing says that the mixture matters, and
      the mixture stays at the prior.
    * Loss spikes (`outlier` = c, 0: off): each clean evaluation is checked against the cubic
      through two on each side; if the objective jumps by more than c noise sds it is dropped
      (counted in `spikes`; a clean next to a spike may go too), and no error raises the noise
      estimates by more than c^2 times.
      Pairs wait until their neighbours are checked, and enter their regressions with Huber
      weights: a residual more than c predictive sds (noise and the estimate's own uncertainty)
      from the current estimate counts c / z times.

    Control. theta = log p; after every clean evaluation theta += clip(eta * rho, +-max_step) -
    leak * (theta - theta_prior), where rho = (G - p.G) / sum_j w_j |r_j| is each domain's gain
    relative to the current mixture's; theta stays within +-max_tilt of the prior's logits and is
    projected onto the bounds. The integral action drives the marginal gains to equality -- the
    greedy allocation, which for losses that depend on cumulative exposure ends at the best
    constant mixture and makes up for rounds spent elsewhere; the small leak keeps noise from
    walking the mixture away from the prior. `leak`, `max_tilt` and `guard` default to CONTROL
    (0.03, a factor of 4 either way, guard 4), or with a `jacobian` to NARROW_CONTROL (0.05, a
    factor of 3, no guard):
    with its direction right about 0.4 of the way (cosine of the mean mixture's move with the
    best static mixture's, K = 20), `auto` alone moved too little within a factor 3 (a quarter of
    the way), while with the proxies' transfer the wider cap reached the simulators' cliffs
    (docs/benchmarks.md). Pairs net out, so where losses depend on cumulative exposure exploring
    costs nothing to first order (real training: see `perturb` above); none starts before two
    clean evaluations exist or in the last `taper` share of the run.
    The guard (`guard` = g noise sds, 0: off): a domain at or below its prior share whose newest
    clean loss is more than g noise sds above its lowest keeps at least its current share (the
    others make room). A loss that climbs while its domain trains reads, in the own-data model, as
    "its own data hurts it"; where other domains' data hurts it instead (negative transfer) cutting
    it lets them push its loss up faster still, to its ceiling. Repetition, the case where its own
    data does hurt, is what max_weights bounds; without such caps the guard can hold an
    over-repeated domain (docs/benchmarks.md: on the simulators without caps it costs `auto+J`,
    hence no guard with a Jacobian).

    `sensitivity` ((K,) gradient of the static surrogate's predicted objective with respect to the
    proportions at the prior, or its (K, K) per-domain Jacobian) adds a prior tilt down that
    gradient (largest entry 0.5 in rho units) that fades over the first pairs.

    `jacobian` ((K, K), J[i, j] = d L_j / d p_i of the proxies' final per-domain losses at the
    prior, with p not renormalised so that p . J[:, j] is the proxies' own rate along their
    length) replaces the own-data model's "domain i's data lowers only domain i's loss" by the
    proxies' transfer structure: the run's rate of domain j is shared out over the domains in
    proportion to J[:, j] (see `_response`), so G_i = k sum_j J[i, j] w_j (r_j + R eps_j) /
    (p . J[:, j]) + R delta_i, and the pairs' per-domain model changes with it. This is the
    transfer that one run's pairs cannot estimate at K >= 8 with realistic noise (about 0.04
    signal to noise per pair); on the simulators, with a 10x shorter run's Jacobian it closes
    0.62-0.66 of the gap on average against 0.49-0.50 without, 0.49 against 0.19 at K = 40
    (benchmarks/online_sim.py, `auto+J`; docs/benchmarks.md). A poor J does harm (entries off
    by their column's mean size: at or below stratified on 14 of 180 cases, against 1).
    Estimated from simulated noisy proxies by mixopt.online.jacobian.estimate_jacobian (a fit over
    the simplex shrunk towards the own-data model as far as the proxies' noise asks; `mixopt
    jacobian` for a real study) it closes 0.61 from 64 proxies and 0.63 from 512 (a plain
    least-squares fit: 0.46 from 64, worse than none). On the real 1M-token CPU run a Jacobian
    from the demo study's 42 proxies made `auto` worse (docs/benchmarks.md), so nothing passes
    one by default. `jacobian_weight` < 1 mixes the own-data model back in. A diagonal J (no
    transfer) gives the own-data model.
    """

    method = "auto"
    defaults = {
        "rounds": 100, "round_steps": None, "perturb": 1.0, "eta": 0.3, "forget": 0.8, "window": 10,
        "own_rate_scale": 0.3, "own_scale": 0.15, "transfer_scale": 0.3, "leak": None, "max_step": 0.5,
        "outlier": 4.0, "guard": None,
        "max_tilt": None, "taper": 0.15, "sensitivity": None, "jacobian": None,
        "jacobian_weight": 1.0,
    }

    def _configure(self) -> None:
        o = self.options
        o["rounds"] = check_int("rounds", o["rounds"], 1)
        o["round_steps"] = (max(1, self.steps // o["rounds"]) if o["round_steps"] is None
                            else check_int("round_steps", o["round_steps"], 1))
        o["perturb"] = check_float("perturb", o["perturb"], 0.0, 3.0)
        o["eta"] = check_float("eta", o["eta"], 0.0)
        o["forget"] = check_float("forget", o["forget"], 0.0, 1.0, low_open=True)
        o["window"] = check_int("window", o["window"], RATE_DEGREE + 2)
        if o["window"] > CLEAN_KEEP:
            raise InputError(f"window must be <= {CLEAN_KEEP}, got {o['window']}")
        o["own_rate_scale"] = check_float("own_rate_scale", o["own_rate_scale"], 0.0, low_open=True)
        o["own_scale"] = check_float("own_scale", o["own_scale"], 0.0, low_open=True)
        o["transfer_scale"] = check_float("transfer_scale", o["transfer_scale"], 0.0, low_open=True)
        o["outlier"] = check_float("outlier", o["outlier"], 0.0)
        o["max_step"] = check_float("max_step", o["max_step"], 0.0)
        o["taper"] = check_float("taper", o["taper"], 0.0, 1.0)
        K = self.K
        self.sensitivity_rho = np.zeros(K)
        if o["sensitivity"] is not None:
            self.sensitivity_rho = self._sensitivity_prior(o["sensitivity"])
            o["sensitivity"] = np.asarray(o["sensitivity"], dtype=np.float64)
        o["jacobian_weight"] = check_float("jacobian_weight", o["jacobian_weight"], 0.0, 1.0)
        self.jacobian = None
        if o["jacobian"] is not None:
            self.jacobian = self._check_jacobian(o["jacobian"])
            o["jacobian"] = self.jacobian
        control = NARROW_CONTROL if self.jacobian is not None else CONTROL
        for name in control:
            o[name] = control[name] if o[name] is None else o[name]
        o["leak"] = check_float("leak", o["leak"], 0.0, 1.0)
        o["max_tilt"] = check_float("max_tilt", o["max_tilt"], 0.0)
        o["guard"] = check_float("guard", o["guard"], 0.0)
        self.theta_prior = np.log(np.maximum(self.prior, _TINY))
        self.theta = self.theta_prior.copy()
        self.mixture = self.project(np.exp(self.theta))
        self.started = False
        self.phase = 0                           # 1: the next round is a pair's second half
        self.tilt = np.zeros(K)                  # log-tilt of the pair's first half
        self.cleans: list = []                   # recent [t, losses] with no exposure deviation
        self.middles: list = []                  # [t, losses, D, p] of pairs' middles not yet used
        self.noise = np.full(K, np.nan)          # eval noise variance per domain (leave-one-out)
        self.own_P = np.zeros(K)                 # ridge sums for eps (per domain), never forgotten
        self.own_q = np.zeros(K)
        self.gain_P = np.zeros((K + 1, K + 1))   # ridge sums for (k, delta), never forgotten
        self.gain_q = np.zeros(K + 1)
        self.pairs = 0
        self.spikes = 0                          # clean evaluations dropped as loss spikes
        self.lowest = np.full(K, np.nan)         # each domain's lowest clean loss so far (the guard)
        self.own_rate = np.zeros(K)              # diagnostics: eps, k, delta, relative gains, rates
        self.own_share = 1.0
        self.transfer = np.zeros(K)
        self.rho = np.zeros(K)
        self.rate = np.zeros(K)

    def _sensitivity_prior(self, value) -> np.ndarray:
        try:
            s = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"sensitivity must be numbers: {exc}") from exc
        if s.shape == (self.K, self.K):
            s = self.objective @ s
        if s.shape != (self.K,) or not np.all(np.isfinite(s)):
            raise InputError(f"sensitivity must be finite with shape ({self.K},) or ({self.K}, {self.K}), "
                             f"got shape {s.shape}")
        centred = s - (self.prior * s).sum()
        top = np.abs(centred).max()
        return np.zeros(self.K) if top == 0 else -0.5 * centred / top

    def _check_jacobian(self, value) -> np.ndarray:
        try:
            J = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"jacobian must be numbers: {exc}") from exc
        if J.shape != (self.K, self.K) or not np.all(np.isfinite(J)):
            raise InputError(f"jacobian must be finite with shape ({self.K}, {self.K}), got shape {J.shape}")
        return J

    def _response(self, p: np.ndarray) -> np.ndarray | None:
        """a[i, j]: what one more step of domain i does to domain j's loss, in units of j's rate at
        mixture p (one step of the mixture p is worth sum_i p_i a[i, j] = 1 of them). Without a
        Jacobian, None: every domain learns only from its own data, a = diag(1 / p).
        With one (J[i, j] = dL_j / dp_i of the proxies' final losses at the prior), a[:, j] =
        J[:, j] / (p . J[:, j]): the transfer structure of the static surrogate, renormalised to the
        current mixture; a column whose loss does not fall at p (p . J[:, j] >= -USABLE_RATE sum_i
        p_i |J[i, j]|: no usable rate to share out) stays own-only. `jacobian_weight` w < 1 mixes
        in the own-data model: w a + (1 - w) diag(1 / p), for a J estimated from few proxies."""
        if self.jacobian is None:
            return None
        J = self.jacobian
        along = p @ J
        size = p @ np.abs(J)
        usable = along < -USABLE_RATE * size
        own = np.diag(1.0 / p)
        a = own.copy()
        a[:, usable] = J[:, usable] / along[usable]
        weight = self.options["jacobian_weight"]
        return a if weight == 1.0 else weight * a + (1.0 - weight) * own

    def _effect(self, a: np.ndarray | None, D: np.ndarray, p: np.ndarray) -> np.ndarray:
        """(a^T D)_j: the exposure deviation D as steps' worth of each domain's rate."""
        return D / p if a is None else D @ a

    def _spread(self, a: np.ndarray | None, v: np.ndarray, p: np.ndarray) -> np.ndarray:
        """a @ v: per-domain values (rates) spread back to the domains whose data buys them."""
        return v / p if a is None else a @ v

    # ------------------------------------------------------------------ plan
    def _plan(self):
        if not self.started:
            return self.mixture.copy(), 0                  # evaluate at step 0
        o = self.options
        n = o["round_steps"]
        p = self.mixture
        if self.phase == 1:
            return self.project(p * np.exp(-self.tilt)), n
        end = self.steps * (1 - o["taper"])
        if o["perturb"] == 0 or self.K < 2 or self.step + 2 * n > end or len(self.cleans) < 2:
            self.tilt = np.zeros(self.K)
            return p.copy(), n
        signs = np.ones(self.K)
        signs[: self.K // 2] = -1.0
        signs = self.rng.permutation(signs)
        if self.K % 2:
            signs[self.rng.integers(self.K)] = 0.0
        self.tilt = o["perturb"] * signs
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
            self.middles.append([t, losses.copy(), (q - self.mixture) * n, self.mixture.copy()])
            self.phase = 1
            return
        self.phase = 0
        self.tilt = np.zeros(self.K)
        self.cleans = (self.cleans + [[t, losses.copy()]])[-CLEAN_KEEP:]
        self.lowest = np.fmin(self.lowest, losses)
        self._update_noise()
        while self.middles and self._use_middle(self.middles[0]):
            self.middles.pop(0)
        self._update(t)

    # ---- interpolation from clean evaluations (cubic in log step, two on each side)
    def _interpolate(self, t: float, exclude: float | None = None):
        """(value (K,), sum of squared weights), or None without 1 clean before and 2 after."""
        before = [c for c in self.cleans if c[0] < t and c[0] != exclude][-2:]
        later = [c for c in self.cleans if c[0] > t and c[0] != exclude]
        after = later[:2]
        if exclude is None and self.options["outlier"] > 0 and len(later) < 4:
            return None                                            # its neighbours are not screened yet
        if len(after) < 2 or not before:
            return None
        nodes = np.log([c[0] for c in before + after])
        x = np.log(t)
        diff = x - nodes
        w = np.array([np.prod(np.delete(diff, i)) / np.prod(nodes[i] - np.delete(nodes, i))
                      for i in range(len(nodes))])
        values = np.stack([c[1] for c in before + after])
        return (w[:, None] * values).sum(axis=0), float((w * w).sum())

    def _update_noise(self) -> None:
        """Screen the third-newest clean evaluation against its neighbours (cubic through two on
        each side) and fold its error into the noise estimates. With `outlier` = c > 0: a jump of
        the objective by more than c noise sds drops the evaluation (a loss spike), and no error
        counts for more than c^2 times the current variance. (A single domain's jump is kept: with
        little noise, curvature that the cubic misses looks like one, and dropping it would read as
        a difference between domains.)"""
        if len(self.cleans) < 5:
            return
        t, losses = self.cleans[-3]
        fit = self._interpolate(t, exclude=t)
        if fit is None:
            return
        error = losses - fit[0]
        e2 = error ** 2 / (1.0 + fit[1])
        c = self.options["outlier"]
        known = ~np.isnan(self.noise)
        if c > 0 and known.sum() >= max(1, self.K // 2):
            sd = np.sqrt(np.where(known, self.noise, 0.0) * (1.0 + fit[1]))
            ok = ~np.isnan(error) & known
            w = self.objective
            if abs(float((w * np.where(ok, error, 0.0)).sum())) > c * float((w * np.where(ok, sd, 0.0)).sum()):
                self.spikes += 1
                self.cleans.pop(-3)
                return
            e2 = np.where(known, np.minimum(e2, c * c * self.noise), e2)
        lam = self.options["forget"]
        fresh = np.isnan(self.noise)
        update = np.where(fresh, e2, lam * self.noise + (1 - lam) * e2)
        self.noise = np.where(np.isnan(e2), self.noise, update)

    def _use_middle(self, middle) -> bool:
        """Fold one pair into the eps and (k, delta) regressions; False: wait for clean evaluations after it."""
        t1, l1, D, p1 = middle
        fit = self._interpolate(t1)
        known = ~np.isnan(self.noise)
        if fit is None or not np.any(known):
            return bool(self.cleans) and self.cleans[0][0] > t1       # neighbours gone: drop it
        value, ww = fit
        w = self.objective
        y = l1 - value
        seen = ~np.isnan(y) & known
        residual = float((w * np.where(seen, y, 0.0)).sum())        # ~ -G . D
        rate = np.where(seen, self._rates(t1), 0.0)
        R = float((w * rate).sum())
        noise = np.maximum(self.noise, np.median(self.noise[known]))   # no domain quieter than the median
        variance = float((w * np.sqrt(np.where(seen, noise, 0.0))).sum()) ** 2 * (1.0 + ww)
        self.pairs += 1
        if not (R > 0 and variance > 0):
            return True
        share = np.maximum(p1, _TINY)
        a = self._response(share)
        effect = self._effect(a, D, share)                          # own-only: D_i / p_i
        c = self.options["outlier"]
        x = -R * effect                                             # per domain: y_i + r_i effect_i ~ eps_i x_i
        inverse = np.where(seen, 1.0 / (noise * (1.0 + ww)), 0.0)
        target = np.where(seen, y + rate * effect, 0.0)
        if c > 0:                  # Huber weights on the residual's predictive sd (noise + estimate)
            spread = np.sqrt(np.where(seen, noise * (1.0 + ww), 0.0)
                             + x * x / (self.own_P + self.options["own_rate_scale"] ** -2))
            z = np.abs(target - self._own_rate() * x) / np.maximum(spread, _TINY)
            inverse = inverse * np.minimum(1.0, c / np.maximum(z, _TINY))
        self.own_P += inverse * x * x
        self.own_q += inverse * x * target
        own = self._spread(a, w * (rate + R * self._own_rate()), share)
        x = -np.concatenate([[own @ D], R * D])
        weight = 1.0
        if c > 0:
            solution, covariance = self._gain_solution(covariance=True)
            z = abs(residual - float(x @ solution)) / np.sqrt(variance + float(x @ covariance @ x))
            weight = min(1.0, c / max(z, _TINY))
        self.gain_P += weight * np.outer(x, x) / variance
        self.gain_q += weight * x * residual / variance
        return True

    # ---- rates: a quadratic in log step through the recent clean evaluations
    def _rates(self, t: float) -> np.ndarray:
        """Each domain's current rate of loss decrease per step (0 without enough evaluations)."""
        recent = [c for c in self.cleans if c[0] <= t][-self.options["window"]:]
        if len(recent) < RATE_DEGREE + 2:
            return np.zeros(self.K)
        X = np.vander(np.log([c[0] for c in recent]) - np.log(t), RATE_DEGREE + 1, increasing=True)
        Y = np.stack([c[1] for c in recent])                       # (M, K)
        seen = ~np.isnan(Y)
        A = np.einsum("mk,ma,mb->kab", seen.astype(np.float64), X, X)
        b = np.einsum("mk,ma->ka", np.where(seen, Y, 0.0), X)
        enough = seen.sum(axis=0) >= RATE_DEGREE + 2
        A[~enough] = np.eye(RATE_DEGREE + 1)
        slope = np.linalg.solve(A, b[..., None])[:, 1, 0]
        return np.where(enough, -slope / t, 0.0)

    # ---- the decision
    def _gain_solution(self, covariance: bool = False):
        """(k, delta): the ridge solution of the pairs' objective residuals (and its covariance)."""
        o = self.options
        precision = np.concatenate([[o["own_scale"] ** -2], np.full(self.K, o["transfer_scale"] ** -2)])
        prior_mean = np.zeros(self.K + 1)
        prior_mean[0] = 1.0
        A = self.gain_P + np.diag(precision)
        if covariance:
            inverse = np.linalg.inv(A)
            return inverse @ (self.gain_q + precision * prior_mean), inverse
        return np.linalg.solve(A, self.gain_q + precision * prior_mean)

    def _own_rate(self) -> np.ndarray:
        return self.own_q / (self.own_P + self.options["own_rate_scale"] ** -2)

    def _update(self, t: int) -> None:
        if not self.pairs:
            return
        rate = self._rates(t)
        self.rate = rate
        scale = float((self.objective * np.abs(rate)).sum())
        if not scale > 0:
            return
        gains = self._gains(rate)
        rho = (gains - (self.mixture * gains).sum()) / scale + self.sensitivity_rho / (1.0 + self.pairs / 3.0)
        self._steer(rho)

    def _gains(self, rate: np.ndarray) -> np.ndarray:
        """G: the estimated gain of one more step of each domain (the model in the class docstring)."""
        w = self.objective
        solution = self._gain_solution()
        self.own_share, self.transfer = float(solution[0]), solution[1:]
        self.own_rate = self._own_rate()
        R = float((w * rate).sum())
        p = np.maximum(self.mixture, _TINY)
        return self.own_share * self._spread(self._response(p), w * (rate + R * self.own_rate), p) + R * self.transfer

    def _steer(self, rho: np.ndarray) -> None:
        """The control law: one exponentiated-gradient step on the relative gains rho."""
        o = self.options
        self.rho = np.clip(rho, -RHO_MAX, RHO_MAX)
        step = np.clip(o["eta"] * self.rho, -o["max_step"], o["max_step"]) - o["leak"] * (self.theta - self.theta_prior)
        theta = np.clip(self.theta + step, self.theta_prior - o["max_tilt"], self.theta_prior + o["max_tilt"])
        self.mixture = self._hold_climbing(self.mixture, self.project(np.exp(theta - theta.max())))
        self.theta = np.log(np.maximum(self.mixture, _TINY))

    def _hold_climbing(self, old: np.ndarray, new: np.ndarray) -> np.ndarray:
        """`new`, except that no climbing domain (see _climbing) gets less than its share in `old`;
        the others make room in proportion to their shares."""
        climbing = self._climbing()
        if not climbing.any() or climbing.all():
            return new
        held = np.where(climbing, np.maximum(new, old), new)
        room = 1.0 - held[climbing].sum()
        free = new[~climbing].sum()
        if room <= 0 or free <= 0:
            return new
        held[~climbing] *= room / free
        return self.project(held)

    def _climbing(self) -> np.ndarray:
        """The guard: domains at or below their prior share whose newest clean loss is more than
        `guard` noise sds above their lowest (0: off). Their loss climbs while they train, which the
        own-data model reads as "its own data hurts it"; where other domains' data hurts them
        (negative transfer) that reading is wrong, and cutting them further lets the others push
        their loss up faster still (a cliff). A domain above its prior may be over-repeated instead."""
        g = self.options["guard"]
        if g == 0 or not self.cleans:
            return np.zeros(self.K, dtype=bool)
        with np.errstate(invalid="ignore"):
            climbing = np.nan_to_num(self.cleans[-1][1] - self.lowest - g * np.sqrt(self.noise), nan=-1.0) > 0
        return climbing & (self.mixture <= self.prior * (1 + 1e-9))

    # ------------------------------------------------------------------ state
    _ARRAYS = ("theta", "tilt", "noise", "own_P", "own_q", "gain_P", "gain_q", "own_rate", "transfer", "rho",
               "rate", "lowest")

    def _get_state(self) -> dict:
        state = {name: to_json(getattr(self, name)) for name in self._ARRAYS}
        state.update(started=self.started, phase=self.phase, pairs=self.pairs, spikes=self.spikes,
                     own_share=self.own_share,
                     cleans=[[c[0], to_json(c[1])] for c in self.cleans],
                     middles=[[m[0], to_json(m[1]), to_json(m[2]), to_json(m[3])] for m in self.middles])
        return state

    def _set_state(self, state: dict) -> None:
        for name in self._ARRAYS:
            setattr(self, name, from_json(state[name]))
        self.gain_P = self.gain_P.reshape(self.K + 1, self.K + 1)
        self.started = bool(state["started"])
        self.phase = int(state["phase"])
        self.pairs = int(state["pairs"])
        self.spikes = int(state.get("spikes", 0))
        self.own_share = float(state["own_share"])
        self.cleans = [[int(c[0]), from_json(c[1])] for c in state["cleans"]]
        self.middles = [[int(m[0]), from_json(m[1]), from_json(m[2]), from_json(m[3])]
                        for m in state["middles"]]
