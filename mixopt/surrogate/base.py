"""The surrogate interface: scikit-learn style fit/predict over mixtures, inputs checked at the door."""

from __future__ import annotations

import numpy as np

from mixopt.errors import InputError


def check_X(X, name: str = "X") -> np.ndarray:
    array = np.asarray(X, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] < 2:
        raise InputError(f"{name} must be an (n, K) array of mixtures with n >= 1 and K >= 2, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite values")
    return array


def check_Xy(X, y) -> tuple[np.ndarray, np.ndarray]:
    """Validate training data. Returns X (n, K) and y as (n, E) (a 1-d y becomes one column)."""
    X = check_X(X)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != X.shape[0]:
        raise InputError(f"y must have shape (n,) or (n, E) with n = {X.shape[0]} rows of X, got {np.shape(y)}")
    if not np.all(np.isfinite(y)):
        raise InputError("y contains NaN or infinite values (drop failed runs before fitting)")
    return X, y


class Surrogate:
    """Base class. Subclasses implement _fit_column(X, y_column, seed) -> model and
    _predict_column(model, X) -> (n,). Multi-output targets get one model per column."""

    name = "surrogate"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.models_: list | None = None
        self.n_features_: int | None = None
        self.single_output_: bool = True

    def fit(self, X, y) -> "Surrogate":
        single_output = np.ndim(y) == 1
        X, y = check_Xy(X, y)
        self.models_ = [self._fit_column(X, y[:, e], self.seed + e) for e in range(y.shape[1])]
        self.n_features_ = X.shape[1]
        self.single_output_ = single_output
        return self

    def predict(self, X) -> np.ndarray:
        if self.models_ is None:
            raise InputError(f"{self.name} surrogate is not fitted: call fit(X, y) first")
        X = check_X(X)
        if X.shape[1] != self.n_features_:
            raise InputError(f"X has {X.shape[1]} columns, the surrogate was fitted on {self.n_features_}")
        columns = np.stack([self._predict_column(model, X) for model in self.models_], axis=1)
        return columns[:, 0] if self.single_output_ else columns

    def save(self, directory) -> dict:
        """Persist the fitted model under `directory` without pickle (LightGBM text format, JSON)
        and return a JSON-ready description: {"kind": ..., "files": [...], ...}."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    def _fit_column(self, X: np.ndarray, y: np.ndarray, seed: int):
        raise NotImplementedError

    def _predict_column(self, model, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"
