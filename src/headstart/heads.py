"""Classification heads trained on frozen backbone features.

Both heads are scikit-learn estimators (``__init__`` stores arguments only, learned state ends
in ``_``, ``fit`` returns ``self``, ``predict`` starts with ``check_is_fitted``), so they work in
pipelines, ``clone`` and ``GridSearchCV``, and both can be saved and rebuilt without pickle:

>>> head = LogisticHead().fit(X_train, y_train, X_val, y_val)      # doctest: +SKIP
>>> config, state = head.get_config(), head.get_state()            # JSON + arrays
>>> same = LogisticHead.from_state(config, state)                  # identical predictions
>>> module = head.to_torch()                                       # raw features -> logits

:class:`LogisticHead`
    Multinomial logistic regression on standardised features. The L2 strength ``C`` is chosen
    on validation data by walking a grid from strong to weak regularisation with warm starts
    (full-batch L-BFGS, float32 matrix products), then the model is refitted on train + val.
:class:`MLPHead`
    One hidden layer in torch, early stopping on validation loss, best weights restored.

``C`` follows scikit-learn's convention: the objective is
``sum_i w_i * CE_i + ||W||^2 / (2 C)`` (intercept not penalised), so a ``C`` chosen here means
the same as in :class:`sklearn.linear_model.LogisticRegression` (for two classes, the
multinomial model at C is scikit-learn's binary model at 2C, which it fits with the same
penalty on a single weight vector).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.optimize
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d, validate_data
from threadpoolctl import threadpool_limits
from torch import nn

from headstart.errors import ConfigError, DataError, did_you_mean

__all__ = [
    "DEFAULT_CS",
    "HEADS",
    "HeadModule",
    "LogisticHead",
    "MLPHead",
    "head_from_state",
    "make_head",
]

#: Default grid of inverse L2 strengths: half decades from 1e-4 to 1e2, strong to weak.
DEFAULT_CS: tuple[float, ...] = tuple(float(f"{c:.3g}") for c in np.logspace(-4, 2, 13))

_CONFIG_FORMAT = 1
# Two validation log-losses closer than this (relative) count as a tie when choosing C.
_TIE_RTOL = 1e-4


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _bad_param(owner: str, name: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(
        f"The {name!r} parameter of {owner} must be {expected}. Got {value!r} instead."
    )


def _check_number(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    integer: bool = False,
) -> None:
    """Raise ConfigError unless `value` is a real (or integral) number within the bounds."""
    kind = "an int" if integer else "a float"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    expected = f"{kind} in {'(' if low_open or low is None else '['}{lo}, {hi})"
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(
        value, bool
    )
    if not ok_type or not math.isfinite(float(value)):
        raise _bad_param(owner, name, expected, value)
    if low is not None and (value < low or (low_open and value == low)):
        raise _bad_param(owner, name, expected, value)
    if high is not None and value >= high:
        raise _bad_param(owner, name, expected, value)


def _check_class_weight(owner: str, class_weight: Any, classes: np.ndarray) -> None:
    if class_weight is None or (isinstance(class_weight, str) and class_weight == "balanced"):
        return
    if not isinstance(class_weight, Mapping):
        raise _bad_param(
            owner, "class_weight", "'balanced', None or a dict {label: weight}", class_weight
        )
    known = set(classes.tolist())
    unknown = [k for k in class_weight if _py(k) not in known]
    if unknown:
        raise ConfigError(
            f"class_weight of {owner} names label(s) {unknown} that are not in the training "
            f"labels {sorted(known, key=str)}. Use the labels exactly as they appear in y."
        )
    for k, v in class_weight.items():
        if not isinstance(v, numbers.Real) or not math.isfinite(float(v)) or v < 0:
            raise ConfigError(
                f"class_weight[{k!r}] of {owner} must be a finite number >= 0. Got {v!r} instead."
            )


# Below this many multiply-adds per matrix product, fits use one thread by default: extra
# threads gain little on products this small, and lose many times over on a busy machine
# (measured: a 300 x 784 fit took 0.3 s with one OpenBLAS thread, 11 s with two, when the two
# cores were shared with other jobs).
_SMALL_WORK = 1e9


@contextlib.contextmanager
def _limit_threads(owner: str, n_threads: int | None, work: float) -> Iterator[None]:
    """Cap BLAS and torch intra-op threads inside the block.

    `n_threads` None means automatic: 1 when `work` (multiply-adds per product) is below
    _SMALL_WORK, otherwise leave the libraries' settings.
    """
    if n_threads is not None:
        _check_number(owner, "n_threads", n_threads, low=1, integer=True)
    elif work < _SMALL_WORK:
        n_threads = 1
    if n_threads is None:
        yield
        return
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(int(n_threads))
        with threadpool_limits(limits=int(n_threads), user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def _py(x: Any) -> Any:
    """numpy scalar -> Python scalar (JSON-able); other values unchanged."""
    return x.item() if isinstance(x, np.generic) else x


def _class_weight_vector(
    y_idx: np.ndarray, n_classes: int, class_weight: Any, classes: np.ndarray
) -> np.ndarray:
    """Per-class loss weights (shape (n_classes,)) for labels `y_idx` (indices into classes).

    'balanced' gives ``n / (n_present * count_c)``, computed from the labels given (so the
    weights of a validation set come from the validation labels); a dict maps labels to
    weights (missing labels weigh 1); None weighs every class 1.
    """
    if class_weight is None:
        return np.ones(n_classes)
    if isinstance(class_weight, str):  # 'balanced'
        counts = np.bincount(y_idx, minlength=n_classes).astype(np.float64)
        present = counts > 0
        out = np.ones(n_classes)
        out[present] = len(y_idx) / (present.sum() * counts[present])
        return out
    lookup = {_py(k): float(v) for k, v in class_weight.items()}
    return np.array([lookup.get(_py(c), 1.0) for c in classes], dtype=np.float64)


def _stratified_holdout(
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


#: Relative spread below which a feature is treated as constant (see :func:`_standardizer`).
CONSTANT_SPREAD = 1e-5


def _standardizer(X: np.ndarray, enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) in float64; identity when disabled; constant features get scale 1.

    A feature counts as constant when its spread is below ``CONSTANT_SPREAD`` times the
    larger of its own magnitude and the median spread: float32 rounding alone gives such
    spreads. Dividing by them would amplify any later change of that feature a billionfold,
    which is what fine-tuning does to it (measured: all-MiniLM-L6-v2 on IMDB has a pooled
    dimension with spread 5.6e-10; the first fine-tuning epoch's loss was 80).
    """
    d = X.shape[1]
    if not enabled:
        return np.zeros(d), np.ones(d)
    mean = X.mean(axis=0, dtype=np.float64)
    var = X.var(axis=0, dtype=np.float64)
    scale = np.sqrt(var)
    typical = float(np.median(scale)) if d else 0.0
    scale[scale <= CONSTANT_SPREAD * np.maximum(np.abs(mean), typical)] = 1.0
    scale[scale == 0] = 1.0
    return mean, scale


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _weighted_log_loss(logits: np.ndarray, y_idx: np.ndarray, sample_w: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z[np.arange(len(y_idx)), y_idx] - np.log(np.exp(z).sum(axis=1))
    return float(-(sample_w * logp).sum() / sample_w.sum())


class _Labels:
    """Validated training labels plus the optional validation labels as class indices."""

    def __init__(self, owner: BaseEstimator, X: Any, y: Any, X_val: Any, y_val: Any) -> None:
        name = type(owner).__name__
        X, y = validate_data(owner, X, y, dtype=(np.float32, np.float64))
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise DataError(
                f"{name} needs samples of at least 2 classes in the data, but the data contains "
                f"only one class: {_py(classes[0])!r}. Check the labels of the training split."
            )
        self.X, self.y_idx, self.classes = X, y_idx.astype(np.int64), classes
        self.X_val: np.ndarray | None = None
        self.y_val_idx: np.ndarray | None = None
        if (X_val is None) != (y_val is None):
            raise ConfigError(
                f"{name}.fit got {'X_val' if y_val is None else 'y_val'} without "
                f"{'y_val' if y_val is None else 'X_val'}. Pass both, or neither to let the "
                "head hold out part of the training data."
            )
        if X_val is None:
            return
        X_val = check_array(X_val, dtype=(np.float32, np.float64))
        if X_val.shape[1] != X.shape[1]:
            raise DataError(
                f"X_val has {X_val.shape[1]} features but X has {X.shape[1]}. Extract the "
                "validation features with the same backbone as the training features."
            )
        y_val = column_or_1d(y_val, warn=True)
        if len(y_val) != len(X_val):
            raise DataError(
                f"X_val has {len(X_val)} rows but y_val has {len(y_val)} labels. Pass one label "
                "per validation example."
            )
        try:
            pos = np.clip(np.searchsorted(classes, y_val), 0, len(classes) - 1)
            unknown = np.unique(y_val[classes[pos] != y_val])
        except TypeError as e:
            raise DataError(
                f"y_val labels ({y_val.dtype}) cannot be compared with y labels "
                f"({classes.dtype}): {e}. Use the same kind of labels (all names or all "
                "integers) in both."
            ) from e
        if len(unknown):
            raise DataError(
                f"y_val contains class(es) {[_py(u) for u in unknown[:10]]} that never occur in "
                f"y. Every class needs training examples: re-split the data so that each class "
                "appears in the training split."
            )
        self.X_val, self.y_val_idx = X_val, pos.astype(np.int64)


class HeadModule(nn.Module):
    """Raw backbone features -> logits: fixed standardisation buffers, then the head's layers."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, mean: np.ndarray, scale: np.ndarray, layers: nn.Module) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone())
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.mean) / self.scale)


def _params_to_json(params: dict[str, Any]) -> dict[str, Any]:
    out = dict(params)
    if isinstance(out.get("class_weight"), Mapping):
        out["class_weight"] = {
            "__pairs__": [[_py(k), float(v)] for k, v in out["class_weight"].items()]
        }
    if out.get("Cs") is not None:
        out["Cs"] = [float(c) for c in out["Cs"]]
    return out


def _params_from_json(params: dict[str, Any]) -> dict[str, Any]:
    out = dict(params)
    cw = out.get("class_weight")
    if isinstance(cw, Mapping) and "__pairs__" in cw:
        out["class_weight"] = {k: v for k, v in cw["__pairs__"]}
    if isinstance(out.get("Cs"), list):
        out["Cs"] = tuple(out["Cs"])
    return out


class _HeadBase(ClassifierMixin, BaseEstimator):
    """Saving, loading and prediction shared by the heads (subclasses define `_logits`)."""

    _type: ClassVar[str]
    _state_keys: ClassVar[tuple[str, ...]]
    _fitted_keys: ClassVar[tuple[str, ...]]  # JSON-able learned attributes besides classes

    # -- prediction --------------------------------------------------------------------------
    def _logits(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_X(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float64)

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits, shape (n, n_classes); for two classes the logit difference, shape (n,)."""
        X = self._check_X(X)
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n, n_classes), columns in the order of ``classes_``."""
        X = self._check_X(X)
        return _softmax(self._logits(X))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba`, computed stably from the logits."""
        X = self._check_X(X)
        z = self._logits(X)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class label for each row."""
        X = self._check_X(X)
        return self.classes_[self._logits(X).argmax(axis=1)]

    # -- saving and loading ------------------------------------------------------------------
    @classmethod
    def _state_shapes(
        cls, n_classes: int, n_features: int, state: Mapping[str, np.ndarray]
    ) -> dict[str, tuple[int, ...]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_state(self) -> dict[str, np.ndarray]:
        """Every learned array, by name, ready for ``safetensors.numpy.save_file``."""
        check_is_fitted(self)
        return {k: np.ascontiguousarray(getattr(self, k + "_")) for k in self._state_keys}

    def get_config(self) -> dict[str, Any]:
        """JSON-able description: head type, hyper-parameters, classes and fit summary."""
        check_is_fitted(self)
        fitted = {k: getattr(self, k + "_") for k in self._fitted_keys}
        config: dict[str, Any] = {
            "type": self._type,
            "format": _CONFIG_FORMAT,
            "params": _params_to_json(self.get_params()),
            "classes": [_py(c) for c in self.classes_.tolist()],
            "n_features_in": int(self.n_features_in_),
            "fitted": fitted,
        }
        if hasattr(self, "feature_names_in_"):
            config["feature_names_in"] = [str(f) for f in self.feature_names_in_]
        return config

    @classmethod
    def from_state(cls, config: Mapping[str, Any], state: Mapping[str, np.ndarray]) -> Any:
        """Rebuild a fitted head from :meth:`get_config` and :meth:`get_state` output.

        Hyper-parameters this version does not know (written by a newer headstart) are
        dropped with a warning; a missing array raises ConfigError.
        """
        if int(config.get("format", 1)) > _CONFIG_FORMAT:
            warnings.warn(
                f"{cls.__name__}: the saved config has format {config['format']}, newer than "
                f"this headstart's {_CONFIG_FORMAT}; loading what this version understands.",
                UserWarning,
                stacklevel=2,
            )
        if config.get("type") != cls._type:
            raise ConfigError(
                f"{cls.__name__}.from_state got a config of type {config.get('type')!r}; it "
                f"needs {cls._type!r}. Use headstart.heads.head_from_state(config, state) to "
                "pick the class from the config."
            )
        params = _params_from_json(dict(config.get("params", {})))
        known = cls().get_params()
        extra = sorted(set(params) - set(known))
        if extra:
            warnings.warn(
                f"{cls.__name__}: ignoring unknown hyper-parameter(s) {extra} in the saved "
                "config (written by a newer headstart?).",
                UserWarning,
                stacklevel=2,
            )
        head = cls(**{k: v for k, v in params.items() if k in known})
        missing = [k for k in cls._state_keys if k not in state]
        if missing:
            raise ConfigError(
                f"{cls.__name__}.from_state: the saved state lacks array(s) {missing}; found "
                f"{sorted(state)}. The weights file does not belong to this config."
            )
        n_classes, n_features = len(config["classes"]), int(config["n_features_in"])
        for k, shape in cls._state_shapes(n_classes, n_features, state).items():
            if tuple(np.shape(state[k])) != shape:
                raise ConfigError(
                    f"{cls.__name__}.from_state: array {k!r} has shape {np.shape(state[k])}, "
                    f"but the config ({n_classes} classes, {n_features} features) needs "
                    f"{shape}. The weights file does not belong to this config."
                )
        for k in cls._state_keys:
            setattr(head, k + "_", np.asarray(state[k]).copy())
        head.classes_ = np.asarray(config["classes"])
        head.n_features_in_ = int(config["n_features_in"])
        if "feature_names_in" in config:
            head.feature_names_in_ = np.asarray(config["feature_names_in"], dtype=object)
        for k in cls._fitted_keys:
            if k in config.get("fitted", {}):
                setattr(head, k + "_", _fitted_from_json(k, config["fitted"][k]))
        return head


def _fitted_from_json(key: str, value: Any) -> Any:
    if key == "val_scores":
        return {float(r["C"]): {m: v for m, v in r.items() if m != "C"} for r in value}
    return value


# --------------------------------------------------------------------------------------------
# Logistic head
# --------------------------------------------------------------------------------------------


class _SoftmaxObjective:
    """Weighted softmax cross-entropy + L2 (scikit-learn's C convention), value and gradient.

    `X` may be dense or scipy-sparse. The two matrix products, which dominate the cost, run in
    `dtype` (float32 for float32 features: twice as fast, and precise enough for the
    tolerances used here); parameters and the per-row arithmetic are float64.

    Callers exchange parameters in the *full* layout ``[W.ravel(), b]`` with W (k, d). For two
    classes the solver works on one vector ``u = W1 - W0`` (half the work): the L2-penalised
    multinomial optimum always has ``W0 = -W1``, so it equals a binary logistic regression with
    twice the C, mapped back as ``W1 = u / 2 = -W0``.
    """

    def __init__(
        self, X: Any, y_idx: np.ndarray, n_classes: int, cw: np.ndarray, dtype: Any
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
        self.w = cw[y_idx]
        self.sw = float(self.w.sum())
        self.l2 = 0.0

    def set_C(self, C: float) -> None:
        self.l2 = 1.0 / ((2 * C if self.binary else C) * self.sw)

    def from_full(self, full: np.ndarray) -> np.ndarray:
        if not self.binary:
            return full
        d = self.d
        return np.concatenate([full[d : 2 * d] - full[:d], [full[2 * d + 1] - full[2 * d]]])

    def to_full(self, theta: np.ndarray) -> np.ndarray:
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


def _lbfgs(
    obj: _SoftmaxObjective,
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


def _walk_C_path(
    obj: _SoftmaxObjective,
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

    Returns the parameters and validation scores (weighted log-loss, accuracy, iterations) per
    C, and the total iterations. Stops once the validation log-loss has not improved (by a
    relative 1e-4) for `patience` consecutive grid points.
    """
    k, d = obj.k, obj.d
    theta = np.zeros(k * d + k)
    thetas: dict[float, np.ndarray] = {}
    scores: dict[float, dict[str, float]] = {}
    total, best, since_best = 0, math.inf, 0
    for C in sorted(float(c) for c in grid):
        obj.set_C(C)
        theta, nit, _ = _lbfgs(obj, theta, max_iter, tol, rel_tol)
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


def _choose_C(scores: Mapping[float, Mapping[str, float]]) -> float:
    """Lowest validation log-loss; near-ties (relative 1e-4) go to higher accuracy, then smaller C."""
    best = min(s["log_loss"] for s in scores.values())
    tied = [
        C for C, s in scores.items() if s["log_loss"] <= best + _TIE_RTOL * max(abs(best), 1e-12)
    ]
    return min(tied, key=lambda C: (-scores[C]["accuracy"], C))


def _restandardize(
    theta: np.ndarray,
    k: int,
    d: int,
    old: tuple[np.ndarray, np.ndarray],
    new: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Re-express a linear model fitted on one standardisation in another (same function)."""
    W = theta[: k * d].reshape(k, d) / old[1]
    b = theta[k * d :] - W @ old[0]
    return np.concatenate([(W * new[1]).ravel(), b + W @ new[0]])


class LogisticHead(_HeadBase):
    """Multinomial logistic regression with the L2 strength chosen on validation data.

    Parameters
    ----------
    C:
        Inverse L2 strength (scikit-learn's convention). None (default) chooses it from `Cs`.
    Cs:
        Grid searched when C is None, walked from strong to weak regularisation (small to large
        C), each fit warm-started from the previous solution.
    class_weight:
        'balanced' (default) weights each example's loss by the inverse frequency of its class,
        None weighs all examples 1, a dict maps labels to weights (missing labels weigh 1).
    max_iter:
        L-BFGS iteration limit for each fit along the path and for the final fit.
    tol:
        Stop a fit when every gradient component of the (weight-averaged) objective is below
        `tol` (scikit-learn's default 1e-4) and, for a warm-started fit, below a tenth of its
        value at the warm start (so each step along the C path is resolved even on large data),
        or when the objective stops changing in floating point.
    refit:
        After choosing C, refit on train + validation data (True), or keep the model trained on
        the training part only (False). With an explicit C and explicit validation data, True
        also trains the final model on both.
    standardize:
        Learn a per-feature mean and scale on the training data and standardise with them.
    val_fraction:
        Share of each class held out to choose C when no validation data is passed to fit.
        If the data is too small to hold anything out, C=1.0 is used.
    path_patience:
        Stop walking the grid once the validation log-loss has not improved for this many
        consecutive grid points (validation log-loss is near-unimodal in C, and the weakly
        regularised end of the grid is the slowest to fit). None walks the whole grid.
    random_state:
        Seed for the internal holdout split.
    n_threads:
        Cap on BLAS threads during fit. None (default) uses one thread when the matrix
        products are small (n_samples x n_features x n_classes under 1e9), where more threads
        gain little and, on a busy machine, lose many times over; larger problems use the
        library's setting (usually one thread per core).

    Choosing C
    ----------
    C is chosen by *validation log-loss*, weighted like the training loss (with 'balanced', each
    class counts equally, using validation class frequencies). Losses within a relative 1e-4 of
    the best count as ties, broken by higher validation accuracy, then by the smaller C
    (stronger regularisation).

    Attributes
    ----------
    classes_, coef_ (n_classes, n_features), intercept_ (n_classes,):
        The model on *standardised* features (``mean_``, ``scale_``); use
        :meth:`decision_function` or :meth:`to_torch` to apply it to raw features.
    mean_, scale_: the standardisation (zeros and ones when ``standardize=False``).
    C_: the C of the final model.
    val_scores_: ``{C: {"log_loss", "accuracy", "n_iter"}}`` for each C fitted on the training
        part and scored on validation data (empty when nothing could be held out).
    n_iter_: L-BFGS iterations spent in the whole fit (search path + final fit).
    n_features_in_: number of features seen in fit.
    """

    _type = "logistic"
    _state_keys = ("coef", "intercept", "mean", "scale")
    _fitted_keys = ("C", "val_scores", "n_iter")

    def __init__(
        self,
        C: float | None = None,
        Cs: Sequence[float] = DEFAULT_CS,
        class_weight: str | Mapping[Any, float] | None = "balanced",
        max_iter: int = 500,
        tol: float = 1e-4,
        refit: bool = True,
        standardize: bool = True,
        val_fraction: float = 0.2,
        path_patience: int | None = 3,
        random_state: int | None = 0,
        n_threads: int | None = None,
    ) -> None:
        self.C = C
        self.Cs = Cs
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.refit = refit
        self.standardize = standardize
        self.val_fraction = val_fraction
        self.path_patience = path_patience
        self.random_state = random_state
        self.n_threads = n_threads

    def _validate_params(self, classes: np.ndarray) -> None:
        name = type(self).__name__
        if self.C is not None:
            _check_number(name, "C", self.C, low=0, low_open=True)
        elif (
            not isinstance(self.Cs, Sequence | np.ndarray)
            or len(self.Cs) == 0
            or not all(
                isinstance(c, numbers.Real) and math.isfinite(float(c)) and c > 0 for c in self.Cs
            )
        ):
            raise _bad_param(name, "Cs", "a non-empty sequence of floats > 0", self.Cs)
        _check_class_weight(name, self.class_weight, classes)
        _check_number(name, "max_iter", self.max_iter, low=1, integer=True)
        _check_number(name, "tol", self.tol, low=0, low_open=True)
        _check_number(name, "val_fraction", self.val_fraction, low=0, high=1, low_open=True)
        if self.path_patience is not None:
            _check_number(name, "path_patience", self.path_patience, low=1, integer=True)

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> LogisticHead:
        """Fit on features `X` (n, d) and labels `y`; choose C on (`X_val`, `y_val`) if given.

        Without validation data and with C=None, a stratified `val_fraction` of `X` is held
        out to choose C (and, with refit=True, put back for the final fit).
        """
        data = _Labels(self, X, y, X_val, y_val)
        work = data.X.shape[0] * data.X.shape[1] * len(data.classes)
        with _limit_threads(type(self).__name__, self.n_threads, work):
            return self._fit(data)

    def _fit(self, data: _Labels) -> LogisticHead:
        self._validate_params(data.classes)
        k, d = len(data.classes), data.X.shape[1]
        self.classes_ = data.classes
        cw = self.class_weight

        # The training part and the validation part used to score C.
        X_va: np.ndarray | None
        y_va: np.ndarray | None
        if data.X_val is not None and data.y_val_idx is not None:
            X_tr, y_tr, X_va, y_va = data.X, data.y_idx, data.X_val, data.y_val_idx
        elif self.C is None:
            tr, va = _stratified_holdout(data.y_idx, self.val_fraction, self.random_state)
            X_tr, y_tr = data.X[tr], data.y_idx[tr]
            X_va, y_va = (data.X[va], data.y_idx[va]) if len(va) else (None, None)
        else:
            X_tr, y_tr, X_va, y_va = data.X, data.y_idx, None, None

        std_tr = _standardizer(X_tr, self.standardize)
        obj = _SoftmaxObjective(
            (X_tr - std_tr[0]) / std_tr[1],
            y_tr,
            k,
            _class_weight_vector(y_tr, k, cw, data.classes),
            data.X.dtype,
        )
        theta = np.zeros(k * d + k)
        total_iter = 0
        self.val_scores_: dict[float, dict[str, float]] = {}

        if X_va is not None and y_va is not None:
            thetas, self.val_scores_, total_iter = _walk_C_path(
                obj,
                (X_va - std_tr[0]) / std_tr[1],
                y_va,
                _class_weight_vector(y_va, k, cw, data.classes)[y_va],
                self.Cs if self.C is None else [self.C],
                max_iter=self.max_iter,
                tol=self.tol,
                patience=self.path_patience,
            )
            self.C_ = _choose_C(self.val_scores_)
            theta = thetas[self.C_]
        else:
            self.C_ = float(self.C) if self.C is not None else 1.0

        std = std_tr
        if X_va is None or self.refit:
            if X_va is not None and y_va is not None:  # refit on train + val, warm-started
                X_all = np.concatenate([X_tr, X_va])
                y_all = np.concatenate([y_tr, y_va])
                std = _standardizer(X_all, self.standardize)
                theta = _restandardize(theta, k, d, std_tr, std)
                obj = _SoftmaxObjective(
                    (X_all - std[0]) / std[1],
                    y_all,
                    k,
                    _class_weight_vector(y_all, k, cw, data.classes),
                    data.X.dtype,
                )
            obj.set_C(self.C_)
            theta, nit, hit_max = _lbfgs(obj, theta, self.max_iter, self.tol)
            total_iter += nit
            if hit_max:
                warnings.warn(
                    f"LogisticHead did not converge in max_iter={self.max_iter} L-BFGS "
                    f"iterations (C={self.C_:g}). Increase max_iter, or choose a smaller C.",
                    ConvergenceWarning,
                    stacklevel=2,
                )

        self.mean_, self.scale_ = std
        self.coef_ = theta[: k * d].reshape(k, d).copy()
        self.intercept_ = theta[k * d :].copy()
        self.n_iter_ = int(max(total_iter, 1))
        return self

    @classmethod
    def _state_shapes(
        cls, n_classes: int, n_features: int, state: Mapping[str, np.ndarray]
    ) -> dict[str, tuple[int, ...]]:
        k, d = n_classes, n_features
        return {"coef": (k, d), "intercept": (k,), "mean": (d,), "scale": (d,)}

    def _logits(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["fitted"]["val_scores"] = [{"C": C, **s} for C, s in self.val_scores_.items()]
        return config

    def to_torch(self) -> HeadModule:
        """A float32 module mapping raw features (n, d) to logits (n, n_classes), in eval mode.

        Equal to :meth:`decision_function` up to float32 rounding (for two classes,
        ``logits[:, 1] - logits[:, 0]`` equals it).
        """
        check_is_fitted(self)
        k, d = self.coef_.shape
        linear = nn.Linear(d, k)
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(self.coef_, dtype=torch.float32))
            linear.bias.copy_(torch.as_tensor(self.intercept_, dtype=torch.float32))
        return HeadModule(self.mean_, self.scale_, linear).eval()

    def load_torch(self, module: HeadModule) -> LogisticHead:
        """Take the weights of a (fine-tuned) :meth:`to_torch` module back into this head."""
        check_is_fitted(self)
        linear = module.layers
        self.coef_ = linear.weight.detach().cpu().double().numpy().copy()
        self.intercept_ = linear.bias.detach().cpu().double().numpy().copy()
        self.mean_ = module.mean.detach().cpu().double().numpy().copy()
        self.scale_ = module.scale.detach().cpu().double().numpy().copy()
        return self


# --------------------------------------------------------------------------------------------
# MLP head
# --------------------------------------------------------------------------------------------


def _mlp_layers(d: int, hidden: int, k: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, k))


def _linear_layers(net: nn.Sequential) -> tuple[nn.Linear, nn.Linear]:
    """The first and last Linear layers of :func:`_mlp_layers`' network."""
    first, last = net[0], net[3]
    assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
    return first, last


class MLPHead(_HeadBase):
    """One-hidden-layer MLP (Linear-ReLU-Dropout-Linear) with early stopping on val loss.

    Trained with AdamW on mini-batches of standardised features and a class-weighted
    cross-entropy. After each epoch the (class-weighted) validation loss is measured; training
    stops after `patience` epochs without improvement and the best epoch's weights are
    restored. Without validation data a stratified `val_fraction` of the training data is held
    out (and not trained on); if the data is too small for that, the training loss is
    monitored instead. Given the same data and `random_state` (an int), fitting is
    deterministic on a given machine and thread count; the global torch RNG is left untouched.

    Parameters
    ----------
    hidden: width of the hidden layer.
    dropout: dropout probability after the hidden layer (training only).
    weight_decay, lr: AdamW's decoupled weight decay and learning rate.
    max_epochs, patience: epoch limit; stop after `patience` epochs without a better
        monitored loss (an improvement must exceed a relative 1e-4).
    batch_size: examples per optimisation step.
    class_weight: 'balanced' (default), None or {label: weight}, as for LogisticHead.
    standardize: learn per-feature mean and scale on the training part and apply them.
    val_fraction: share of each class held out for early stopping when no val data is given.
    random_state: seed for initialisation, shuffling, dropout and the holdout (None: random).
    n_threads: cap on torch's and BLAS's threads during fit; None (default) uses one thread
        when a batch's products are small (batch_size x n_features x hidden under 1e9) and
        the libraries' settings otherwise (see LogisticHead).

    Attributes
    ----------
    classes_, mean_, scale_, w1_ (hidden, d), b1_ (hidden,), w2_ (n_classes, hidden),
    b2_ (n_classes,): the fitted network (float32) on standardised features.
    n_iter_: epochs run. best_epoch_: the epoch (1-based) whose weights were kept.
    loss_curve_, val_loss_curve_: training / monitored loss per epoch.
    """

    _type = "mlp"
    _state_keys = ("w1", "b1", "w2", "b2", "mean", "scale")
    _fitted_keys = ("n_iter", "best_epoch", "loss_curve", "val_loss_curve")

    def __init__(
        self,
        hidden: int = 512,
        dropout: float = 0.2,
        weight_decay: float = 1e-4,
        lr: float = 1e-3,
        max_epochs: int = 200,
        patience: int = 10,
        batch_size: int = 256,
        class_weight: str | Mapping[Any, float] | None = "balanced",
        standardize: bool = True,
        val_fraction: float = 0.2,
        random_state: int | None = 0,
        n_threads: int | None = None,
    ) -> None:
        self.hidden = hidden
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.standardize = standardize
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.n_threads = n_threads

    def _validate_params(self, classes: np.ndarray) -> None:
        name = type(self).__name__
        _check_number(name, "hidden", self.hidden, low=1, integer=True)
        _check_number(name, "dropout", self.dropout, low=0, high=1)
        _check_number(name, "weight_decay", self.weight_decay, low=0)
        _check_number(name, "lr", self.lr, low=0, low_open=True)
        _check_number(name, "max_epochs", self.max_epochs, low=1, integer=True)
        _check_number(name, "patience", self.patience, low=1, integer=True)
        _check_number(name, "batch_size", self.batch_size, low=1, integer=True)
        _check_number(name, "val_fraction", self.val_fraction, low=0, high=1, low_open=True)
        _check_class_weight(name, self.class_weight, classes)
        if self.random_state is not None:
            _check_number(name, "random_state", self.random_state, low=0, integer=True)

    def fit(self, X: Any, y: Any, X_val: Any = None, y_val: Any = None) -> MLPHead:
        """Train on (`X`, `y`), early-stopping on (`X_val`, `y_val`) or an internal holdout."""
        data = _Labels(self, X, y, X_val, y_val)
        hidden = self.hidden if isinstance(self.hidden, numbers.Integral) else 0
        batch = self.batch_size if isinstance(self.batch_size, numbers.Integral) else 0
        work = min(batch, data.X.shape[0]) * data.X.shape[1] * hidden
        with _limit_threads(type(self).__name__, self.n_threads, work):
            return self._fit(data)

    def _fit(self, data: _Labels) -> MLPHead:
        self._validate_params(data.classes)
        k, d = len(data.classes), data.X.shape[1]
        seed = (
            int(self.random_state)
            if self.random_state is not None
            else int(np.random.default_rng().integers(2**31))
        )
        X_va: np.ndarray | None
        y_va: np.ndarray | None
        if data.X_val is not None and data.y_val_idx is not None:
            X_tr, y_tr, X_va, y_va = data.X, data.y_idx, data.X_val, data.y_val_idx
        else:
            tr, va = _stratified_holdout(data.y_idx, self.val_fraction, seed)
            X_tr, y_tr = data.X[tr], data.y_idx[tr]
            X_va, y_va = (data.X[va], data.y_idx[va]) if len(va) else (None, None)

        self.classes_ = data.classes
        self.mean_, self.scale_ = _standardizer(X_tr, self.standardize)

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(((a - self.mean_) / self.scale_).astype(np.float32))

        xt, yt = tensor(X_tr), torch.from_numpy(y_tr)
        w_tr = torch.from_numpy(_class_weight_vector(y_tr, k, self.class_weight, data.classes))
        if X_va is not None and y_va is not None:
            xv, yv = tensor(X_va), torch.from_numpy(y_va)
            w_va = torch.from_numpy(_class_weight_vector(y_va, k, self.class_weight, data.classes))
        else:
            xv, yv, w_va = xt, yt, w_tr
        w_tr, w_va = w_tr.float(), w_va.float()

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            net = _mlp_layers(d, int(self.hidden), k, float(self.dropout))
            opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            best_loss, best_state, best_epoch = math.inf, None, 0
            losses: list[float] = []
            val_losses: list[float] = []
            n = len(yt)
            bs = min(int(self.batch_size), n)
            for epoch in range(1, int(self.max_epochs) + 1):
                net.train()
                perm = torch.randperm(n, generator=gen)
                total = 0.0
                for start in range(0, n, bs):
                    idx = perm[start : start + bs]
                    loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx], weight=w_tr)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                losses.append(total / n)
                net.eval()
                with torch.no_grad():
                    vloss = float(nn.functional.cross_entropy(net(xv), yv, weight=w_va))
                val_losses.append(vloss)
                if vloss < best_loss - 1e-4 * max(abs(best_loss), 1e-3) or best_state is None:
                    best_loss, best_epoch = vloss, epoch
                    best_state = {key: v.detach().clone() for key, v in net.state_dict().items()}
                elif epoch - best_epoch >= self.patience:
                    break
            assert best_state is not None
            net.load_state_dict(best_state)

        first, last = _linear_layers(net)
        self.w1_ = first.weight.detach().numpy().copy()
        self.b1_ = first.bias.detach().numpy().copy()
        self.w2_ = last.weight.detach().numpy().copy()
        self.b2_ = last.bias.detach().numpy().copy()
        self.n_iter_ = len(losses)
        self.best_epoch_ = best_epoch
        self.loss_curve_ = losses
        self.val_loss_curve_ = val_losses
        return self

    @classmethod
    def _state_shapes(
        cls, n_classes: int, n_features: int, state: Mapping[str, np.ndarray]
    ) -> dict[str, tuple[int, ...]]:
        k, d, h = n_classes, n_features, int(np.shape(state["w1"])[0])
        return {"w1": (h, d), "b1": (h,), "w2": (k, h), "b2": (k,), "mean": (d,), "scale": (d,)}

    def _logits(self, X: np.ndarray) -> np.ndarray:
        # float64 numpy so that a row's prediction does not depend on the batch around it
        h = ((X - self.mean_) / self.scale_) @ self.w1_.T.astype(np.float64) + self.b1_
        np.maximum(h, 0, out=h)
        return h @ self.w2_.T.astype(np.float64) + self.b2_

    def to_torch(self) -> HeadModule:
        """A float32 module mapping raw features (n, d) to logits, in eval mode (dropout off).

        Equal to :meth:`decision_function` up to float32 rounding (for two classes,
        ``logits[:, 1] - logits[:, 0]`` equals it).
        """
        check_is_fitted(self)
        net = _mlp_layers(
            self.w1_.shape[1], self.w1_.shape[0], self.w2_.shape[0], float(self.dropout)
        )
        with torch.no_grad():
            first, last = _linear_layers(net)
            for layer, w, b in ((first, self.w1_, self.b1_), (last, self.w2_, self.b2_)):
                layer.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
                layer.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        return HeadModule(self.mean_, self.scale_, net).eval()

    def load_torch(self, module: HeadModule) -> MLPHead:
        """Take the weights of a (fine-tuned) :meth:`to_torch` module back into this head."""
        check_is_fitted(self)
        layers: Any = module.layers
        first, last = layers[0], layers[3]
        self.w1_ = first.weight.detach().cpu().numpy().copy()
        self.b1_ = first.bias.detach().cpu().numpy().copy()
        self.w2_ = last.weight.detach().cpu().numpy().copy()
        self.b2_ = last.bias.detach().cpu().numpy().copy()
        return self


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

#: Head classes by name, as accepted by :func:`make_head`.
HEADS: dict[str, type[_HeadBase]] = {"logistic": LogisticHead, "mlp": MLPHead}


def make_head(name: str, **kw: Any) -> LogisticHead | MLPHead:
    """Build an unfitted head by name ('logistic' or 'mlp') with hyper-parameters `kw`."""
    if name not in HEADS:
        raise ConfigError(
            f"Unknown head {name!r}; known heads: {', '.join(HEADS)}.{did_you_mean(name, HEADS)}"
        )
    cls = HEADS[name]
    known = cls().get_params()
    unknown = sorted(set(kw) - set(known))
    if unknown:
        hints = "".join(did_you_mean(u, known) for u in unknown)
        raise ConfigError(
            f"Head {name!r} has no hyper-parameter(s) {unknown}; it takes "
            f"{', '.join(known)}.{hints}"
        )
    return cls(**kw)  # type: ignore[return-value]


def head_from_state(
    config: Mapping[str, Any], state: Mapping[str, np.ndarray]
) -> LogisticHead | MLPHead:
    """Rebuild a fitted head of whichever type `config` names (see ``get_config``)."""
    kind = config.get("type")
    if kind not in HEADS:
        raise ConfigError(
            f"The head config has type {kind!r}; known types: {', '.join(HEADS)}. The file was "
            "not written by headstart's get_config, or by a newer version."
        )
    return HEADS[kind].from_state(config, state)  # type: ignore[return-value]
