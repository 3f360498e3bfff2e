"""`auto`: greedy exponentiated gradient on marginal gains learned from every evaluation of the run.

Aioli re-estimates an interaction matrix every round from probe sweeps that take 13% to 70% of the
steps, from loss changes over a few steps, and its released settings keep the mixture close to
uniform. `auto` spends no steps on probes, learns from every evaluation, and moves as far as the
evidence allows. See AutoMixer for the method; benchmarks/online_sim.py for how it compares.
"""

from __future__ import annotations

import numpy as np

from mixopt.errors import InputError
from mixopt.online.base import OnlineMixer, check_float, check_int, from_json, to_json

_TINY = 1e-12
#: diminishing-return exponents of the per-domain power-law trends L = c + A t^-b (profiled)
EXPONENTS = np.array([0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2, 3.0])
RHO_MAX = 3.0              # relative gains beyond this are estimation noise, not information
KAPPA_MAX = 1.5            # own share of progress: 0 (all transfer) .. 1 (all own data), some slack
CLEAN_KEEP = 12            # recent clean evaluations kept for interpolation


class AutoMixer(OnlineMixer):
    """Greedy exponentiated gradient on transfer-aware marginal gains.

    Model. Write r_j(t) for the rate at which domain j's loss currently falls and kappa_ji for the
    share of that progress bought by domain i's data (sum_i kappa_ji ~ 1; the diagonal kappa_jj is
    the share bought by its own data). One more step of domain i then lowers the objective by

        G_i = sum_j objective_j r_j kappa_ji / p_i

    and rho_i = (G_i - p @ G) / R (R = sum_j objective_j |r_j|) is its relative gain: one step on
    domain i lowers the objective (1 + rho_i) times as much as one step on the current mixture.
    The shares are stationary where the gains are not (a power law's marginal gain falls with its
    rate), so the two are estimated on two time scales:

    * Rates, short memory. Each domain's losses at the clean evaluations (no exposure deviation
      outstanding, see below) are fitted by a local power law L = c + A t^-b, profiled over b and
      exponentially forgotten (`forget` per clean evaluation); r_j is its slope.
    * Shares, long memory. Rounds come in antithetic pairs: the mixture is tilted to
      p * exp(+delta * s) for one round and p * exp(-delta * s) for the next (s: a random
      balanced +-1 pattern), so the exposure deviation D = (q - p) * n is there at the pair's
      middle evaluation and gone at both ends. At the middle, L_j minus its interpolation from the
      clean evaluations around it (cubic in log step through two on each side: no trend model, so
      neither the trend's shape nor the mixture's own drift can leak in) measures
      -r_j sum_i kappa_ji D_i / p_i. Every pair adds to least-squares sums that are never
      forgotten, so the early rounds, where losses move most and the signal is strongest, keep
      counting. The own shares are shrunk towards their pooled mean (itself shrunk towards 0):
      K domains share the evidence about how much own data matters. For K <= `rows_max_k` the full
      rows are estimated as well, with the own share as the diagonal's prior mean and the
      off-diagonal entries (teaching, or negative transfer) shrunk towards 0 with sd
      `cross_scale`; beyond that the rest of each row is spread evenly (it then adds the same
      amount to every G_i and drops out of rho). Eval noise: leave-one-out interpolation errors.
    * With no evidence every share is 0: rho = 0 and the mixture stays at the prior; it moves as
      the evidence grows.

    Control. The gains are smoothed over clean evaluations (EMA with factor `smooth`) and each is
    shrunk by its signal share m^2 / (m^2 + var(m)) (var from the gains' own scatter), so that a
    domain whose gain flips sign from one evaluation to the next does not move the mixture.
    theta = log p; after every clean evaluation theta += clip(eta * shrunk gain, +-max_step),
    kept within +-max_tilt of the prior's logits (a factor of 3 either way by default), projected
    onto the bounds. The integral action drives the marginal gains to equality -- the greedy
    allocation, which for losses that depend on cumulative exposure ends at the best constant
    mixture and makes up for rounds spent elsewhere. Pairs net out, so exploring costs nothing to
    first order; none starts before two clean evaluations exist or in the last `taper` share of
    the run (where recent data counts most).

    `sensitivity` ((K,) gradient of the static surrogate's predicted objective with respect to the
    proportions at the prior, or its (K, K) per-domain Jacobian) adds a prior tilt down that
    gradient (largest entry 0.5 in rho units) that fades over the first pairs.
    """

    method = "auto"
    defaults = {
        "rounds": 100, "round_steps": None, "perturb": 1.0, "eta": 0.7, "forget": 0.8,
        "kappa_scale": 0.15, "cross_scale": 0.15, "rows_max_k": 10, "max_step": 0.5,
        "max_tilt": float(np.log(3.0)), "taper": 0.15, "sensitivity": None, "smooth": 0.7,
    }

    def _configure(self) -> None:
        o = self.options
        o["rounds"] = check_int("rounds", o["rounds"], 1)
        o["round_steps"] = (max(1, self.steps // o["rounds"]) if o["round_steps"] is None
                            else check_int("round_steps", o["round_steps"], 1))
        o["perturb"] = check_float("perturb", o["perturb"], 0.0, 3.0)
        o["eta"] = check_float("eta", o["eta"], 0.0)
        o["forget"] = check_float("forget", o["forget"], 0.0, 1.0, low_open=True)
        o["kappa_scale"] = check_float("kappa_scale", o["kappa_scale"], 0.0, low_open=True)
        o["cross_scale"] = check_float("cross_scale", o["cross_scale"], 0.0, low_open=True)
        o["rows_max_k"] = check_int("rows_max_k", o["rows_max_k"], 0)
        o["max_step"] = check_float("max_step", o["max_step"], 0.0)
        o["max_tilt"] = check_float("max_tilt", o["max_tilt"], 0.0)
        o["taper"] = check_float("taper", o["taper"], 0.0, 1.0)
        o["smooth"] = check_float("smooth", o["smooth"], 0.0, 1.0, high_open=True)
        K = self.K
        self.sensitivity_rho = np.zeros(K)
        if o["sensitivity"] is not None:
            self.sensitivity_rho = self._sensitivity_prior(o["sensitivity"])
            o["sensitivity"] = np.asarray(o["sensitivity"], dtype=np.float64)
        self.rows = 1 < K <= o["rows_max_k"]
        self.theta_prior = np.log(np.maximum(self.prior, _TINY))
        self.theta = self.theta_prior.copy()
        self.mixture = self.project(np.exp(self.theta))
        self.started = False
        self.phase = 0                           # 1: the next round is a pair's second half
        self.tilt = np.zeros(K)                  # log-tilt of the pair's first half
        self.cleans: list = []                   # recent [t, losses] with no exposure deviation
        self.middles: list = []                  # [t, losses, D, p] of pairs' middles not yet used
        self.noise = np.full(K, np.nan)          # eval noise variance per domain (leave-one-out)
        G = len(EXPONENTS)
        self.tn = np.zeros(K)                    # trend sums per domain (forgotten) ...
        self.ty = np.zeros(K)
        self.tyy = np.zeros(K)
        self.tf = np.zeros((K, G))               # ... and per exponent: sum f, f^2, f y
        self.tff = np.zeros((K, G))
        self.tfy = np.zeros((K, G))
        self.kxx = np.zeros(K)                   # own-share regressions (never forgotten)
        self.kxy = np.zeros(K)
        width = K if self.rows else 0
        self.row_P = np.zeros((width, width, width))   # full rows: sum (r_j/var) u u^T per domain
        self.row_q = np.zeros((width, width))
        self.rho_mean = np.zeros(K)              # smoothed gains and their variability: step by
        self.rho_var = np.zeros(K)               # the smoothed gain, shrunk by its signal share
        self.pairs = 0
        self.kappa = np.zeros(K)                 # diagnostics: own shares, full shares, gains
        self.shares = np.zeros((K, K))
        self.rho = np.zeros(K)
        self.rate = np.zeros(K)
        self._fit = None                         # cached trend fit (A, beta, ready)

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
        if self.phase == 0 and np.any(self.tilt != 0):    # a pair's middle
            self.middles.append([t, losses.copy(), (q - self.mixture) * n, self.mixture.copy()])
            self.phase = 1
            return
        self.phase = 0
        self.tilt = np.zeros(self.K)
        self.cleans = (self.cleans + [[t, losses.copy()]])[-CLEAN_KEEP:]
        self._add_trend_point(t, losses)
        self._fit = self._fit_trend()
        self._update_noise()
        while self.middles and self._use_middle(self.middles[0]):
            self.middles.pop(0)
        self._update(t)

    # ---- interpolation from clean evaluations (cubic in log step, two on each side)
    def _interpolate(self, t: float, exclude: float | None = None):
        """(value (K,), sum of squared weights), or None without 1 clean before and 2 after."""
        before = [c for c in self.cleans if c[0] < t and c[0] != exclude][-2:]
        after = [c for c in self.cleans if c[0] > t and c[0] != exclude][:2]
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
        if len(self.cleans) < 5:
            return
        t, losses = self.cleans[-3]
        fit = self._interpolate(t, exclude=t)
        if fit is None:
            return
        e2 = (losses - fit[0]) ** 2 / (1.0 + fit[1])
        lam = self.options["forget"]
        fresh = np.isnan(self.noise)
        update = np.where(fresh, e2, lam * self.noise + (1 - lam) * e2)
        self.noise = np.where(np.isnan(e2), self.noise, update)

    def _noise_var(self) -> np.ndarray:
        noise = np.where(np.isnan(self.noise), np.inf, self.noise)
        finite = np.isfinite(noise)
        if np.any(finite):
            noise = np.where(finite, np.maximum(noise, np.median(noise[finite])), np.inf)
        return np.maximum(noise, _TINY)

    def _use_middle(self, middle) -> bool:
        """Fold one pair into the share regressions; False: wait for clean evaluations after it."""
        t1, l1, D, p1 = middle
        fit = self._interpolate(t1)
        if fit is None or not np.any(~np.isnan(self.noise)):
            return bool(self.cleans) and self.cleans[0][0] > t1       # neighbours gone: drop it
        value, ww = fit
        y = l1 - value                                     # ~ -r_j sum_i kappa_ji D_i / p_i
        u = D / np.maximum(p1, _TINY)
        r1 = self._rates(t1)
        var = self._noise_var() * (1.0 + ww)
        ok = ~np.isnan(y) & np.isfinite(var) & (r1 != 0)
        y = np.where(ok, y, 0.0)
        inv = np.where(ok, 1.0 / var, 0.0)
        x = -r1 * u                                        # own regressor
        self.kxx += inv * x * x
        self.kxy += inv * x * y
        if self.rows:
            self.row_P += (inv * r1 * r1)[:, None, None] * np.outer(u, u)[None, :, :]
            self.row_q += (inv * -r1 * y)[:, None] * u[None, :]
        self.pairs += 1
        return True

    # ---- per-domain power-law trends -> rates
    def _add_trend_point(self, t: int, losses: np.ndarray) -> None:
        lam = self.options["forget"]
        v = ~np.isnan(losses)
        f = (t / self.steps) ** -EXPONENTS
        y = np.where(v, losses, 0.0)
        keep = np.where(v, lam, 1.0)
        add = v.astype(np.float64)
        self.tn = keep * self.tn + add
        self.ty = keep * self.ty + y
        self.tyy = keep * self.tyy + y * y
        self.tf = keep[:, None] * self.tf + add[:, None] * f
        self.tff = keep[:, None] * self.tff + add[:, None] * f * f
        self.tfy = keep[:, None] * self.tfy + y[:, None] * f

    def _fit_trend(self):
        n = self.tn[:, None]
        det = n * self.tff - self.tf ** 2
        ok = det > 1e-12 * np.maximum(n * self.tff, _TINY)
        det = np.where(ok, det, 1.0)
        A = np.where(ok, (n * self.tfy - self.tf * self.ty[:, None]) / det, 0.0)
        c = (self.ty[:, None] - A * self.tf) / np.maximum(n, _TINY)
        rss = np.where(ok, self.tyy[:, None] - c * self.ty[:, None] - A * self.tfy, np.inf)
        best = np.argmin(rss, axis=1)
        rows = np.arange(self.K)
        return A[rows, best], EXPONENTS[best], self.tn >= 2.5

    def _rates(self, t: float) -> np.ndarray:
        """Each domain's current rate of loss decrease per step (0 until its trend is fitted)."""
        if self._fit is None:
            return np.zeros(self.K)
        A, beta, ready = self._fit
        rate = A * beta * (t / self.steps) ** (-beta - 1) / self.steps
        return np.where(ready, rate, 0.0)

    # ---- shares and the decision
    def _own_shares(self) -> np.ndarray:
        s2 = self.options["kappa_scale"] ** 2
        ready = self.kxx > 0
        if not np.any(ready):
            return np.zeros(self.K)
        safe = np.where(ready, self.kxx, 1.0)
        est = np.where(ready, self.kxy / safe, 0.0)
        var = np.where(ready, 1.0 / safe, np.inf)
        weights = np.where(ready, 1.0 / (var + s2), 0.0)
        kbar = float(np.clip((weights * est).sum() / (weights.sum() + 1.0), 0.0, KAPPA_MAX))
        post = np.where(ready, (est / var + kbar / s2) / (1.0 / var + 1.0 / s2), kbar)
        return np.clip(post, 0.0, KAPPA_MAX)

    def _full_shares(self, own: np.ndarray) -> np.ndarray:
        K = self.K
        o = self.options
        idx = np.arange(K)
        lam = np.full((K, K), 1.0 / o["cross_scale"] ** 2)
        lam[idx, idx] = 1.0 / o["kappa_scale"] ** 2
        A = self.row_P.copy()
        A[:, idx, idx] += lam
        rhs = self.row_q.copy()
        rhs[idx, idx] += lam[idx, idx] * own
        return np.linalg.solve(A, rhs[..., None])[..., 0]

    def _update(self, t: int) -> None:
        o = self.options
        rate = self._rates(t)
        self.rate = rate
        scale = float((self.objective * np.abs(rate)).sum())
        if not scale > 0:
            return
        p = self.mixture
        self.kappa = self._own_shares()
        weighted = self.objective * rate
        if self.rows and self.pairs:
            self.shares = self._full_shares(self.kappa)
            G = (weighted[:, None] * self.shares).sum(axis=0) / np.maximum(p, _TINY)
        else:
            G = weighted * self.kappa / np.maximum(p, _TINY)
        rho = (G - (p * G).sum()) / scale + self.sensitivity_rho / (1.0 + self.pairs / 3.0)
        self.rho = np.clip(rho, -RHO_MAX, RHO_MAX)
        beta = o["smooth"]
        if beta > 0:
            dev = self.rho - self.rho_mean
            self.rho_var = beta * self.rho_var + (1 - beta) * dev * dev
            self.rho_mean = self.rho_mean + (1 - beta) * dev
            noise = self.rho_var * (1 - beta) / (1 + beta)
            signal = self.rho_mean ** 2
            drive = self.rho_mean * np.where(signal > 0, signal / (signal + noise + _TINY), 0.0)
        else:
            drive = self.rho
        step = np.clip(o["eta"] * drive, -o["max_step"], o["max_step"])
        theta = np.clip(self.theta + step, self.theta_prior - o["max_tilt"], self.theta_prior + o["max_tilt"])
        self.mixture = self.project(np.exp(theta - theta.max()))
        self.theta = np.log(np.maximum(self.mixture, _TINY))

    # ------------------------------------------------------------------ state
    _ARRAYS = ("theta", "tilt", "noise", "tn", "ty", "tyy", "tf", "tff", "tfy", "kxx", "kxy",
               "row_P", "row_q", "rho_mean", "rho_var", "kappa", "shares", "rho", "rate")

    def _get_state(self) -> dict:
        state = {name: to_json(getattr(self, name)) for name in self._ARRAYS}
        state.update(started=self.started, phase=self.phase, pairs=self.pairs,
                     cleans=[[c[0], to_json(c[1])] for c in self.cleans],
                     middles=[[m[0], to_json(m[1]), to_json(m[2]), to_json(m[3])] for m in self.middles])
        return state

    def _set_state(self, state: dict) -> None:
        for name in self._ARRAYS:
            setattr(self, name, from_json(state[name]))
        self.row_P = self.row_P.reshape((self.K,) * 3 if self.rows else (0, 0, 0))
        self.row_q = self.row_q.reshape((self.K,) * 2 if self.rows else (0, 0))
        self.started = bool(state["started"])
        self.phase = int(state["phase"])
        self.pairs = int(state["pairs"])
        self.cleans = [[int(c[0]), from_json(c[1])] for c in state["cleans"]]
        self.middles = [[int(m[0]), from_json(m[1]), from_json(m[2]), from_json(m[3])]
                        for m in state["middles"]]
        self._fit = self._fit_trend() if self.cleans else None
