"""Aioli (Chen, Hu, Lourie, Cho, Ré 2024, arXiv:2411.05735), as in its released code.

Reference: github.com/HazyResearch/aioli, trainer/aioli_trainer.py (AioliTrainer.train and
learn_params_subroutine) and the run scripts under scripts/*/aioli/run.sh. Every round of
`update_steps` training steps:

1. LearnParams. `lp_rounds` sweeps over the K domains, each sweep in a fresh random order
   (np.random.permutation per sweep, concatenated). For domain j the model trains `lp_steps`
   steps on the smoothed one-hot mixture (one_hot_factor on j, (1 - one_hot_factor)/(K - 1) on
   every other domain), then all domains are evaluated and
       G[:, j] += previous_loss - new_loss,     previous_loss = new_loss
   (the first previous_loss is the evaluation at the start of the round). The probe steps are
   real training steps of the main model with the main optimizer and LR schedule; they are kept,
   not rolled back, and they count against the step budget (counter += lp_duration).
2. G /= lp_rounds. De-smoothing: with one_hot_factor < 1, each row solves W a = G[i], W the
   matrix whose rows are the probe mixtures (the `diagonal` ablation keeps A_ii = G_ii / factor).
3. Normalisation (`--aioli_normalize_A`, always set in the released scripts): if min(A) < 0,
   A -= min(A); then A /= sum(A).
4. Update. Without EMA: log p += eta * A.sum(axis=0) (exponentiated gradient from uniform).
   With `ema` set: E = A in the first round, E = (1 - ema) A + ema E afterwards, and
   p = softmax(eta * E.sum(axis=0)) -- the released code restarts from uniform weights every
   round in this branch, so eta bounds max(p)/min(p) by exp(eta).
5. The rest of the round (update_steps - lp_rounds * lp_steps * K steps) trains on p.

Restricted setting (`--aioli_prior`, `--prior_steps`): train on the prior for `prior_steps`
steps, then run the rounds above. The released code then resets the EG anchor to uniform
(`weights_init = np.ones(k)`); `anchor="prior"` starts the updates from the prior instead.

Defaults are the paper's main recipe, full SlimPajama (7 domains, scripts/full/aioli/run.sh):
lp_rounds=2, lp_steps=10, eta=1, ema=0.1, one_hot_factor=0.75, normalised A, and update_steps=200
of 40000 steps, so that the probes take 70% of every round (2 x 10 x 7 = 140 of 200). For K
domains and T steps the default round is max(T // 200, ceil(lp_rounds * lp_steps * K / 0.7)):
the same 70% probing share, and at most 200 rounds. A run too short for one such round with 10
steps per probe (K = 10 and T = 200, say) gets the longest probes that fit (`lp_steps` 1 to 9),
unless `lp_steps` or `update_steps` is given. (The two-domain recipes,
scripts/arxiv_stackexchange: lp_rounds=4, lp_steps=4, eta=0.2, one_hot_factor=0.625, 20 rounds,
are available as options.) In the restricted setting the prior phase defaults to one round
(PRIOR_STEPS = UPDATE_STEPS in the released scripts).

Generalisations, each the identity in the paper's setting: with min/max bounds the probe mixtures
are projected onto them and W holds the probes actually trained; with `objective` weights the
column sum becomes K * objective @ A; a NaN loss (a domain not evaluated) contributes nothing to G.
"""

from __future__ import annotations

import math

import numpy as np

from mixopt.errors import InputError
from mixopt.online.base import OnlineMixer, check_float, check_int, from_json, to_json

#: the paper's largest probing share (full SlimPajama: 2 sweeps x 10 steps x 7 groups of 200 steps)
MAX_PROBE_SHARE = 0.7
PAPER_LP_STEPS = 10      # steps per probe in every released recipe but the two-domain ones


class AioliMixer(OnlineMixer):
    method = "aioli"
    defaults = {
        "lp_rounds": 2, "lp_steps": None, "eta": 1.0, "ema": 0.1, "one_hot_factor": 0.75,
        "normalize": True, "diagonal": False, "update_steps": None, "prior_steps": None,
        "anchor": "uniform",
    }

    def _configure(self) -> None:
        o = self.options
        if self.K < 2:
            raise InputError("domains: aioli needs at least 2 domains")
        o["lp_rounds"] = check_int("lp_rounds", o["lp_rounds"], 1)
        if o["update_steps"] is not None:
            o["update_steps"] = check_int("update_steps", o["update_steps"], 1)
        if o["prior_steps"] is not None:
            o["prior_steps"] = check_int("prior_steps", o["prior_steps"], 0)
        if o["lp_steps"] is None and o["update_steps"] is not None:
            o["lp_steps"] = PAPER_LP_STEPS
        elif o["lp_steps"] is None:            # the paper's 10, or the longest probes that fit (1: the error below)
            o["lp_steps"] = next((n for n in range(PAPER_LP_STEPS, 0, -1) if self._room(n)), 1)
        o["lp_steps"] = check_int("lp_steps", o["lp_steps"], 1)
        o["eta"] = check_float("eta", o["eta"], 0.0)
        if o["ema"] is not None:
            o["ema"] = check_float("ema", o["ema"], 0.0, 1.0)
        o["one_hot_factor"] = check_float("one_hot_factor", o["one_hot_factor"], 0.0, 1.0, low_open=True)
        o["normalize"] = bool(o["normalize"])
        o["diagonal"] = bool(o["diagonal"])
        if o["anchor"] not in ("uniform", "prior"):
            raise InputError(f"anchor must be 'uniform' (released code) or 'prior', got {o['anchor']!r}")
        if o["one_hot_factor"] < 1 and not o["diagonal"] and o["one_hot_factor"] <= 1.0 / self.K + 1e-12:
            raise InputError(f"one_hot_factor must exceed 1/K = {1 / self.K:.4g} (else the probe mixtures "
                             f"are not invertible), got {o['one_hot_factor']}")
        lp_duration = o["lp_rounds"] * o["lp_steps"] * self.K
        if o["update_steps"] is not None and lp_duration >= o["update_steps"]:
            raise InputError(f"update_steps ({o['update_steps']}) must exceed the probe steps of a round "
                             f"(lp_rounds * lp_steps * K = {lp_duration})")
        o["update_steps"], o["prior_steps"] = self._round_plan(o["lp_steps"])
        if self.steps - o["prior_steps"] <= lp_duration:
            raise InputError(f"steps ({self.steps}) leave no room for one LearnParams sweep after "
                             f"prior_steps ({o['prior_steps']}): need more than {lp_duration} steps "
                             f"(lp_rounds * lp_steps * K)")
        self.lp_duration = lp_duration
        # probe mixtures (rows), projected onto the bounds when there are any
        f = o["one_hot_factor"]
        probes = np.full((self.K, self.K), (1.0 - f) / (self.K - 1))
        np.fill_diagonal(probes, f)
        self.probes = np.stack([self.project(row) for row in probes])
        # tight bounds can make two projected probes alike: then W a_i = G_i by least squares
        self.probes_invertible = bool(np.linalg.matrix_rank(self.probes) == self.K)
        self.anchor_log = (np.zeros(self.K) if o["anchor"] == "uniform"
                           else np.log(np.maximum(self.prior, 1e-12)))
        # dynamic state
        self.phase = "prior" if o["prior_steps"] > 0 else "init"
        self.cycle = 0                     # dynamic rounds completed
        self.order: list[int] = []         # probe order of the current round
        self.probe_index = 0
        self.graph = np.zeros((self.K, self.K))
        self.previous = np.full(self.K, np.nan)
        self.log_weights = self.anchor_log.copy()
        self.ema_graph = None
        self.mixture = self.prior.copy() if o["prior_steps"] > 0 else self._weights_to_mixture(self.log_weights)
        self.last_A = None

    def _round_plan(self, lp_steps: int) -> tuple[int, int]:
        """(update_steps, prior_steps): the options given, else their defaults for probes of lp_steps."""
        o = self.options
        update = o["update_steps"]
        if update is None:
            update = max(self.steps // 200, math.ceil(o["lp_rounds"] * lp_steps * self.K / MAX_PROBE_SHARE))
        prior = o["prior_steps"]
        if prior is None:
            prior = update if self._prior_given else 0
        return update, prior

    def _room(self, lp_steps: int) -> bool:
        """Whether one LearnParams sweep of probes of lp_steps fits the run (after the prior phase)."""
        update, prior = self._round_plan(lp_steps)
        duration = self.options["lp_rounds"] * lp_steps * self.K
        return duration < update and self.steps - prior > duration

    # -------------------------------------------------------------- schedule
    @property
    def probing(self) -> bool:
        """True while the pending/next segment is a LearnParams probe."""
        return self.phase == "probe"

    def _exact_segment(self) -> bool:
        """Probes (and the evaluation before them) measure what lp_steps of one domain do."""
        return self.phase in ("probe", "init")

    def _round_end(self) -> int:
        o = self.options
        return min(self.steps, o["prior_steps"] + (self.cycle + 1) * o["update_steps"])

    def _plan(self):
        o = self.options
        if self.phase == "prior":
            return self.prior.copy(), o["prior_steps"]
        if self.phase == "init":
            return self.mixture.copy(), 0           # evaluate before the first probe, train nothing
        if self.phase == "probe":
            if not self.order:
                self.order = np.concatenate(
                    [self.rng.permutation(self.K) for _ in range(o["lp_rounds"])]).tolist()
                self.probe_index = 0
                self.graph = np.zeros((self.K, self.K))
            return self.probes[self.order[self.probe_index]].copy(), o["lp_steps"]
        return self.mixture.copy(), max(0, self._round_end() - self.step)

    def _observe(self, p, n, losses) -> None:
        if self.phase in ("prior", "init"):
            self.previous = losses.copy()
            self.phase = "probe"
            return
        if self.phase == "probe":
            j = self.order[self.probe_index]
            drop = self.previous - losses
            self.graph[:, j] += np.where(np.isnan(drop), 0.0, drop)
            self.previous = np.where(np.isnan(losses), self.previous, losses)
            self.probe_index += 1
            if self.probe_index == len(self.order) or self.step + n >= self.steps:
                self._update_weights()
                self.order = []
                self.phase = "mix"
                if self._round_end() <= self.step + n:      # nothing left to train this round
                    self.cycle += 1
                    self.phase = "probe"
            return
        # end of a round's training segment: its evaluation starts the next round's LearnParams
        self.previous = np.where(np.isnan(losses), self.previous, losses)
        self.cycle += 1
        self.phase = "probe"

    def _update_weights(self) -> None:
        o = self.options
        graph = self.graph / o["lp_rounds"]
        f = o["one_hot_factor"]
        if f != 1 and not o["diagonal"]:
            if self.probes_invertible:
                A = np.linalg.solve(self.probes, graph.T).T      # rows: W a_i = G_i
            else:
                A = np.linalg.lstsq(self.probes, graph.T, rcond=None)[0].T
        elif f != 1 and o["diagonal"]:
            A = np.diag(np.diag(graph) / np.diag(self.probes))
        else:
            A = graph
        self.last_A = A.copy()
        if o["normalize"]:
            low = A.min()
            if low < 0:
                A = A - low
            total = A.sum()
            if total > 0:
                A = A / total
        first = self.cycle == 0
        if o["ema"] is not None:
            self.ema_graph = A if first else (1 - o["ema"]) * A + o["ema"] * self.ema_graph
            self.log_weights = self.anchor_log + o["eta"] * self._column_sum(self.ema_graph)
        else:
            base = self.anchor_log if first else self.log_weights
            self.log_weights = base + o["eta"] * self._column_sum(A)
        self.mixture = self._weights_to_mixture(self.log_weights)

    def _column_sum(self, A: np.ndarray) -> np.ndarray:
        # == A.sum(axis=0) for equal objective weights; elementwise (not BLAS) so that a resumed
        # mixer rounds exactly as an uninterrupted one
        return self.K * (self.objective[:, None] * A).sum(axis=0)

    def _weights_to_mixture(self, log_weights: np.ndarray) -> np.ndarray:
        return self.project(np.exp(log_weights - log_weights.max()))

    # -------------------------------------------------------------- state
    def _get_state(self) -> dict:
        return {
            "phase": self.phase, "cycle": self.cycle, "order": list(self.order),
            "probe_index": self.probe_index, "graph": to_json(self.graph),
            "previous": to_json(self.previous), "log_weights": to_json(self.log_weights),
            "ema_graph": to_json(self.ema_graph), "last_A": to_json(self.last_A),
        }

    def _set_state(self, state: dict) -> None:
        self.phase = state["phase"]
        self.cycle = int(state["cycle"])
        self.order = [int(i) for i in state["order"]]
        self.probe_index = int(state["probe_index"])
        self.graph = from_json(state["graph"])
        self.previous = from_json(state["previous"])
        self.log_weights = from_json(state["log_weights"])
        self.ema_graph = from_json(state["ema_graph"])
        self.last_A = from_json(state["last_A"])
