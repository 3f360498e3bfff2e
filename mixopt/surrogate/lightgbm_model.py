"""Gradient-boosted trees (LightGBM), RegMix's surrogate, trained with LightGBM's native API."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

from mixopt.io import atomic_write_text
from mixopt.surrogate.base import Surrogate

# RegMix's regression settings (regression.ipynb: LGBMRegressor, gbdt, L2 objective,
# num_iterations 1000, learning_rate 1e-2, seed 42, LightGBM's defaults otherwise: 31 leaves,
# min_data_in_leaf 20). RegMix also early-stopped on its validation runs; we never stop early on
# held-out runs, so all 1000 rounds are trained.
REGMIX_PARAMS = {
    "objective": "regression",
    "boosting_type": "gbdt",
    "learning_rate": 0.01,
    "verbosity": -1,
}
REGMIX_ROUNDS = 1000
REGMIX_SEED = 42


class LightGBMSurrogate(Surrogate):
    """LightGBM regression, one booster per loss column. `regmix=True` keeps RegMix's settings
    exactly (min_data_in_leaf 20, which cannot split at all below 40 runs; seed 42); otherwise
    leaves shrink with the number of runs (min_data_in_leaf = n / 10, between 2 and 20).

    Trees are piecewise constant (`smooth = False`): the search treats them derivative-free.
    Scoring is slow next to the smooth models (about 0.1 ms per mixture for 1000 trees), which is
    why the default ensemble leaves them out. threads=1 by default: on a small, shared machine
    OpenMP threads mostly wait on each other, and a fixed count keeps training deterministic."""

    name = "lightgbm"
    smooth = False

    def __init__(self, seed: int = 0, regmix: bool = False, rounds: int = REGMIX_ROUNDS, threads: int = 1, **params):
        super().__init__(seed)
        self.regmix = regmix
        self.rounds = rounds
        self.threads = threads
        self.params = params
        if regmix:
            self.name = "regmix-lightgbm"

    def get_params(self) -> dict:
        return {"seed": self.seed, "regmix": self.regmix, "rounds": self.rounds, "threads": self.threads, **self.params}

    def _params(self, n_rows: int, seed: int) -> dict:
        params = dict(REGMIX_PARAMS)
        if not self.regmix:
            params.update(min_data_in_leaf=int(np.clip(n_rows // 10, 2, 20)), min_data_in_bin=1)
        params.update(
            seed=REGMIX_SEED if self.regmix else seed,
            deterministic=True,
            force_row_wise=True,
            num_threads=self.threads,
        )
        params.update(self.params)
        return params

    def _fit_column(self, X, y, seed):
        dataset_params = {"verbosity": -1} if self.regmix else {"verbosity": -1, "min_data_in_bin": 1}
        dataset = lgb.Dataset(X, label=y, params=dataset_params)
        return lgb.train(self._params(len(y), seed), dataset, num_boost_round=self.rounds)

    def _predict_column(self, model, X):
        return model.predict(X, num_threads=self.threads)

    def model_texts(self) -> list[str]:
        """LightGBM's text format, one model per output column (never pickled)."""
        return [model.model_to_string() for model in self.models_]

    def save(self, directory, prefix: str = "lightgbm") -> dict:
        files = []
        for index, text in enumerate(self.model_texts()):
            path = atomic_write_text(Path(directory) / f"{prefix}-{index}.txt", text)
            files.append(path.name)
        return {"kind": self.name, "files": files}
