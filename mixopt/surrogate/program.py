"""Fast scoring of an objective over many mixtures.

The search does not need every loss column of every member: it needs one number per mixture, the
objective sum_e o_e L_e(w). For the smooth surrogates that number has one shape,

    value_p(w) = const_p + phi(w) . lin_p + w' Q_p w + sum_c out_cp exp(clip(phi(w) . A_c + bias_c))

with phi(w) = (w, log(w + eps)): ridge models and the constant are the linear part (so any number
of them, over any number of loss columns, fold into one vector), each mixing-law column is one
exponential term. `Program` holds P such outputs at once (P = 1 for the objective, P = R for R
bootstrap replicas), and programs add: an ensemble's objective is the weighted sum of its members'.
Scoring then costs one (n, 2K) feature matrix, one matrix product and one exponential per mixing-law
column that the objective touches, in cache-sized batches: a million mixtures in well under a
second on one core.
"""

from __future__ import annotations

import numpy as np

from mixopt.surrogate.features import LOG_EPS

EXPONENT_CLIP = 30.0
BATCH_ROWS = 32_768


class Program:
    """P outputs of the form in the module docstring. lin (2K, P), const (P,), A (2K, C), bias
    (C,), out (C, P), Q (P, K, K) or None."""

    def __init__(self, K: int, const, lin=None, A=None, bias=None, out=None, Q=None):
        self.K = int(K)
        self.const = np.atleast_1d(np.asarray(const, dtype=np.float64))
        P = len(self.const)
        self.lin = np.zeros((2 * K, P)) if lin is None else np.asarray(lin, dtype=np.float64).reshape(2 * K, P)
        self.A = np.zeros((2 * K, 0)) if A is None else np.asarray(A, dtype=np.float64).reshape(2 * K, -1)
        C = self.A.shape[1]
        self.bias = np.zeros(0) if bias is None else np.asarray(bias, dtype=np.float64).reshape(C)
        self.out = np.zeros((0, P)) if out is None else np.asarray(out, dtype=np.float64).reshape(C, P)
        self.Q = None if Q is None else np.asarray(Q, dtype=np.float64).reshape(P, K, K)
        self._compile()

    @property
    def P(self) -> int:
        return len(self.const)

    def _compile(self) -> None:
        self.uses_log = bool(np.any(self.lin[self.K:] != 0) or np.any(self.A[self.K:] != 0))
        keep = np.any(self.out != 0, axis=1)                     # exponential terms that matter
        self.A, self.bias, self.out = self.A[:, keep], self.bias[keep], self.out[keep]
        rows = 2 * self.K if self.uses_log else self.K
        self._matrix = np.ascontiguousarray(np.hstack([self.lin[:rows], self.A[:rows]]))   # (rows, P + C)
        if self.Q is not None:
            self._Qflat = np.ascontiguousarray(self.Q.transpose(1, 0, 2).reshape(self.K, self.P * self.K))

    def __add__(self, other: "Program") -> "Program":
        if other.K != self.K or other.P != self.P:
            raise ValueError("programs over different spaces or output counts cannot be added")
        Q = None
        if self.Q is not None or other.Q is not None:
            Q = (0 if self.Q is None else self.Q) + (0 if other.Q is None else other.Q)
        return Program(self.K, self.const + other.const, self.lin + other.lin,
                       np.hstack([self.A, other.A]), np.concatenate([self.bias, other.bias]),
                       np.vstack([self.out, other.out]), Q)

    def scaled(self, factor: float) -> "Program":
        return Program(self.K, self.const * factor, self.lin * factor, self.A, self.bias, self.out * factor,
                       None if self.Q is None else self.Q * factor)

    @staticmethod
    def stack(programs: list["Program"]) -> "Program":
        """One program whose outputs are those of all `programs`, side by side."""
        K = programs[0].K
        P = sum(p.P for p in programs)
        C = sum(p.A.shape[1] for p in programs)
        const, lin = np.concatenate([p.const for p in programs]), np.hstack([p.lin for p in programs])
        out = np.zeros((C, P))
        Q = np.zeros((P, K, K)) if any(p.Q is not None for p in programs) else None
        row = col = 0
        for p in programs:
            c = p.A.shape[1]
            out[row:row + c, col:col + p.P] = p.out
            if Q is not None and p.Q is not None:
                Q[col:col + p.P] = p.Q
            row, col = row + c, col + p.P
        return Program(K, const, lin, np.hstack([p.A for p in programs]),
                       np.concatenate([p.bias for p in programs]), out, Q)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """(n, P) outputs at mixtures X (n, K)."""
        X = np.asarray(X, dtype=np.float64)
        out = np.empty((len(X), self.P))
        for start in range(0, len(X), BATCH_ROWS):
            out[start:start + BATCH_ROWS] = self._rows(X[start:start + BATCH_ROWS])
        return out

    def _rows(self, X: np.ndarray) -> np.ndarray:
        if self.uses_log:
            F = np.empty((len(X), 2 * self.K))
            F[:, :self.K] = X
            np.maximum(X, 0.0, out=F[:, self.K:])
            F[:, self.K:] += LOG_EPS
            np.log(F[:, self.K:], out=F[:, self.K:])
        else:
            F = X
        Z = F @ self._matrix
        P = self.P
        value = Z[:, :P]
        value += self.const
        if self.A.shape[1]:
            E = Z[:, P:]
            E += self.bias
            np.clip(E, -EXPONENT_CLIP, EXPONENT_CLIP, out=E)
            np.exp(E, out=E)
            value += E @ self.out
        if self.Q is not None:       # w' Q_p w as one product and a row-wise dot
            T = (X @ self._Qflat).reshape(len(X), self.P, self.K)
            value += np.einsum("npk,nk->np", T, X)
        return value.copy() if value.base is not None else value


def linear_map_terms(linear_map, intercept: np.ndarray, weights: np.ndarray) -> tuple:
    """(const, lin (2K,), Q (K, K) or None) of sum_e weights_e (intercept_e + linear_map_e(X)) for
    a features.LinearMap with E outputs."""
    K = linear_map.K
    lin = np.zeros(2 * K)
    lin[:K] = linear_map.linear @ weights
    if linear_map.log is not None:
        lin[K:] = linear_map.log @ weights
    Q = np.einsum("e,ejl->jl", weights, linear_map.Q) if hasattr(linear_map, "Q") else None
    const = float(weights @ (intercept - linear_map.offset))
    return const, lin, Q


def law_columns(linear_map, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A (2K, E), bias (E,)) of the exponents linear_map_e(X) + bias_e."""
    K = linear_map.K
    A = np.zeros((2 * K, len(bias)))
    A[:K] = linear_map.linear
    if linear_map.log is not None:
        A[K:] = linear_map.log
    return A, bias - linear_map.offset
