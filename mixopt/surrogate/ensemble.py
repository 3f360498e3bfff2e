"""A cross-validated ensemble: members combined by stacking, uncertainty by bootstrap and coverage.

fit(X, Y), for each loss column:
  1. members enter only when the runs can carry them: a member that needs more runs than a
     training fold has (a mixing law with a slope per feature needs one run per parameter, a
     pairwise model one run per four features) stays out (`Surrogate.min_runs`; `admitted_`);
  2. every admitted member predicts each run from a fit on the other folds (k-fold, out-of-fold),
     and the fold fits also predict a pool of mixtures recombined from the runs' own per-domain
     weights (selection.recombined_mixtures: each domain as often and, when enough runs gave it
     weight, at the weights the runs gave it, in combinations no run tried: what an unseen run of
     the same swarm looks like). How much the fold fits disagree there is the member's
     instability: its jackknife standard deviation at unseen mixtures, in standard deviations of
     the runs' losses (`instability_`, the largest over loss columns; predictions far above every
     run are capped first, as they never become a recommendation, while predictions far below
     the runs count in full: they are the first picks that mislead);
  3. non-negative weights summing to one combine the members' out-of-fold predictions (stacked
     regression, Breiman 1996), penalised by the instability beyond INSTABILITY_TOLERANCE:
     minimise |oof w - y|^2 + n (sum_m w_m s_m)^2 with s_m = max(0, instability_m - 0.5) sd(y),
     the squared error the combination adds at unseen mixtures (members counted as fully
     correlated) beyond the fold-to-fold wobble that out-of-fold errors already show. A member
     that fits the runs but swings between folds elsewhere (the kind that predicts -4 nats for
     one unseen mixture) cannot take the weight; `cv_scores_` holds
     every member's cross-validated RMSE and the ensemble's own (its out-of-fold RMSE, slightly
     optimistic since the weights saw the same folds), `oof_` the stacked out-of-fold predictions,
     and `honest_oof_` the same with the stacking weights cross-fitted too (each run predicted by
     members and weights that never saw it: on pure noise its skill is about zero);
  4. the members with weight are refitted on all runs, and on `bootstrap` resamples of them.

Uncertainty (`objective_spread`): the bootstrap variance of the stacked ensemble, plus the mean
squared disagreement of the plausible members (CV RMSE within 2x the best) with it, plus coverage
(`coverage_variance`), read from the Gaussian-process member's kernel (fitted whenever that member
is admitted, weighted or not): the share u(x) of prior variance it leaves at a mixture after
conditioning on the runs is about 0 at a run and 1 far from every run. Out-of-fold errors already
price the distance of an unseen run from the others (held-out runs are at that distance), so
coverage counts only the excess over the typical share u0 of the recombined mixtures:
coverage = oof error variance * clip((u(x) - u0) / (1 - u0), 0, 1). A mixture leaning on a domain
that few runs gave weight, or far from every run, is uncertain even where the members agree, while
mixtures as close to the runs as unseen runs usually are get no more than the bootstrap says.
Predictions are clipped to the runs' range widened by one standard deviation before any
spread is taken: beyond it a form is extrapolating, and by how much does not matter.

The default members are smooth: both mixing laws, ridge models (linear, with log terms, with log
terms and pairwise interactions), a Gaussian process on the simplex, and the constant (the runs'
mean), which the stacking leans on when nothing else generalises. The objective of all of them
compiles into one surrogate.program; LightGBM can be added (members=(..., "lightgbm")), at about
100 s per million mixtures. Predictions pass the loss floor of `surrogate.base.loss_floor`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixopt.errors import InputError
from mixopt.io import atomic_write_json
from mixopt.surrogate.base import Surrogate
from mixopt.surrogate.registry import make_surrogate
from mixopt.surrogate.selection import fold_weights, recombined_mixtures, stacking_weights

DEFAULT_MEMBERS = ("mixing-law", "mixing-law-wlog", "linear-wlog", "linear", "quadratic-wlog", "gp", "constant")
MIN_RUNS_FOR_CV = 8
CREDIBLE_RATIO = 2.0      # members within this factor of the best CV RMSE count as plausible alternatives
POOL_SIZE = 512           # recombined mixtures on which the fold fits' disagreement is measured
INSTABILITY_TOLERANCE = 0.5   # fold-to-fold wobble (in standard deviations of the runs) that costs nothing


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
        return make_surrogate(kind, self.seed)

    def _fit(self, X: np.ndarray, Y: np.ndarray) -> None:
        n, E = Y.shape
        M = len(self.members)
        makers = [self._make(kind) for kind in self.members]
        folds = min(self.folds, n)
        train_rows = n - -(-n // folds)                      # the smallest training fold
        admitted = np.array([train_rows >= member.min_runs(X.shape[1]) for member in makers])
        if not admitted.any():
            admitted[-1] = True                               # the last member (the constant by default)
        self.admitted_ = admitted
        scores: dict[str, float] = {}
        instability = np.zeros((M, E))
        if n >= MIN_RUNS_FOR_CV and admitted.sum() > 1:
            W, held = fold_weights(n, folds, self.seed)
            pool = recombined_mixtures(X, POOL_SIZE, self.seed)
            scale = np.maximum(Y.std(axis=0), 1e-12)
            oof = np.zeros((M, n, E))
            for m in np.flatnonzero(admitted):
                replicas = makers[m].fit_replicas(X, Y, W)
                for f, rows in enumerate(held):
                    oof[m, rows] = replicas.predict(X[rows], f)
                scores[makers[m].name] = float(np.sqrt(np.mean((oof[m] - Y) ** 2)))
                # losses far above every run never become a recommendation: their spread is not counted
                on_pool = np.minimum(replicas.predict(pool), Y.max(axis=0) + scale)     # (F, pool, E)
                jackknife = (len(held) - 1) * np.var(on_pool, axis=0)                   # (pool, E)
                instability[m] = np.sqrt(np.mean(jackknife, axis=0)) / scale
            members = np.flatnonzero(admitted)
            excess = np.maximum(instability[members] - INSTABILITY_TOLERANCE, 0.0) * scale[None, :]   # (m, E)
            weights = np.zeros((M, E))
            honest = np.empty((n, E))
            for e in range(E):
                weights[members, e] = stacking_weights(oof[members, :, e].T, Y[:, e], excess[:, e])
                for rows in held:            # cross-fitted: stacking weights that never saw these runs
                    others = np.setdiff1d(np.arange(n), rows)
                    fold_weights_e = stacking_weights(oof[members][:, others, e].T, Y[others, e], excess[:, e])
                    honest[rows, e] = oof[members][:, rows, e].T @ fold_weights_e
            stacked = np.einsum("me,mne->ne", weights, oof)
            scores[self.name] = float(np.sqrt(np.mean((stacked - Y) ** 2)))
            self.oof_ = stacked
            self.honest_oof_ = honest
            self.unexplained_ = np.mean((honest - Y) ** 2, axis=0)
        else:
            self.oof_ = None
            self.honest_oof_ = None
            self.unexplained_ = None
            weights = np.zeros((M, E))
            weights[np.flatnonzero(admitted)[0]] = 1.0  # too few runs to cross-validate: the first admitted member
        self.weights_ = weights
        self.cv_scores_ = scores
        self.instability_ = {makers[m].name: float(instability[m].max()) for m in np.flatnonzero(admitted)}
        used = np.flatnonzero(weights.sum(axis=1) > 0)
        if scores:
            member_scores = np.array([scores.get(member.name, np.inf) for member in makers])
            credible = np.flatnonzero(member_scores <= CREDIBLE_RATIO * member_scores.min())
        else:
            credible = used
        self.credible_ = np.union1d(credible, used)
        self.coverage_member_ = next((m for m, member in enumerate(makers)
                                      if admitted[m] and hasattr(member, "coverage_program")), None)
        fitted = (set(self.credible_.tolist())
                  | ({self.coverage_member_} if self.coverage_member_ is not None else set()))
        self.fitted_members_ = [member.fit(X, Y) if m in fitted else member for m, member in enumerate(makers)]
        self.typical_unexplained_ = None
        coverage = self._coverage_member()
        if coverage is not None and self.unexplained_ is not None:
            shares = coverage.unexplained_from(coverage.coverage_program()(pool))
            self.typical_unexplained_ = np.minimum(np.median(shares, axis=0), 0.99)
        self.replicas_ = {}
        if self.bootstrap > 0 and n >= 4:
            rng = np.random.default_rng([self.seed, 7919])
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=self.bootstrap).astype(np.float64)
            for m in used:
                self.replicas_[m] = self.fitted_members_[m].bootstrap(X, Y, counts)

    def member_predictions(self, X: np.ndarray, members=None) -> np.ndarray:
        """(M, n, E) predictions of the fitted members before any floor (the ensemble floors its
        combination once; zeros for members not fitted or not asked)."""
        X = self._check_predict_input(X)
        out = np.zeros((len(self.members), len(X), self.n_outputs_))
        wanted = np.flatnonzero(self.weights_.sum(axis=1) > 0) if members is None else members
        for m, member in enumerate(self.fitted_members_):
            if m in wanted:
                out[m] = member._predict(X)
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

    def _coverage_member(self):
        return None if self.coverage_member_ is None else self.fitted_members_[self.coverage_member_]

    def _coverage_from(self, t: np.ndarray, v: np.ndarray) -> np.ndarray:
        """(n,) coverage variance of the objective v . L from the coverage program's outputs t."""
        if self.typical_unexplained_ is None:
            return np.zeros(len(t))
        typical = self.typical_unexplained_[None, :]
        beyond = np.clip((self._coverage_member().unexplained_from(t) - typical) / (1.0 - typical), 0.0, 1.0)
        std = np.sqrt(self.unexplained_[None, :] * beyond)                  # (n, E)
        return (std @ np.abs(v)) ** 2

    def coverage_variance(self, X, weights: np.ndarray | None = None) -> np.ndarray:
        """(n,) coverage (see the module docstring): the ensemble's cross-fitted out-of-fold error
        variance, times how far beyond the distance of a typical unseen run X lies from the runs in
        the Gaussian-process member's kernel (0 up to that distance, 1 far from every run). Zeros
        when that member is not admitted or there were too few runs to cross-validate. Columns are
        combined as fully correlated."""
        X = self._check_predict_input(X)
        member = self._coverage_member()
        if member is None:
            return np.zeros(len(X))
        v = self.objective_weights(None if weights is None else np.asarray(weights, dtype=np.float64))
        return self._coverage_from(member.coverage_program()(X), v)

    def _spread_program(self, weights):
        """One Program with outputs [stacked objective, credible members' objectives, bootstrap
        replicas' stacked objectives, coverage terms] (see objective_spread), cached per objective;
        None if some member or replica has no program."""
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
            coverage = self._coverage_member()
            pieces = [stacked, *members] + ([replicas] if replicas is not None else [])
            if all(p is not None for p in members) and (replicas is not None or not self.replicas_):
                from mixopt.surrogate.program import Program

                n_replicas = replicas.P if replicas is not None else 0
                if coverage is not None:
                    pieces.append(coverage.coverage_program())
                parts = (Program.stack(pieces), len(members), n_replicas)
        self._spread_cache = (key, parts)
        return parts

    def _predict_std(self, X: np.ndarray) -> np.ndarray:
        variance = self._variances(X, None)
        member = self._coverage_member()
        if member is not None:
            t = member.coverage_program()(X)
            variance = variance + np.stack([self._coverage_from(t, np.eye(self.n_outputs_)[e])
                                            for e in range(self.n_outputs_)], axis=1)
        return np.sqrt(variance)

    def objective_spread(self, X, weights: np.ndarray | None = None) -> np.ndarray:
        """(n,) the objective's uncertainty: bootstrap variance of the stacked ensemble, plus the
        mean squared disagreement of the plausible members (CV RMSE within 2x the best) with it,
        plus coverage (`coverage_variance`). Far from the runs, model forms that fit the runs
        equally well extrapolate differently, and a bootstrap that refits one form does not see
        that; where the runs are sparse, coverage grows even when the forms agree. Predictions
        are clipped to the runs' range widened by one standard deviation on each side before
        their spread is taken, so the spread stays on the scale of the losses."""
        X = self._check_predict_input(X)
        w = None if weights is None else np.asarray(weights, dtype=np.float64)
        v = self.objective_weights(w)
        compiled = self._spread_program(v)
        if compiled is not None:
            program, n_members, n_replicas = compiled
            values = program(X)
            low, high = self._objective_range(v)
            stacked = np.clip(values[:, 0], low, high)
            members = np.clip(values[:, 1:1 + n_members], low, high)
            replicas = np.clip(values[:, 1 + n_members:1 + n_members + n_replicas], low, high)
            variance = np.mean((members - stacked[:, None]) ** 2, axis=1)
            if n_replicas:
                variance = variance + np.var(replicas, axis=1)
            coverage = self._coverage_member()
            if coverage is not None:
                variance = variance + self._coverage_from(values[:, 1 + n_members + n_replicas:], v)
            return np.sqrt(variance)
        return np.sqrt(self._variances(X, w) + self.coverage_variance(X, w))

    def _objective_range(self, v: np.ndarray) -> tuple[float, float]:
        """(floor, ceiling) of the objective v . L over which spreads are measured: one standard
        deviation of the runs beyond the lowest and highest (for non-negative v)."""
        return float(self.floor_ @ v), float(self.ceiling_ @ v)

    def _variances(self, X: np.ndarray, weights) -> np.ndarray:
        """Bootstrap variance plus the plausible members' disagreement, per loss column (weights
        None) or for the objective; every prediction clipped to the runs' range +- one standard
        deviation first: beyond it a form is extrapolating, and how far does not matter."""
        members = self.member_predictions(X, self.credible_)
        if weights is None:
            low, high = self.floor_, self.ceiling_

            def combined(values):
                return np.clip(values, low, high)
        else:
            low, high = self._objective_range(weights)

            def combined(values):
                return np.clip(values @ weights, low, high)[..., None]
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
                   "instability": self.instability_, "floor": self.floor_.tolist(),
                   "prediction": "soft_floor(sum over members of weights[column] * member prediction, floor) "
                                 "(mixopt.surrogate.base.soft_floor)"}
        path = atomic_write_json(directory / "ensemble.json", payload)
        files = [path.name] + [f for member in members for f in member.get("files", [])]
        return {"kind": self.name, "files": files,
                "members": {m["kind"]: m["weights"] for m in members}}
