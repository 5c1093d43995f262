"""A cheap non-transfer baseline, trained on the same split as every transfer result.

A transfer-learning result means little without the number a model that knows nothing
pretrained gets on the same data. :func:`fit_baseline` picks one by modality:

* text: TF-IDF (hashed word 1-2 grams, sublinear tf, min_df=2, at most 200,000 terms) + logistic
  regression (``"tfidf+logreg"``);
* images: the pixels of a small greyscale thumbnail (28 x 28, or the native size when the
  images are smaller), scaled to [0, 1] and standardised, + logistic regression
  (``"pixels+logreg"``);
* audio: log-mel statistics (40 mel bands, 25 ms windows every 10 ms at 16 kHz; per band the
  mean and standard deviation over time of the log-mel energy and of its frame-to-frame
  difference, 160 numbers per clip), standardised, + logistic regression
  (``"logmel-stats+logreg"``).

In all, the inverse L2 strength C is chosen on the validation split by class-weighted
validation log-loss (ties: higher accuracy, then smaller C), classes are weighted 'balanced'
like the default heads, and (with ``refit=True``, the default, as for
:class:`~headstart.heads.LogisticHead`) the final model is refitted on train + val.

A fitted :class:`Baseline` saves as JSON plus numeric arrays (:meth:`Baseline.state`,
:meth:`Baseline.from_state`; files: :mod:`headstart.baselines.store`). The featurizers live
in :mod:`headstart.baselines.featurize`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from headstart.baselines.featurize import (
    AUDIO_MELS,
    Featurizer,
    LogMelStatsFeaturizer,
    PixelFeaturizer,
    TfidfFeaturizer,
    featurizer_from_state,
    log_mel_statistics,
)
from headstart.data.base import Examples
from headstart.errors import ConfigError, DataError
from headstart.heads import LogisticHead
from headstart.heads.solver import (
    SoftmaxObjective,
    choose_C,
    class_weight_vector,
    minimize_lbfgs,
    walk_C_path,
)

__all__ = [
    "AUDIO_MELS",
    "BASELINE_FORMAT",
    "IMAGE_SIDE",
    "TEXT_CS",
    "Baseline",
    "fit_baseline",
    "log_mel_statistics",
]

#: Grid of C for the TF-IDF model (rows are L2-normalised, so useful C are around 1-30).
TEXT_CS: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: Side of the square greyscale thumbnail the pixel baseline reads.
IMAGE_SIDE = 28
#: Version of :meth:`Baseline.state`'s layout; :meth:`Baseline.from_state` reads this one only.
BASELINE_FORMAT = 1
#: Each baseline's modality and featurizer kind.
_KINDS = {
    "tfidf+logreg": ("text", TfidfFeaturizer.kind),
    "pixels+logreg": ("image", PixelFeaturizer.kind),
    "logmel-stats+logreg": ("audio", LogMelStatsFeaturizer.kind),
}
_REFIT = "Re-run fit_baseline and save the baseline again."
_MAX_ITER = 500
_TOL = 1e-4
_PATH_PATIENCE = 2


class Baseline:
    """A fitted baseline. Use :func:`fit_baseline` to make one.

    Attributes
    ----------
    name: ``"tfidf+logreg"``, ``"pixels+logreg"`` or ``"logmel-stats+logreg"``.
    modality, classes: those of the training split; probability columns follow `classes`.
    C: the chosen inverse L2 strength.
    val_scores: ``{C: {"log_loss", "accuracy"}}`` of models trained on train only.
    val_accuracy: validation accuracy at the chosen C (trained on train only, so honest even
        when the final model was refitted on train + val).
    n_features: input dimension of the logistic regression.
    refit: whether the final model saw the validation split too.
    val_proba: probabilities on the validation split (columns in `classes` order) of the model
        trained on train only, at the chosen C: scored before any refit, so an honest
        validation score even when the final model has seen the validation split.
    fit_seconds: wall-clock time of :func:`fit_baseline`.
    """

    def __init__(
        self,
        *,
        name: str,
        modality: str,
        classes: list[str],
        featurizer: Featurizer,
        model: Any,
        C: float,
        val_scores: dict[float, dict[str, float]],
        refit: bool,
    ) -> None:
        self.name = name
        self.modality = modality
        self.classes = list(classes)
        self._featurizer = featurizer
        self._model = model
        self.C = float(C)
        self.val_scores = val_scores
        self.val_accuracy = float(val_scores[self.C]["accuracy"]) if val_scores else float("nan")
        self.n_features = featurizer.n_features
        self.refit = refit
        self.fit_seconds = float("nan")
        self.val_proba: np.ndarray | None = None

    def _check(self, examples: Examples) -> None:
        if examples.modality != self.modality:
            raise DataError(
                f"This {self.name} baseline was trained on {self.modality} data but got "
                f"{examples.modality} data ({examples.name or 'unnamed split'})."
            )
        if list(examples.classes) != self.classes:
            raise DataError(
                f"Class names of {examples.name or 'the split'} ({examples.classes[:5]}...) "
                f"differ from the training split's ({self.classes[:5]}...). Score splits of "
                "the same data set, whose label indices mean the same classes."
            )

    def predict_proba(self, examples: Examples) -> np.ndarray:
        """Probabilities, shape (len(examples), len(classes)), columns in `classes` order.

        A class that had no training example gets probability 0.
        """
        self._check(examples)
        return _all_columns(
            self._model, self._model.predict_proba(self._featurizer.transform(examples)),
            len(self.classes),
        )  # fmt: skip

    def predict(self, examples: Examples) -> np.ndarray:
        """Predicted class indices (into `classes`), int64."""
        return self.predict_proba(examples).argmax(axis=1).astype(np.int64)

    def describe(self) -> str:
        """One line for reports: what the baseline is and how it was tuned."""
        trained = "train + val" if self.refit else "train"
        return (
            f"{self.name}: {self._featurizer.describe()} + logistic regression "
            f"(C={self.C:g} chosen on val log-loss from {len(self.val_scores)} values, "
            f"class_weight='balanced', trained on {trained}; val accuracy "
            f"{self.val_accuracy:.4f} before refit)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary for run records."""
        return {
            "name": self.name,
            "description": self.describe(),
            "C": self.C,
            "val_accuracy": self.val_accuracy,
            "val_scores": [{"C": C, **s} for C, s in self.val_scores.items()],
            "n_features": int(self.n_features),
            "refit": self.refit,
            "fit_seconds": self.fit_seconds,
        }

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Everything needed to rebuild this baseline: a JSON-able description and numeric
        arrays (no objects), for :meth:`from_state` or
        :func:`~headstart.baselines.store.save_baseline`.

        Arrays are named ``featurizer.<name>`` (e.g. the TF-IDF kept term indices and idf),
        ``model.<name>`` (coef, intercept, classes and, for dense features, the
        standardisation mean and scale) and ``val_proba`` when known.
        """
        f_meta, f_arrays = self._featurizer.state()
        m_meta, m_arrays = _model_state(self._model)
        meta = {
            "format": BASELINE_FORMAT,
            "name": self.name,
            "modality": self.modality,
            "classes": list(self.classes),
            "C": self.C,
            "val_scores": [{"C": C, **s} for C, s in self.val_scores.items()],
            "refit": bool(self.refit),
            "n_features": int(self.n_features),
            "fit_seconds": self.fit_seconds,
            "featurizer": f_meta,
            "model": m_meta,
        }
        arrays = {f"featurizer.{k}": v for k, v in f_arrays.items()}
        arrays.update({f"model.{k}": v for k, v in m_arrays.items()})
        if self.val_proba is not None:
            arrays["val_proba"] = self.val_proba
        return _json_safe(meta), {k: np.ascontiguousarray(v) for k, v in arrays.items()}

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Baseline:
        """Rebuild a baseline from :meth:`state`; its predictions equal the original's.

        Raises ConfigError saying what is wrong when `meta` and `arrays` do not describe a
        baseline this headstart can run (unknown format, missing or mis-shaped arrays...).
        """
        if not isinstance(meta, Mapping):
            raise ConfigError(f"A saved baseline is a JSON object; got {type(meta).__name__}.")
        fmt = meta.get("format")
        if fmt != BASELINE_FORMAT:
            raise ConfigError(
                f"The saved baseline has format {fmt!r}; this headstart reads format "
                f"{BASELINE_FORMAT} only. Save it again with this headstart (or upgrade "
                "headstart to read a newer one)."
            )
        name = _field(meta, "name", str)
        if name not in _KINDS:
            raise ConfigError(
                f"Unknown baseline name {name!r}; this headstart knows {', '.join(_KINDS)}. "
                f"{_REFIT}"
            )
        modality, kind = _KINDS[name]
        classes = _field(meta, "classes", list)
        if not classes or not all(isinstance(c, str) for c in classes):
            raise ConfigError(f"'classes' must be a non-empty list of names. {_REFIT}")
        if _field(meta, "modality", str) != modality:
            raise ConfigError(f"A {name} baseline reads {modality} data, not {meta['modality']}.")
        C = _field(meta, "C", float)
        scores = {}
        for row in _field(meta, "val_scores", list):
            if not isinstance(row, Mapping) or not isinstance(row.get("C"), int | float):
                raise ConfigError(f"Each val_scores entry needs a number 'C'; got {row!r}.")
            scores[float(row["C"])] = {k: _number(v) for k, v in row.items() if k != "C"}
        if scores and C not in scores:
            raise ConfigError(f"C={C} is not among the val_scores' C {sorted(scores)}. {_REFIT}")
        n_features = _field(meta, "n_features", int)
        f_meta, m_meta = _field(meta, "featurizer", Mapping), _field(meta, "model", Mapping)
        if f_meta.get("kind") != kind:
            raise ConfigError(f"A {name} baseline needs a {kind!r} featurizer, not {f_meta!r}.")
        featurizer = featurizer_from_state(f_meta, _prefixed(arrays, "featurizer."))
        model = _model_from_state(m_meta, _prefixed(arrays, "model."))
        k, d = model.coef_.shape
        if not featurizer.n_features == d == n_features:
            raise ConfigError(
                f"The featurizer gives {featurizer.n_features} features, the model's coef has "
                f"{d} columns and n_features is {n_features}: they must agree. {_REFIT}"
            )
        labels = np.asarray(model.classes_)
        if labels.dtype.kind not in "iu" or len(labels) != k or (
            k and (labels[0] < 0 or labels[-1] >= len(classes) or (np.diff(labels) <= 0).any())
        ):  # fmt: skip
            raise ConfigError(
                f"model.classes must be {k} increasing class indices into the {len(classes)} "
                f"classes (one per coef row); got {labels.tolist()[:10]}. {_REFIT}"
            )
        baseline = cls(
            name=name,
            modality=modality,
            classes=classes,
            featurizer=featurizer,
            model=model,
            C=C,
            val_scores=scores,
            refit=_field(meta, "refit", bool),
        )
        baseline.fit_seconds = _number(meta.get("fit_seconds"))
        if "val_proba" in arrays:
            val_proba = np.asarray(arrays["val_proba"], dtype=np.float64)
            if val_proba.ndim != 2 or val_proba.shape[1] != len(classes):
                raise ConfigError(
                    f"val_proba has shape {val_proba.shape}; it needs one column per class "
                    f"({len(classes)}). {_REFIT}"
                )
            baseline.val_proba = val_proba.copy()
        return baseline

    def __repr__(self) -> str:
        return f"Baseline({self.describe()})"


def _field(meta: Mapping[str, Any], key: str, kind: type) -> Any:
    """``meta[key]`` if it is a `kind` (int counts as float, bool as neither), or ConfigError."""
    value: Any = meta.get(key)
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and value > 0
    if not ok:
        what = {float: "number > 0", bool: "true or false", Mapping: "JSON object"}
        raise ConfigError(
            f"The saved baseline's {key!r} must be a {what.get(kind, kind.__name__)}; got "
            f"{value!r}. {_REFIT}"
        )
    return float(value) if kind is float else value


def _number(value: Any) -> float:
    """A saved score: a number, or None (written for NaN and infinities) read as NaN."""
    return float("nan") if value is None or isinstance(value, bool) else float(value)


def _json_safe(obj: Any) -> Any:
    """`obj` with numpy scalars as Python numbers and NaN / infinities as None (standard JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _prefixed(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _model_state(model: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A baseline's logistic regression as JSON + arrays (classes: int64 label indices)."""
    if isinstance(model, LogisticHead):
        config = model.get_config()
        del config["classes"]  # saved as the model.classes array
        arrays = {**model.get_state(), "classes": np.asarray(model.classes_, dtype=np.int64)}
        return {"kind": "logistic", "config": config}, arrays
    return model.state()


def _model_from_state(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Any:
    kind = meta.get("kind")
    if "classes" not in arrays:
        raise ConfigError(f"The saved arrays lack 'model.classes'. {_REFIT}")
    if kind == "logistic":
        config = dict(_field(meta, "config", Mapping))
        config["classes"] = np.asarray(arrays["classes"]).tolist()
        try:
            head = LogisticHead.from_state(
                config, {k: v for k, v in arrays.items() if k != "classes"}
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"The saved model config is incomplete ({exc!r}). {_REFIT}") from exc
        head.classes_ = np.asarray(arrays["classes"]).copy()
        return head
    if kind == "linear-softmax":
        return _LinearSoftmax.from_state(meta, arrays)
    raise ConfigError(
        f"Unknown baseline model kind {kind!r}; this headstart knows 'logistic' and "
        f"'linear-softmax'. {_REFIT}"
    )


def _all_columns(model: Any, proba: np.ndarray, n_classes: int) -> np.ndarray:
    """`model`'s probabilities spread over every class (0 for a class it never saw)."""
    out = np.zeros((len(proba), n_classes))
    out[:, np.asarray(model.classes_, dtype=np.int64)] = proba
    return out


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------


def _labelled(split: Examples, what: str) -> Examples:
    keep = np.flatnonzero(split.labels >= 0)
    if len(keep) == 0:
        raise DataError(f"The {what} split ({split.name or 'unnamed'}) has no labelled examples.")
    return split if len(keep) == len(split) else split.subset(keep)


class _LinearSoftmax:
    """softmax(X @ coef.T + intercept) over the class indices in `classes_` (dense or sparse X)."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray) -> None:
        self.coef_, self.intercept_, self.classes_ = coef, intercept, classes

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"coef": self.coef_, "intercept": self.intercept_, "classes": self.classes_}
        return {"kind": "linear-softmax"}, {k: np.asarray(v) for k, v in arrays.items()}

    @classmethod
    def from_state(
        cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> _LinearSoftmax:
        missing = sorted({"coef", "intercept", "classes"} - set(arrays))
        if missing:
            raise ConfigError(
                f"The saved arrays lack {['model.' + m for m in missing]}; found "
                f"{['model.' + k for k in sorted(arrays)]}. {_REFIT}"
            )
        coef, intercept = np.asarray(arrays["coef"]), np.asarray(arrays["intercept"])
        classes = np.asarray(arrays["classes"])
        if (
            coef.ndim != 2
            or coef.dtype.kind != "f"
            or intercept.shape != coef.shape[:1]
            or intercept.dtype.kind != "f"
            or classes.shape != coef.shape[:1]
        ):
            raise ConfigError(
                f"model.coef {coef.shape}, model.intercept {intercept.shape} and model.classes "
                f"{classes.shape} must be float (k, d), float (k,) and (k,). {_REFIT}"
            )
        return cls(coef.copy(), intercept.copy(), classes.copy())

    def predict_proba(self, X: Any) -> np.ndarray:
        z = np.asarray(X @ self.coef_.T) + self.intercept_
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        return z / z.sum(axis=1, keepdims=True)


def _fit_sparse_logreg(
    X_tr: sp.csr_matrix, y_tr: np.ndarray, X_va: sp.csr_matrix, y_va: np.ndarray, refit: bool
) -> tuple[_LinearSoftmax, float, dict[float, dict[str, float]], np.ndarray]:
    """Multinomial logistic regression on sparse features, C chosen on val (as LogisticHead).

    Uses the head's solver: the C grid is walked from strong to weak regularisation with warm
    starts, C is chosen by balanced validation log-loss, then (refit) the model is refitted on
    train + val from the chosen solution.
    """
    present = np.unique(y_tr)
    k, d = len(present), X_tr.shape[1]
    yi_tr, yi_va = np.searchsorted(present, y_tr), np.searchsorted(present, y_va)

    def objective(X: sp.csr_matrix, y: np.ndarray) -> SoftmaxObjective:
        return SoftmaxObjective(X, y, k, class_weight_vector(y, k, "balanced", present), np.float32)

    # Sparse products are single-threaded; multi-threaded BLAS would only add contention to
    # the solver's vector updates.
    with threadpool_limits(limits=1, user_api="blas"):
        thetas, path, _ = walk_C_path(
            objective(X_tr, yi_tr),
            X_va,
            yi_va,
            class_weight_vector(yi_va, k, "balanced", present)[yi_va],
            TEXT_CS,
            max_iter=_MAX_ITER,
            tol=_TOL,
            patience=_PATH_PATIENCE,
        )
        C = choose_C(path)
        theta = thetas[C]
        before = _LinearSoftmax(theta[: k * d].reshape(k, d), theta[k * d :], present)
        val_proba = before.predict_proba(X_va)
        if refit:
            obj = objective(sp.vstack([X_tr, X_va], format="csr"), np.concatenate([yi_tr, yi_va]))
            obj.set_C(C)
            theta = minimize_lbfgs(obj, theta, _MAX_ITER, _TOL)[0]
    scores = {c: {"log_loss": s["log_loss"], "accuracy": s["accuracy"]} for c, s in path.items()}
    model = _LinearSoftmax(theta[: k * d].reshape(k, d), theta[k * d :], present)
    return model, C, scores, val_proba


def fit_baseline(
    train: Examples, val: Examples, *, refit: bool = True, image_side: int = IMAGE_SIDE
) -> Baseline:
    """Fit the cheap baseline for `train`'s modality, choosing C on `val`.

    Unlabelled examples (label -1) are left out. `refit=True` trains the final model on
    train + val (the text vocabulary always comes from train alone). Raises ConfigError for
    modalities without a baseline and DataError for unusable splits.
    """
    started = time.perf_counter()
    if train.modality != val.modality:
        raise DataError(
            f"train is {train.modality} data but val is {val.modality} data; pass two splits "
            "of the same data set."
        )
    if list(train.classes) != list(val.classes):
        raise DataError(
            "train and val have different class lists; pass two splits of the same data set "
            "so that label indices mean the same classes."
        )
    if not isinstance(image_side, int) or image_side < 1:
        raise ConfigError(f"image_side must be an int >= 1. Got {image_side!r} instead.")
    train, val = _labelled(train, "train"), _labelled(val, "val")
    unseen = sorted(set(np.unique(val.labels).tolist()) - set(np.unique(train.labels).tolist()))
    if unseen:
        raise DataError(
            f"The val split has class(es) {[train.classes[c] for c in unseen[:10]]} that never "
            "occur in train. Re-split so that every class has training examples."
        )
    if len(np.unique(train.labels)) < 2:
        raise DataError(
            f"The train split has examples of only one class ({train.classes[train.labels[0]]!r});"
            " a classifier needs at least two. Check the labels or the split."
        )

    if train.modality == "text":
        text = TfidfFeaturizer.fit([str(t) for t in train.inputs])
        assert text.train_matrix is not None
        model, C, scores, val_proba = _fit_sparse_logreg(
            text.train_matrix, train.labels, text.transform(val), val.labels, refit
        )
        val_proba = _all_columns(model, val_proba, len(train.classes))
        text.train_matrix = None  # only needed for fitting
        featurizer: Featurizer = text
        name = "tfidf+logreg"
    elif train.modality in ("image", "audio"):
        if train.modality == "image":
            featurizer, name = PixelFeaturizer.for_split(train, image_side), "pixels+logreg"
        else:
            featurizer, name = LogMelStatsFeaturizer(), "logmel-stats+logreg"
        model, C, scores, val_proba = _fit_dense_logreg(featurizer, train, val, refit)
    else:
        raise ConfigError(
            f"No baseline for {train.modality!r} data; baselines exist for 'image', 'text' "
            "and 'audio'."
        )
    baseline = Baseline(
        name=name,
        modality=train.modality,
        classes=list(train.classes),
        featurizer=featurizer,
        model=model,
        C=C,
        val_scores=scores,
        refit=refit,
    )
    baseline.val_proba = val_proba
    baseline.fit_seconds = time.perf_counter() - started
    return baseline


def _fit_dense_logreg(
    featurizer: Featurizer, train: Examples, val: Examples, refit: bool
) -> tuple[LogisticHead, float, dict[float, dict[str, float]], np.ndarray]:
    """LogisticHead on dense features, C chosen on val; the validation probabilities are
    taken from the train-only model before the (optional) refit on train + val."""
    X_tr, X_va = featurizer.transform(train), featurizer.transform(val)
    model = LogisticHead(refit=False).fit(X_tr, train.labels, X_va, val.labels)
    val_proba = _all_columns(model, model.predict_proba(X_va), len(train.classes))
    scores = {
        c: {"log_loss": s["log_loss"], "accuracy": s["accuracy"]}
        for c, s in model.val_scores_.items()
    }
    C = float(model.C_)
    if refit:
        model = LogisticHead(C=C, refit=True).fit(X_tr, train.labels, X_va, val.labels)
    return model, C, scores, val_proba
