"""Fast scoring of an objective over many mixtures.

The search does not need every loss column of every member: it needs one number per mixture, the
objective sum_e o_e L_e(w). For the smooth surrogates that number has one shape,

    value_p(w) = const_p + phi(w) . lin_p + w' Q_p w + sum_c out_cp exp(clip(phi(w) . A_c + bias_c))

with phi(w) = (w, log(w + eps), sqrt(w)): ridge models and the constant are the linear part (so
any number of them, over any number of loss columns, fold into one vector), each mixing-law column
is one exponential term, and a Gaussian process on the Hellinger geometry is one exponential term
per run (its kernel exp(-H^2(w, v) / l^2) is exp of a linear function of w and sqrt(w)). `Program`
holds P such outputs at once (P = 1 for the objective, P = R for R bootstrap replicas), and
programs add: an ensemble's objective is the weighted sum of its members'. Scoring then costs one
feature matrix (only the blocks some term uses), one matrix product and one exponential per
exponential term, in cache-sized batches: a million mixtures in well under a second on one core
for the parametric members (a Gaussian process costs one term per run it was fitted on).
"""

from __future__ import annotations

import numpy as np

from mixopt.surrogate.features import LOG_EPS

EXPONENT_CLIP = 30.0
BATCH_ROWS = 32_768


BLOCKS = 3      # phi(w) = (w, log(w + eps), sqrt(w))


def _padded(matrix: np.ndarray, K: int) -> np.ndarray:
    """A (2K or 3K, columns) coefficient matrix as (3K, columns): a missing sqrt block is zero."""
    if matrix.shape[0] == BLOCKS * K:
        return matrix
    if matrix.shape[0] != 2 * K:
        raise ValueError(f"program coefficients have {matrix.shape[0]} rows; expected {2 * K} or {3 * K}")
    return np.vstack([matrix, np.zeros((K, matrix.shape[1]))])


class Program:
    """P outputs of the form in the module docstring. lin (2K or 3K, P), const (P,), A (2K or 3K,
    C), bias (C,), out (C, P), Q (P, K, K) or None. Rows of lin and A follow phi(w): the first K
    multiply w, the next K log(w + eps), the last K (optional) sqrt(w)."""

    def __init__(self, K: int, const, lin=None, A=None, bias=None, out=None, Q=None):
        self.K = int(K)
        self.const = np.atleast_1d(np.asarray(const, dtype=np.float64))
        P = len(self.const)
        self.lin = (np.zeros((BLOCKS * K, P)) if lin is None
                    else _padded(np.asarray(lin, dtype=np.float64).reshape(-1, P), K))
        if A is None:
            self.A = np.zeros((BLOCKS * K, 0))
        else:
            A = np.asarray(A, dtype=np.float64)
            self.A = _padded(A[:, None] if A.ndim == 1 else A, K)
        C = self.A.shape[1]
        self.bias = np.zeros(0) if bias is None else np.asarray(bias, dtype=np.float64).reshape(C)
        self.out = np.zeros((0, P)) if out is None else np.asarray(out, dtype=np.float64).reshape(C, P)
        self.Q = None if Q is None else np.asarray(Q, dtype=np.float64).reshape(P, K, K)
        self._compile()

    @property
    def P(self) -> int:
        return len(self.const)

    def _compile(self) -> None:
        keep = np.any(self.out != 0, axis=1)                     # exponential terms that matter
        self.A, self.bias, self.out = self.A[:, keep], self.bias[keep], self.out[keep]
        if self.A.shape[1] > 1:                                   # one exponential per distinct term
            terms, inverse = np.unique(np.vstack([self.A, self.bias[None, :]]), axis=1, return_inverse=True)
            if terms.shape[1] < self.A.shape[1]:
                out = np.zeros((terms.shape[1], self.out.shape[1]))
                np.add.at(out, inverse.reshape(-1), self.out)
                self.A, self.bias, self.out = terms[:-1], terms[-1], out
        K = self.K
        used = [b for b in range(BLOCKS) if b == 0 or np.any(self.lin[b * K:(b + 1) * K] != 0)
                or np.any(self.A[b * K:(b + 1) * K] != 0)]
        self.blocks = tuple(used)                                # feature blocks that some term reads
        rows = np.concatenate([np.arange(b * K, (b + 1) * K) for b in used])
        self._matrix = np.ascontiguousarray(np.hstack([self.lin[rows], self.A[rows]]))    # (rows, P + C)
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
        if len(self.blocks) == 1:
            F = X
        else:
            K = self.K
            F = np.empty((len(X), K * len(self.blocks)))
            for slot, block in enumerate(self.blocks):
                part = F[:, slot * K:(slot + 1) * K]
                if block == 0:
                    part[:] = X
                elif block == 1:
                    np.maximum(X, 0.0, out=part)
                    part += LOG_EPS
                    np.log(part, out=part)
                else:
                    np.maximum(X, 0.0, out=part)
                    np.sqrt(part, out=part)
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
