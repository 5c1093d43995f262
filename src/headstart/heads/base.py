"""What the heads share: parameter checks, validated fit data, the torch module and the base
class with prediction, saving and loading.

:class:`HeadBase` gives every head scikit-learn's estimator behaviour plus ``get_config`` /
``get_state`` / ``from_state`` (JSON + named arrays, no pickle); a head subclass defines
``fit``, ``_logits``, ``to_torch`` and the names and shapes of its learned arrays.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d, validate_data
from threadpoolctl import threadpool_limits
from torch import nn

from headstart.errors import ConfigError, DataError
from headstart.heads.solver import python_scalar, softmax

__all__ = [
    "FitData",
    "HeadBase",
    "HeadModule",
    "bad_param",
    "check_class_weight",
    "check_number",
    "check_sample_weights",
    "limit_threads",
]

_CONFIG_FORMAT = 1


def bad_param(owner: str, name: str, expected: str, value: Any) -> ConfigError:
    """The ConfigError for a hyper-parameter `name` of `owner` that is not `expected`."""
    return ConfigError(
        f"The {name!r} parameter of {owner} must be {expected}. Got {value!r} instead."
    )


def check_number(
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
        raise bad_param(owner, name, expected, value)
    if low is not None and (value < low or (low_open and value == low)):
        raise bad_param(owner, name, expected, value)
    if high is not None and value >= high:
        raise bad_param(owner, name, expected, value)


def check_class_weight(owner: str, class_weight: Any, classes: np.ndarray) -> None:
    """Raise ConfigError unless `class_weight` is 'balanced', None or {label in classes: w >= 0}."""
    if class_weight is None or (isinstance(class_weight, str) and class_weight == "balanced"):
        return
    if not isinstance(class_weight, Mapping):
        raise bad_param(
            owner, "class_weight", "'balanced', None or a dict {label: weight}", class_weight
        )
    known = set(classes.tolist())
    unknown = [k for k in class_weight if python_scalar(k) not in known]
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
def limit_threads(owner: str, n_threads: int | None, work: float) -> Iterator[None]:
    """Cap BLAS and torch intra-op threads inside the block.

    `n_threads` None means automatic: 1 when `work` (multiply-adds per product) is below
    _SMALL_WORK, otherwise leave the libraries' settings.
    """
    if n_threads is not None:
        check_number(owner, "n_threads", n_threads, low=1, integer=True)
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


def check_sample_weights(owner: str, sample_weight: Any, n: int) -> np.ndarray:
    """Per-example loss weights as float64 (n,): ones for None, else finite, >= 0, not all 0."""
    if sample_weight is None:
        return np.ones(n)
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"sample_weight of {owner} must be numbers: {exc}") from exc
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.shape != (n,):
        raise DataError(
            f"sample_weight of {owner} has shape {w.shape}, but there are {n} examples. "
            "Pass one weight per example (shape (n_samples,))."
        )
    if not np.isfinite(w).all() or (w < 0).any():
        raise DataError(
            f"sample_weight of {owner} must be finite and >= 0; it has "
            f"{int((~np.isfinite(w)).sum())} non-finite and {int((w < 0).sum())} negative "
            "values."
        )
    if not w.sum() > 0:
        raise DataError(f"sample_weight of {owner} is zero for every example; nothing to fit")
    return w.copy()


class FitData:
    """The arguments of a head's ``fit``, validated: ``X``, ``y_idx`` (class indices into
    ``classes``), ``sample_weight`` (float64, ones when not given) and ``X_val`` /
    ``y_val_idx`` (None when no validation data was given)."""

    def __init__(
        self,
        owner: BaseEstimator,
        X: Any,
        y: Any,
        X_val: Any,
        y_val: Any,
        sample_weight: Any = None,
    ) -> None:
        name = type(owner).__name__
        X, y = validate_data(owner, X, y, dtype=(np.float32, np.float64))
        check_classification_targets(y)
        self.sample_weight = check_sample_weights(name, sample_weight, len(y))
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise DataError(
                f"{name} needs samples of at least 2 classes in the data, but the data contains "
                f"only one class: {python_scalar(classes[0])!r}. Check the labels of the "
                "training split."
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
                f"y_val contains class(es) {[python_scalar(u) for u in unknown[:10]]} that never "
                "occur in y. Every class needs training examples: re-split the data so that "
                "each class appears in the training split."
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
            "__pairs__": [[python_scalar(k), float(v)] for k, v in out["class_weight"].items()]
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


class HeadBase(ClassifierMixin, BaseEstimator):
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
        return softmax(self._logits(X))

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
            "classes": [python_scalar(c) for c in self.classes_.tolist()],
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
                setattr(head, k + "_", cls._fitted_from_json(k, config["fitted"][k]))
        return head

    @classmethod
    def _fitted_from_json(cls, key: str, value: Any) -> Any:
        """A learned attribute from its ``get_config()["fitted"]`` form (override to convert)."""
        return value
