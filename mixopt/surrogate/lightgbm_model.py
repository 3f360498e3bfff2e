"""Gradient-boosted trees (LightGBM), RegMix's surrogate, trained with LightGBM's native API."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from pathlib import Path

from mixopt.io import atomic_write_text
from mixopt.surrogate.base import Surrogate

# RegMix's regression settings (regmix/regression.py): gbdt, L2 objective, 1000 rounds, lr 0.01.
REGMIX_PARAMS = {
    "objective": "regression",
    "boosting_type": "gbdt",
    "learning_rate": 0.01,
    "verbosity": -1,
}
REGMIX_ROUNDS = 1000


class LightGBMSurrogate(Surrogate):
    """LightGBM regression. `regmix=True` keeps RegMix's settings exactly (min_data_in_leaf 20,
    which cannot split at all below 40 runs); otherwise leaves shrink with the number of runs."""

    name = "lightgbm"

    def __init__(self, seed: int = 0, regmix: bool = False, rounds: int = REGMIX_ROUNDS, threads: int = 2, **params):
        super().__init__(seed)
        self.regmix = regmix
        self.rounds = rounds
        self.threads = threads
        self.params = params

    def _params(self, n_rows: int, seed: int) -> dict:
        params = dict(REGMIX_PARAMS)
        if not self.regmix:
            params.update(min_data_in_leaf=int(np.clip(n_rows // 10, 2, 20)), min_data_in_bin=1)
        params.update(
            seed=seed,
            deterministic=True,
            force_row_wise=True,
            num_threads=self.threads,
        )
        params.update(self.params)
        return params

    def _fit_column(self, X, y, seed):
        dataset = lgb.Dataset(X, label=y, params={"verbosity": -1, "min_data_in_bin": 1})
        return lgb.train(self._params(len(y), seed), dataset, num_boost_round=self.rounds)

    def _predict_column(self, model, X):
        return model.predict(X, num_threads=self.threads)

    def model_texts(self) -> list[str]:
        """LightGBM's text format, one model per output column (never pickled)."""
        return [model.model_to_string() for model in self.models_]

    def save(self, directory) -> dict:
        files = []
        for index, text in enumerate(self.model_texts()):
            path = atomic_write_text(Path(directory) / f"lightgbm-{index}.txt", text)
            files.append(path.name)
        return {"kind": self.name, "files": files}
