"""The numerical pieces the heads (and :mod:`headstart.baselines`) are built from.

* :class:`SoftmaxObjective`: class-weighted softmax cross-entropy + L2 in scikit-learn's C
  convention (``sum_i w_i * CE_i + ||W||^2 / (2 C)``, intercept not penalised), value and
  gradient, on dense or sparse features; two classes are solved as one weight vector.
* :func:`minimize_lbfgs`: full-batch L-BFGS on such an objective, with a tolerance that also
  resolves warm-started fits.
* :func:`walk_C_path` and :func:`choose_C`: fit a grid of C from strong to weak
  regularisation with warm starts, score each on validation data, pick the best.
* :func:`standardizer`, :func:`restandardize`, :func:`stratified_holdout`,
  :func:`class_weight_vector`, :func:`softmax`: the data handling around them.

Parameters travel in the *full* layout ``[W.ravel(), b]`` with W of shape (k, d).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse as sp

__all__ = [
    "CONSTANT_SPREAD",
    "SoftmaxObjective",
    "choose_C",
    "class_weight_vector",
    "minimize_lbfgs",
    "python_scalar",
    "restandardize",
    "softmax",
    "standardizer",
    "stratified_holdout",
    "walk_C_path",
]

# Two validation log-losses closer than this (relative) count as a tie when choosing C.
_TIE_RTOL = 1e-4


def python_scalar(x: Any) -> Any:
    """numpy scalar -> Python scalar (JSON-able, and equal as a dict key to the label it came
    from); other values unchanged."""
    return x.item() if isinstance(x, np.generic) else x


def class_weight_vector(
    y_idx: np.ndarray,
    n_classes: int,
    class_weight: Any,
    classes: np.ndarray,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Per-class loss weights (shape (n_classes,)) for labels `y_idx` (indices into classes).

    `class_weight` is a head's parameter ('balanced', None or {label: weight}, labels as in
    `classes`); index the result with `y_idx` for per-example weights.

    'balanced' gives ``n / (n_present * count_c)``, computed from the labels given (so the
    weights of a validation set come from the validation labels), with counts weighted by
    `sample_weight` when given (so a weight of 2 counts like a duplicated example); a dict
    maps labels to weights (missing labels weigh 1); None weighs every class 1.
    """
    if class_weight is None:
        return np.ones(n_classes)
    if isinstance(class_weight, str):  # 'balanced'
        counts = np.bincount(y_idx, weights=sample_weight, minlength=n_classes).astype(np.float64)
        present = counts > 0
        out = np.ones(n_classes)
        out[present] = counts.sum() / (present.sum() * counts[present])
        return out
    lookup = {python_scalar(k): float(v) for k, v in class_weight.items()}
    return np.array([lookup.get(python_scalar(c), 1.0) for c in classes], dtype=np.float64)


def stratified_holdout(
    y_idx: np.ndarray, fraction: float, seed: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, holdout) keeping class proportions.

    Every class keeps at least one training example; classes with a single example are
    never held out. The holdout is empty when the data is too small to spare any example.
    """
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    hold: list[np.ndarray] = []
    for c in np.unique(y_idx):
        idx = np.flatnonzero(y_idx == c)
        idx = idx[rng.permutation(len(idx))]
        n_hold = min(round(fraction * len(idx)), len(idx) - 1)
        hold.append(idx[:n_hold])
        train.append(idx[n_hold:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(hold))


#: Relative spread below which a feature is treated as constant (see :func:`standardizer`).
CONSTANT_SPREAD = 1e-5


def standardizer(
    X: np.ndarray, enabled: bool, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) in float64; identity when disabled; constant features get scale 1.

    A feature counts as constant when its spread is below ``CONSTANT_SPREAD`` times the
    larger of its own magnitude and the median spread: float32 rounding alone gives such
    spreads. Dividing by them would amplify any later change of that feature a billionfold,
    which is what fine-tuning does to it (measured: all-MiniLM-L6-v2 on IMDB has a pooled
    dimension with spread 5.6e-10; the first fine-tuning epoch's loss was 80). With
    `sample_weight` the moments are weighted, so a row of weight 2 counts as a duplicate.
    """
    d = X.shape[1]
    if not enabled:
        return np.zeros(d), np.ones(d)
    if sample_weight is None:
        mean = X.mean(axis=0, dtype=np.float64)
        var = X.var(axis=0, dtype=np.float64)
    else:
        mean = np.average(X, axis=0, weights=sample_weight).astype(np.float64)
        var = np.average((X - mean) ** 2, axis=0, weights=sample_weight).astype(np.float64)
    scale = np.sqrt(var)
    typical = float(np.median(scale)) if d else 0.0
    scale[scale <= CONSTANT_SPREAD * np.maximum(np.abs(mean), typical)] = 1.0
    scale[scale == 0] = 1.0
    return mean, scale


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits `z` (n, k), computed stably; `z` itself is left unchanged."""
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _weighted_log_loss(logits: np.ndarray, y_idx: np.ndarray, sample_w: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z[np.arange(len(y_idx)), y_idx] - np.log(np.exp(z).sum(axis=1))
    return float(-(sample_w * logp).sum() / sample_w.sum())


class SoftmaxObjective:
    """Weighted softmax cross-entropy + L2 (scikit-learn's C convention), value and gradient.

    `X` may be dense or scipy-sparse. The two matrix products, which dominate the cost, run in
    `dtype` (float32 for float32 features: twice as fast, and precise enough for the
    tolerances used here); parameters and the per-row arithmetic are float64.

    Callers exchange parameters in the *full* layout ``[W.ravel(), b]`` with W (k, d). For two
    classes the solver works on one vector ``u = W1 - W0`` (half the work): the L2-penalised
    multinomial optimum always has ``W0 = -W1``, so it equals a binary logistic regression with
    twice the C, mapped back as ``W1 = u / 2 = -W0``.

    Parameters: `X` (n, d) features, `y_idx` (n,) class indices, `n_classes`, `cw` per-class
    loss weights (see :func:`class_weight_vector`), `dtype` of the matrix products,
    `sample_weight` optional per-example weights multiplied into the class weights. Call
    :meth:`set_C` before evaluating; calling the object with parameters in the solver's
    layout (:meth:`from_full`) gives ``(value, gradient)`` of the weight-averaged objective.
    """

    def __init__(
        self,
        X: Any,
        y_idx: np.ndarray,
        n_classes: int,
        cw: np.ndarray,
        dtype: Any,
        sample_weight: np.ndarray | None = None,
    ) -> None:
        self.dtype = np.dtype(dtype)
        self.sparse = sp.issparse(X)
        self.X = (
            X.astype(self.dtype).tocsr()
            if self.sparse
            else np.ascontiguousarray(X, dtype=self.dtype)
        )
        self.k = n_classes
        self.d = X.shape[1]
        self.binary = n_classes == 2
        self.Y = np.zeros((len(y_idx), n_classes))
        self.Y[np.arange(len(y_idx)), y_idx] = 1.0
        self.y1 = (y_idx == 1).astype(np.float64)
        self.w = cw[y_idx] if sample_weight is None else cw[y_idx] * sample_weight
        self.sw = float(self.w.sum())
        self.l2 = 0.0

    def set_C(self, C: float) -> None:
        """Set the inverse L2 strength (scikit-learn's convention) of later evaluations."""
        self.l2 = 1.0 / ((2 * C if self.binary else C) * self.sw)

    def from_full(self, full: np.ndarray) -> np.ndarray:
        """Full layout ``[W.ravel(), b]`` -> the solver's layout (one vector for 2 classes)."""
        if not self.binary:
            return full
        d = self.d
        return np.concatenate([full[d : 2 * d] - full[:d], [full[2 * d + 1] - full[2 * d]]])

    def to_full(self, theta: np.ndarray) -> np.ndarray:
        """The solver's layout -> full layout ``[W.ravel(), b]`` (inverse of from_full)."""
        if not self.binary:
            return theta
        half = theta / 2
        return np.concatenate([-half[:-1], half[:-1], [-half[-1], half[-1]]])

    def _matvec(self, W: np.ndarray) -> np.ndarray:
        """X @ W (W shaped (d,) or (d, k)), as float64."""
        return np.asarray(self.X @ W.astype(self.dtype), dtype=np.float64)

    def _rmatvec(self, R: np.ndarray) -> np.ndarray:
        """X.T @ R (R shaped (n,) or (n, k)), as float64 shaped (d,) or (d, k)."""
        Rd = R.astype(self.dtype)
        out = self.X.T @ Rd if self.sparse else (Rd.T @ self.X).T
        return np.asarray(out, dtype=np.float64)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        ww = self.w / self.sw
        if self.binary:
            u, beta = theta[:-1], theta[-1]
            z = self._matvec(u) + beta
            # log(1 + e^z) - y z, and its derivative sigmoid(z) - y, computed stably
            loss = float((ww * (np.logaddexp(0.0, z) - self.y1 * z)).sum())
            r = ww * (0.5 * (1.0 + np.tanh(0.5 * z)) - self.y1)
            grad = self._rmatvec(r) + self.l2 * u
            return loss + 0.5 * self.l2 * float(u @ u), np.concatenate([grad, [r.sum()]])
        k, d = self.k, self.d
        W = theta[: k * d].reshape(k, d)
        b = theta[k * d :]
        Z = self._matvec(W.T) + b
        Z -= Z.max(axis=1, keepdims=True)
        logp = Z - np.log(np.exp(Z).sum(axis=1))[:, None]
        loss = -float((ww * (logp * self.Y).sum(axis=1)).sum()) + 0.5 * self.l2 * float(
            (W * W).sum()
        )
        R = ww[:, None] * (np.exp(logp) - self.Y)
        gW = self._rmatvec(R).T + self.l2 * W
        return loss, np.concatenate([gW.ravel(), R.sum(axis=0)])


# A warm-started fit must shrink its starting gradient this much, even if that is below tol:
# along the C path the start is already close (its gradient is only the change in the L2 term,
# which shrinks like 1/n), and an absolute tolerance alone would stop there at once.
_REL_TOL = 0.1
_GTOL_FLOOR = 1e-10


def minimize_lbfgs(
    obj: SoftmaxObjective,
    theta0: np.ndarray,
    max_iter: int,
    tol: float,
    rel_tol: float = _REL_TOL,
) -> tuple[np.ndarray, int, bool]:
    """Minimise `obj` from `theta0`; returns (theta, iterations, hit_max_iter), full layout.

    Stops when the largest gradient component is below ``min(tol, rel_tol * its value at
    theta0)``, when the objective stops decreasing in floating point, or after max_iter.
    """
    theta0 = obj.from_full(theta0)
    g0 = float(np.abs(obj(theta0)[1]).max())
    gtol = min(tol, max(rel_tol * g0, _GTOL_FLOOR))
    res = scipy.optimize.minimize(
        obj,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": gtol, "ftol": 64 * np.finfo(float).eps},
    )
    return obj.to_full(res.x), int(res.nit), res.nit >= max_iter


def walk_C_path(
    obj: SoftmaxObjective,
    X_va: Any,
    y_va: np.ndarray,
    w_va: np.ndarray,
    grid: Sequence[float],
    *,
    max_iter: int,
    tol: float,
    patience: int | None,
    rel_tol: float = _REL_TOL,
) -> tuple[dict[float, np.ndarray], dict[float, dict[str, float]], int]:
    """Fit each C of `grid` in increasing order, warm-starting from the previous solution.

    `X_va` are validation features standardised like the objective's, `y_va` their class
    indices and `w_va` their per-example loss weights. Returns the parameters (full layout)
    and validation scores (weighted log-loss, accuracy, iterations) per C, and the total
    iterations. Stops once the validation log-loss has not improved (by a
    relative 1e-4) for `patience` consecutive grid points.
    """
    k, d = obj.k, obj.d
    theta = np.zeros(k * d + k)
    thetas: dict[float, np.ndarray] = {}
    scores: dict[float, dict[str, float]] = {}
    total, best, since_best = 0, math.inf, 0
    for C in sorted(float(c) for c in grid):
        obj.set_C(C)
        theta, nit, _ = minimize_lbfgs(obj, theta, max_iter, tol, rel_tol)
        total += nit
        thetas[C] = theta
        z = np.asarray(X_va @ theta[: k * d].reshape(k, d).T) + theta[k * d :]
        loss = _weighted_log_loss(z, y_va, w_va)
        scores[C] = {
            "log_loss": loss,
            "accuracy": float((z.argmax(axis=1) == y_va).mean()),
            "n_iter": nit,
        }
        if loss < best * (1 - _TIE_RTOL):
            since_best = 0
        else:
            since_best += 1
        best = min(best, loss)
        if patience is not None and since_best >= patience:
            break
    return thetas, scores, total


def choose_C(scores: Mapping[float, Mapping[str, float]]) -> float:
    """The C of `scores` (as :func:`walk_C_path` returns them) with the lowest validation
    log-loss; near-ties (relative 1e-4) go to higher accuracy, then to the smaller C."""
    best = min(s["log_loss"] for s in scores.values())
    tied = [
        C for C, s in scores.items() if s["log_loss"] <= best + _TIE_RTOL * max(abs(best), 1e-12)
    ]
    return min(tied, key=lambda C: (-scores[C]["accuracy"], C))


def restandardize(
    theta: np.ndarray,
    k: int,
    d: int,
    old: tuple[np.ndarray, np.ndarray],
    new: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Re-express a linear model fitted on one standardisation in another (same function).

    `theta` is in the full layout for `k` classes and `d` features; `old` and `new` are
    ``(mean, scale)`` pairs as :func:`standardizer` returns them.
    """
    W = theta[: k * d].reshape(k, d) / old[1]
    b = theta[k * d :] - W @ old[0]
    return np.concatenate([(W * new[1]).ravel(), b + W @ new[0]])
