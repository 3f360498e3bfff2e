"""A cross-validated ensemble: members combined by stacking, uncertainty by bootstrap.

fit(X, Y), for each loss column:
  1. every member predicts each run from a fit on the other folds (k-fold, out-of-fold);
  2. non-negative weights summing to one combine the members' out-of-fold predictions best
     (stacked regression, Breiman 1996): a member that does not generalise gets weight 0, and a
     single member wins outright when it is best alone; `cv_scores_` holds every member's
     cross-validated RMSE and the ensemble's own (its out-of-fold RMSE, slightly optimistic since
     the weights saw the same folds);
  3. the members with weight are refitted on all runs, and on `bootstrap` resamples of them: the
     spread of the weighted ensemble over those resamples is `predict_std`, the uncertainty that
     sequential design spends proxies on.

The default members are smooth and fast: both mixing laws, ridge models (linear, with log terms,
with log terms and pairwise interactions) and the constant (the runs' mean), which the stacking
leans on when nothing else generalises, so that few or noisy runs shrink predictions toward the
mean instead of extrapolating. The objective of all of them compiles into one surrogate.program
(a million mixtures score in about a second on one core); LightGBM can be added (members=(..., "lightgbm")), at about 100 s per
million mixtures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixopt.errors import InputError
from mixopt.io import atomic_write_json
from mixopt.surrogate.base import Surrogate, _combine
from mixopt.surrogate.selection import fold_weights, stacking_weights

DEFAULT_MEMBERS = ("mixing-law", "mixing-law-wlog", "linear-wlog", "linear", "quadratic-wlog", "constant")
MIN_RUNS_FOR_CV = 8
CREDIBLE_RATIO = 2.0      # members within this factor of the best CV RMSE count as plausible alternatives


class EnsembleSurrogate(Surrogate):
    name = "ensemble"

    def __init__(self, seed: int = 0, members=None, folds: int = 5, bootstrap: int = 8):
        super().__init__(seed)
        self.members = tuple(DEFAULT_MEMBERS if members is None else members)
        if not self.members:
            raise InputError("an ensemble needs at least one member")
        self.folds = int(folds)
        self.bootstrap = int(bootstrap)

    @property
    def smooth(self) -> bool:
        return all(getattr(m, "smooth", False) for m, w in zip(self.fitted_members_, self.weights_.T) if np.any(w > 0))

    def get_params(self) -> dict:
        return {"seed": self.seed, "members": self.members, "folds": self.folds, "bootstrap": self.bootstrap}

    def _make(self, kind: str) -> Surrogate:
        from mixopt.surrogate import make_surrogate

        return make_surrogate(kind, self.seed)

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        n, E = Y.shape
        M = len(self.members)
        makers = [self._make(kind) for kind in self.members]
        scores: dict[str, float] = {}
        if n >= MIN_RUNS_FOR_CV and M > 1:
            folds = min(self.folds, n)
            W, held = fold_weights(n, folds, self.seed)
            oof = np.empty((M, n, E))
            for m, member in enumerate(makers):
                replicas = member.fit_replicas(X, Y, W)
                for f, rows in enumerate(held):
                    oof[m, rows] = replicas.predict(X[rows], f)
                scores[member.name] = float(np.sqrt(np.mean((oof[m] - Y) ** 2)))
            weights = np.stack([stacking_weights(oof[:, :, e].T, Y[:, e]) for e in range(E)], axis=1)   # (M, E)
            stacked = np.einsum("me,mne->ne", weights, oof)
            scores[self.name] = float(np.sqrt(np.mean((stacked - Y) ** 2)))
            self.oof_ = stacked
        else:
            self.oof_ = None
            weights = np.zeros((M, E))
            weights[0] = 1.0                                   # too few runs to cross-validate: the first member
        self.weights_ = weights
        self.cv_scores_ = scores
        used = np.flatnonzero(weights.sum(axis=1) > 0)
        if scores:
            member_scores = np.array([scores[member.name] for member in makers])
            credible = np.flatnonzero(member_scores <= CREDIBLE_RATIO * member_scores.min())
        else:
            credible = used
        self.credible_ = np.union1d(credible, used)
        self.fitted_members_ = [member.fit(X, Y) if m in self.credible_ else member for m, member in enumerate(makers)]
        self.replicas_ = {}
        if self.bootstrap > 0 and n >= 4:
            rng = np.random.default_rng([self.seed, 7919])
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=self.bootstrap).astype(np.float64)
            for m in used:
                self.replicas_[m] = self.fitted_members_[m].bootstrap(X, Y, counts)

    def member_predictions(self, X: np.ndarray, members=None) -> np.ndarray:
        """(M, n, E) predictions of the fitted members (zeros for members not fitted or not asked)."""
        out = np.zeros((len(self.members), len(X), self.n_outputs_))
        wanted = np.flatnonzero(self.weights_.sum(axis=1) > 0) if members is None else members
        for m, member in enumerate(self.fitted_members_):
            if m in wanted:
                prediction = member.predict(X)
                out[m] = prediction[:, None] if prediction.ndim == 1 else prediction
        return out

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.einsum("me,mne->ne", self.weights_, self.member_predictions(X))

    def predict_replicas(self, X) -> np.ndarray | None:
        """(R, n, E): the stacked ensemble refitted on each bootstrap resample."""
        if not self.replicas_:
            return None
        X = self._check_predict_input(X)
        total = 0.0
        for m, replicas in self.replicas_.items():
            total = total + self.weights_[m][None, None, :] * replicas.predict(X)
        return total

    def objective_program(self, weights):
        """The stacked objective as one Program (None if a used member has none, e.g. LightGBM)."""
        v = np.asarray(weights, dtype=np.float64)
        total = None
        for m in np.flatnonzero(self.weights_.sum(axis=1) > 0):
            program = self.fitted_members_[m].objective_program(v * self.weights_[m])
            if program is None:
                return None
            total = program if total is None else total + program
        return total

    def _spread_program(self, weights):
        """One Program with outputs [stacked objective, credible members' objectives, bootstrap
        replicas' stacked objectives] (see objective_spread), cached per objective; None if some
        member or replica has no program."""
        v = np.asarray(weights, dtype=np.float64)
        key = v.tobytes()
        cache = getattr(self, "_spread_cache", None)
        if cache is not None and cache[0] == key:
            return cache[1]
        stacked = self.objective_program(v)
        parts = None
        if stacked is not None:
            members = [self.fitted_members_[m].objective_program(v) for m in self.credible_]
            replicas = None
            for m, reps in self.replicas_.items():
                program = reps.program(v * self.weights_[m])
                if program is None:
                    replicas = None
                    break
                replicas = program if replicas is None else replicas + program
            if all(p is not None for p in members) and (replicas is not None or not self.replicas_):
                from mixopt.surrogate.program import Program

                parts = (Program.stack([stacked, *members] + ([replicas] if replicas is not None else [])),
                         len(members))
        self._spread_cache = (key, parts)
        return parts

    def _predict_std(self, X: np.ndarray) -> np.ndarray:
        return np.sqrt(self._variances(X, None))

    def objective_spread(self, X, weights: np.ndarray | None = None) -> np.ndarray:
        """(n,) the objective's uncertainty: bootstrap variance of the stacked ensemble plus the
        mean squared disagreement of the plausible members (CV RMSE within 2x the best) with it.
        Far from the runs, model forms that fit the runs equally well extrapolate differently; the
        bootstrap alone, which refits one form, does not see that."""
        X = self._check_predict_input(X)
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        compiled = self._spread_program(self.objective_weights(w))
        if compiled is not None:
            program, n_members = compiled
            values = program(X)
            stacked, members, replicas = values[:, 0], values[:, 1:1 + n_members], values[:, 1 + n_members:]
            variance = np.mean((members - stacked[:, None]) ** 2, axis=1)
            if replicas.shape[1]:
                variance = variance + np.var(replicas, axis=1)
            return np.sqrt(variance)
        return np.sqrt(self._variances(X, w))

    def _variances(self, X: np.ndarray, weights) -> np.ndarray:
        members = self.member_predictions(X, self.credible_)
        combined = lambda values: values if weights is None else (values @ weights)[..., None]
        stacked = combined(np.einsum("me,mne->ne", self.weights_, members))
        alternatives = combined(members[self.credible_])
        variance = np.mean((alternatives - stacked[None]) ** 2, axis=0)
        replicas = self.predict_replicas(X) if self.replicas_ else None
        if replicas is not None:
            variance = variance + np.var(combined(replicas), axis=0)
        return variance if weights is None else variance[:, 0]

    def save(self, directory) -> dict:
        directory = Path(directory)
        members = []
        for m, member in enumerate(self.fitted_members_):
            if not np.any(self.weights_[m] > 0):
                continue
            if hasattr(member, "to_json"):
                members.append({"weights": self.weights_[m].tolist(), **member.to_json()})
            else:
                info = member.save(directory, prefix=f"member-{m}-{member.name}")
                members.append({"weights": self.weights_[m].tolist(), **info})
        payload = {"kind": self.name, "members": members, "cv_rmse": self.cv_scores_,
                   "prediction": "sum over members of weights[column] * member prediction"}
        path = atomic_write_json(directory / "ensemble.json", payload)
        files = [path.name] + [f for member in members for f in member.get("files", [])]
        return {"kind": self.name, "files": files,
                "members": {m["kind"]: m["weights"] for m in members}}
