"""DoReMi's domain reweighting (Xie et al. 2023, arXiv:2305.10429), run online on the main model.

Reference: github.com/sangmichaelxie/doremi, doremi/trainer.py (DoReMiTrainer.update_domain_weights,
optimizer 'doremiv1'), and the re-implementation in HazyResearch/aioli trainer/doremi_trainer.py.
Each update:
    score_j = max(loss_j - reference_loss_j, 0)          (a domain not measured keeps its last score)
    log w  += eta * score;  w = softmax(log w);  w = (1 - eps) * w + eps / K
with eta = 1 and eps = 1e-3 (the paper's smoothing c; the released code defaults to 1e-4), from
uniform weights. DoReMi proper runs this on a small proxy and trains the large model on the
*average* weights; here the update runs on the main model's eval losses once per round (option
`average=True` hands out the running average instead of the current weights).

`reference_losses` (required): the reference model's per-domain losses, either (K,) (fixed) or
(n, K) at `reference_steps` (n increasing steps; linearly interpolated at each round's end).
"""

from __future__ import annotations

import numpy as np

from mixopt.errors import InputError
from mixopt.online.base import OnlineMixer, check_float, check_int, from_json, to_json


class DoReMiMixer(OnlineMixer):
    method = "doremi"
    defaults = {"reference_losses": None, "reference_steps": None, "eta": 1.0, "eps": 1e-3,
                "round_steps": None, "average": False}

    def _configure(self) -> None:
        o = self.options
        if o["reference_losses"] is None:
            raise InputError("reference_losses: doremi needs the per-domain losses of a reference model")
        ref = np.asarray(o["reference_losses"], dtype=np.float64) if not isinstance(
            o["reference_losses"], str) else None
        if ref is None or ref.ndim not in (1, 2) or ref.shape[-1] != self.K or not np.all(np.isfinite(ref)):
            raise InputError(f"reference_losses must be finite, shape ({self.K},) or (n, {self.K})")
        if ref.ndim == 2:
            if o["reference_steps"] is None:
                raise InputError("reference_steps: needed with a (n, K) reference_losses table")
            at = np.asarray(o["reference_steps"], dtype=np.float64)
            if at.shape != (ref.shape[0],) or not np.all(np.isfinite(at)) or np.any(np.diff(at) <= 0):
                raise InputError(f"reference_steps must be {ref.shape[0]} increasing finite steps")
            o["reference_steps"] = at
        elif o["reference_steps"] is not None:
            raise InputError("reference_steps: only with a (n, K) reference_losses table")
        o["reference_losses"] = ref
        o["eta"] = check_float("eta", o["eta"], 0.0)
        o["eps"] = check_float("eps", o["eps"], 0.0, 1.0)
        o["round_steps"] = (max(1, self.steps // 100) if o["round_steps"] is None
                            else check_int("round_steps", o["round_steps"], 1))
        o["average"] = bool(o["average"])
        self.log_weights = np.log(self.project(np.ones(self.K)))
        self.scores = np.zeros(self.K)
        self.weight_sum = np.zeros(self.K)
        self.updates = 0
        self.mixture = np.exp(self.log_weights)

    def _reference(self, step: int) -> np.ndarray:
        ref = self.options["reference_losses"]
        if ref.ndim == 1:
            return ref
        at = self.options["reference_steps"]
        return np.array([np.interp(step, at, ref[:, j]) for j in range(self.K)])

    def _plan(self):
        return self.mixture.copy(), self.options["round_steps"]

    def _observe(self, p, n, losses) -> None:
        o = self.options
        excess = losses - self._reference(self.step + n)
        self.scores = np.where(np.isnan(excess), self.scores, np.maximum(excess, 0.0))
        log_w = self.log_weights + o["eta"] * self.scores
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        w = (1 - o["eps"]) * w + o["eps"] / self.K
        w = self.project(w)
        self.log_weights = np.log(w)
        self.weight_sum += w
        self.updates += 1
        self.mixture = self.project(self.weight_sum / self.updates) if o["average"] else w

    def _get_state(self) -> dict:
        return {"log_weights": to_json(self.log_weights), "scores": to_json(self.scores),
                "weight_sum": to_json(self.weight_sum), "updates": self.updates}

    def _set_state(self, state: dict) -> None:
        self.log_weights = from_json(state["log_weights"])
        self.scores = from_json(state["scores"])
        self.weight_sum = from_json(state["weight_sum"])
        self.updates = int(state["updates"])
