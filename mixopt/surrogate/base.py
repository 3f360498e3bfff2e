"""The surrogate interface: scikit-learn style fit/predict over mixtures, inputs checked at the door.

Every surrogate models a loss, and a loss is never negative and, over mixtures like the runs, not
much below the best of them: predictions pass through a soft floor fitted on the runs (see
`loss_floor`), so that no model form, however it extrapolates, hands the search a mixture predicted
at -4 nats. The floor is the identity above floor + width, so it changes nothing the runs support.
"""

from __future__ import annotations

import numpy as np

from mixopt.errors import InputError

FLOOR_SPREADS = 1.0      # the floor: the best run minus this many standard deviations of the runs (and >= 0)
FLOOR_WIDTH = 0.1        # the floor bends over this many standard deviations of the runs


def loss_floor(Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(floor (E,), width (E,)) per loss column: min(y) - FLOOR_SPREADS * std(y), and at least 0
    when every run's loss is (a cross-entropy or bits per byte cannot go below zero; a mixture the
    runs did not try is not believed to beat the best of them by more than the spread between them)."""
    low, sd = Y.min(axis=0), Y.std(axis=0)
    floor = low - FLOOR_SPREADS * sd
    floor = np.where(low >= 0, np.maximum(floor, 0.0), floor)
    return floor, np.maximum(FLOOR_WIDTH * sd, 1e-12)


def soft_floor(values: np.ndarray, floor, width) -> np.ndarray:
    """values above floor + width unchanged; below, floor + width * exp((v - floor - width) / width):
    continuous with a continuous slope, increasing, never below the floor."""
    knee = floor + width
    below = np.minimum(values - knee, 0.0) / width
    return np.where(values >= knee, values, knee + width * (np.exp(below) - 1.0))


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
    """Base class. Subclasses implement either _fit(X, Y) / _predict(X) -> (n, E) for all loss
    columns at once, or _fit_column(X, y, seed) -> model / _predict_column(model, X) -> (n,), one
    model per column. `smooth` says whether predictions are differentiable in the mixture (the
    search polishes smooth surrogates with a gradient method)."""

    name = "surrogate"
    smooth = False

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.models_: list | None = None
        self.n_features_: int | None = None
        self.n_outputs_: int | None = None
        self.single_output_: bool = True
        self.fitted_: bool = False

    def fit(self, X, y) -> "Surrogate":
        single_output = np.ndim(y) == 1
        X, Y = check_Xy(X, y)
        self._fit(X, Y)
        self.floor_, self.floor_width_ = loss_floor(Y)
        self.ceiling_ = Y.max(axis=0) + FLOOR_SPREADS * Y.std(axis=0)
        self.n_features_ = X.shape[1]
        self.n_outputs_ = Y.shape[1]
        self.single_output_ = single_output
        self.fitted_ = True
        return self

    def predict(self, X) -> np.ndarray:
        """(n,) for a model fitted on a 1-d y, else (n, E); never below the loss floor (see
        `loss_floor`)."""
        columns = soft_floor(self._predict(self._check_predict_input(X)), self.floor_, self.floor_width_)
        return columns[:, 0] if self.single_output_ else columns

    def predict_std(self, X) -> np.ndarray:
        """The model's own uncertainty at X (same shape as predict). Models without one say 0."""
        X = self._check_predict_input(X)
        std = self._predict_std(X)
        return std[:, 0] if self.single_output_ else std

    def min_runs(self, K: int) -> int:
        """The fewest runs this model may be fitted on over K domains inside an ensemble: models
        whose parameters are not all shrunk by a chosen penalty need one run per parameter."""
        return 2

    def predict_replicas(self, X) -> np.ndarray | None:
        """(R, n, E) predictions of R bootstrap replicas, or None for models without them."""
        return None

    def objective_spread(self, X, weights: np.ndarray | None = None) -> np.ndarray:
        """(n,) uncertainty of the objective sum_e weights_e * prediction_e at X (weights None: the
        single output). Here the spread over bootstrap replicas; ensembles add their members'
        disagreement."""
        replicas = self.predict_replicas(X)
        if replicas is None:
            return np.zeros(len(np.atleast_2d(X)))
        return np.std(_combine(replicas, weights), axis=0)

    def objective_weights(self, weights: np.ndarray | None) -> np.ndarray:
        """(E,) weights over the loss columns; None: the first (a single output's) column."""
        if weights is None:
            v = np.zeros(self.n_outputs_)
            v[0] = 1.0
            return v
        v = np.asarray(weights, dtype=np.float64).reshape(-1)
        if len(v) != self.n_outputs_:
            raise InputError(f"objective has {len(v)} weights for {self.n_outputs_} loss columns")
        return v

    def objective_program(self, weights: np.ndarray):
        """A surrogate.program.Program for sum_e weights_e * prediction_e (one output), or None
        for models that have no closed form (trees): they are scored through predict."""
        return None

    def objective(self, weights: np.ndarray | None = None):
        """(n, K) -> (n,): the objective sum_e weights_e * prediction_e, by its compiled program
        where the model has one (many times faster over many mixtures), else through predict;
        never below the objective of the columns' floors (for non-negative weights)."""
        if not self.fitted_:
            raise InputError(f"{self.name} surrogate is not fitted: call fit(X, y) first")
        v = self.objective_weights(weights)
        program = self.objective_program(v)
        if program is not None:
            def raw(X):
                return program(self._check_predict_input(X))[:, 0]
        else:
            def raw(X):
                return self._predict(self._check_predict_input(X)) @ v
        if np.any(v < 0):
            return raw
        floor, width = float(self.floor_ @ v), float(max(self.floor_width_ @ v, 1e-12))
        return lambda X: soft_floor(raw(X), floor, width)

    def _check_predict_input(self, X) -> np.ndarray:
        if not self.fitted_:
            raise InputError(f"{self.name} surrogate is not fitted: call fit(X, y) first")
        X = check_X(X)
        if X.shape[1] != self.n_features_:
            raise InputError(f"X has {X.shape[1]} columns, the surrogate was fitted on {self.n_features_}")
        return X

    def save(self, directory) -> dict:
        """Persist the fitted model under `directory` without pickle (LightGBM text format, JSON)
        and return a JSON-ready description: {"kind": ..., "files": [...], ...}."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    # -- copies fitted on reweighted rows (cross-validation folds, bootstrap replicas) -----------
    def get_params(self) -> dict:
        """The constructor arguments (scikit-learn style): clone() builds an unfitted twin."""
        return {"seed": self.seed}

    def clone(self) -> "Surrogate":
        return type(self)(**self.get_params())

    def fit_replicas(self, X, Y, W) -> "Replicas":
        """Fit one copy per row of W (R, n): row weights, 0 = unused, integer counts repeat rows
        (folds are 0/1 masks, bootstrap replicas multinomial counts). Subclasses that can solve
        all copies at once override this."""
        X, Y = check_Xy(X, Y)
        models = []
        for weights in np.asarray(W):
            rows = np.repeat(np.arange(len(X)), np.round(weights).astype(int))
            models.append(self.clone().fit(X[rows], Y[rows]))
        return ModelReplicas(models)

    def bootstrap(self, X, Y, W) -> "Replicas":
        """Replicas for uncertainty (W: resampling counts); may warm-start from this fit."""
        return self.fit_replicas(X, Y, W)

    # -- for subclasses ------------------------------------------------------------------------
    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        self.models_ = [self._fit_column(X, Y[:, e], self.seed + e) for e in range(Y.shape[1])]

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.stack([self._predict_column(model, X) for model in self.models_], axis=1)

    def _predict_std(self, X: np.ndarray) -> np.ndarray:
        return np.zeros((len(X), self.n_outputs_))

    def _fit_column(self, X: np.ndarray, y: np.ndarray, seed: int):
        raise NotImplementedError

    def _predict_column(self, model, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"


class Replicas:
    """Copies of a surrogate fitted on reweighted rows. predict(X) -> (R, n, E); predict(X, r) -> (n, E)."""

    def program(self, weights: np.ndarray):
        """A Program with one output per replica: sum_e weights_e * prediction_e; None if none."""
        return None

    def predict(self, X: np.ndarray, replica: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


class ModelReplicas(Replicas):
    def __init__(self, models: list):
        self.models = models

    def predict(self, X, replica=None):
        def one(model):
            out = model.predict(X)
            return out[:, None] if out.ndim == 1 else out
        if replica is not None:
            return one(self.models[replica])
        return np.stack([one(model) for model in self.models])

    def __len__(self) -> int:
        return len(self.models)


def _combine(values: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """(..., n, E) -> (..., n): the objective (first column when weights is None)."""
    return values[..., 0] if weights is None else values @ np.asarray(weights, dtype=np.float64)
