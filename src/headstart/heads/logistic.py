"""Multinomial logistic regression on standardised features: :class:`LogisticHead`.

The L2 strength ``C`` is chosen on validation data by walking a grid from strong to weak
regularisation with warm starts (full-batch L-BFGS, float32 matrix products; see
:mod:`headstart.heads.solver`), then the model is refitted on train + val.

``C`` follows scikit-learn's convention: the objective is
``sum_i w_i * CE_i + ||W||^2 / (2 C)`` (intercept not penalised), so a ``C`` chosen here means
the same as in :class:`sklearn.linear_model.LogisticRegression` (for two classes, the
multinomial model at C is scikit-learn's binary model at 2C, which it fits with the same
penalty on a single weight vector).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted
from torch import nn

from headstart.heads.base import (
    FitData,
    HeadBase,
    HeadModule,
    bad_param,
    check_class_weight,
    check_number,
    limit_threads,
)
from headstart.heads.solver import (
    SoftmaxObjective,
    choose_C,
    class_weight_vector,
    minimize_lbfgs,
    restandardize,
    standardizer,
    stratified_holdout,
    walk_C_path,
)

__all__ = ["DEFAULT_CS", "LogisticHead"]

#: Default grid of inverse L2 strengths: half decades from 1e-4 to 1e2, strong to weak.
DEFAULT_CS: tuple[float, ...] = tuple(float(f"{c:.3g}") for c in np.logspace(-4, 2, 13))


class LogisticHead(HeadBase):
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
            check_number(name, "C", self.C, low=0, low_open=True)
        elif (
            not isinstance(self.Cs, Sequence | np.ndarray)
            or len(self.Cs) == 0
            or not all(
                isinstance(c, numbers.Real) and math.isfinite(float(c)) and c > 0 for c in self.Cs
            )
        ):
            raise bad_param(name, "Cs", "a non-empty sequence of floats > 0", self.Cs)
        check_class_weight(name, self.class_weight, classes)
        check_number(name, "max_iter", self.max_iter, low=1, integer=True)
        check_number(name, "tol", self.tol, low=0, low_open=True)
        check_number(name, "val_fraction", self.val_fraction, low=0, high=1, low_open=True)
        if self.path_patience is not None:
            check_number(name, "path_patience", self.path_patience, low=1, integer=True)

    def fit(
        self, X: Any, y: Any, X_val: Any = None, y_val: Any = None, sample_weight: Any = None
    ) -> LogisticHead:
        """Fit on features `X` (n, d) and labels `y`; choose C on (`X_val`, `y_val`) if given.

        Without validation data and with C=None, a stratified `val_fraction` of `X` is held
        out to choose C (and, with refit=True, put back for the final fit). `sample_weight`
        (n,) multiplies each training example's loss (and its share of 'balanced' class
        weights); validation examples weigh by their class only.
        """
        data = FitData(self, X, y, X_val, y_val, sample_weight)
        work = data.X.shape[0] * data.X.shape[1] * len(data.classes)
        with limit_threads(type(self).__name__, self.n_threads, work):
            return self._fit(data)

    def _fit(self, data: FitData) -> LogisticHead:
        self._validate_params(data.classes)
        k, d = len(data.classes), data.X.shape[1]
        self.classes_ = data.classes
        cw = self.class_weight

        # The training part and the validation part used to score C.
        X_va: np.ndarray | None
        y_va: np.ndarray | None
        s_tr, s_va = data.sample_weight, None
        if data.X_val is not None and data.y_val_idx is not None:
            X_tr, y_tr, X_va, y_va = data.X, data.y_idx, data.X_val, data.y_val_idx
            s_va = np.ones(len(y_va))
        elif self.C is None:
            tr, va = stratified_holdout(data.y_idx, self.val_fraction, self.random_state)
            X_tr, y_tr, s_tr = data.X[tr], data.y_idx[tr], data.sample_weight[tr]
            X_va, y_va = (data.X[va], data.y_idx[va]) if len(va) else (None, None)
            s_va = data.sample_weight[va]
        else:
            X_tr, y_tr, X_va, y_va = data.X, data.y_idx, None, None

        std_tr = standardizer(X_tr, self.standardize, s_tr)
        obj = SoftmaxObjective(
            (X_tr - std_tr[0]) / std_tr[1],
            y_tr,
            k,
            class_weight_vector(y_tr, k, cw, data.classes, s_tr),
            data.X.dtype,
            s_tr,
        )
        theta = np.zeros(k * d + k)
        total_iter = 0
        self.val_scores_: dict[float, dict[str, float]] = {}

        if X_va is not None and y_va is not None and s_va is not None:
            thetas, self.val_scores_, total_iter = walk_C_path(
                obj,
                (X_va - std_tr[0]) / std_tr[1],
                y_va,
                class_weight_vector(y_va, k, cw, data.classes, s_va)[y_va] * s_va,
                self.Cs if self.C is None else [self.C],
                max_iter=self.max_iter,
                tol=self.tol,
                patience=self.path_patience,
            )
            self.C_ = choose_C(self.val_scores_)
            theta = thetas[self.C_]
        else:
            self.C_ = float(self.C) if self.C is not None else 1.0

        std = std_tr
        if X_va is None or self.refit:
            if X_va is not None and y_va is not None and s_va is not None:  # refit on all
                X_all = np.concatenate([X_tr, X_va])
                y_all = np.concatenate([y_tr, y_va])
                s_all = np.concatenate([s_tr, s_va])
                std = standardizer(X_all, self.standardize, s_all)
                theta = restandardize(theta, k, d, std_tr, std)
                obj = SoftmaxObjective(
                    (X_all - std[0]) / std[1],
                    y_all,
                    k,
                    class_weight_vector(y_all, k, cw, data.classes, s_all),
                    data.X.dtype,
                    s_all,
                )
            obj.set_C(self.C_)
            theta, nit, hit_max = minimize_lbfgs(obj, theta, self.max_iter, self.tol)
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

    @classmethod
    def _fitted_from_json(cls, key: str, value: Any) -> Any:
        if key == "val_scores":
            return {float(r["C"]): {m: v for m, v in r.items() if m != "C"} for r in value}
        return value

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
