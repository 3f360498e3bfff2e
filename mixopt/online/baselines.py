"""Non-adaptive baselines: `static` holds the prior, `stratified` holds the uniform mixture."""

from __future__ import annotations

import numpy as np

from mixopt.online.base import OnlineMixer, check_int


class StaticMixer(OnlineMixer):
    """Holds the prior (the static recommendation) for the whole run; losses are ignored.

    Option `round_steps` (default: the whole run in one segment) splits the run into rounds, for
    a trainer that wants to evaluate every so often anyway."""

    method = "static"
    defaults = {"round_steps": None}

    def _configure(self) -> None:
        value = self.options["round_steps"]
        self.options["round_steps"] = self.steps if value is None else check_int("round_steps", value, 1)
        self.mixture = self._held()

    def _held(self) -> np.ndarray:
        return self.prior.copy()

    def _plan(self):
        return self.mixture.copy(), self.options["round_steps"]


class StratifiedMixer(StaticMixer):
    """Uniform over domains (1/K each; projected onto the bounds if any), whatever the prior."""

    method = "stratified"

    def _held(self) -> np.ndarray:
        return self.project(np.ones(self.K))
