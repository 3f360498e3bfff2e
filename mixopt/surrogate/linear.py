"""Linear regression on the mixture weights (ridge, closed form), with an optional log link."""

from __future__ import annotations

import numpy as np

from pathlib import Path

from mixopt.io import atomic_write_json
from mixopt.surrogate.base import Surrogate


class LinearSurrogate(Surrogate):
    """y ≈ b + w·β, ridge-regularised. Weights sum to one, so the intercept is absorbed by the
    penalty; predictions stay well defined at every mixture."""

    name = "linear"

    def __init__(self, seed: int = 0, ridge: float = 1e-4):
        super().__init__(seed)
        self.ridge = ridge

    def _fit_column(self, X, y, seed):
        design = np.hstack([np.ones((len(X), 1)), X])
        penalty = self.ridge * len(X) * np.eye(design.shape[1])
        penalty[0, 0] = 0.0
        return np.linalg.solve(design.T @ design + penalty, design.T @ y)

    def _predict_column(self, coefficients, X):
        return coefficients[0] + X @ coefficients[1:]

    def save(self, directory) -> dict:
        path = atomic_write_json(Path(directory) / "linear.json",
                                 {"ridge": self.ridge, "coefficients": [c.tolist() for c in self.models_]})
        return {"kind": self.name, "files": [path.name]}
