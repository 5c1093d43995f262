"""Classification metrics from predicted probabilities, as plain JSON-able Python values.

:func:`classification_metrics` gives everything a report shows for one split: accuracy,
macro F1, balanced accuracy, log-loss, per-class precision/recall/F1, the confusion matrix,
ROC AUC (all computed by :mod:`sklearn.metrics`), expected calibration error and the
reliability-diagram bins (which scikit-learn lacks).
:func:`most_confident_errors` lists the wrong predictions the model was surest of, the first
examples worth looking at.

Labels are class indices ``0 .. n_classes-1`` into `classes`; column ``j`` of `proba` is the
probability of class ``j``. The predicted class is the arg-max of each row (first on ties).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn import metrics as skm

from headstart.errors import DataError

__all__ = [
    "ECE_BINS",
    "classification_metrics",
    "expected_calibration_error",
    "most_confident_errors",
]

#: Number of equal-width confidence bins for the expected calibration error.
ECE_BINS = 15


def _check_inputs(y_true: ArrayLike, proba: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise DataError(
            f"proba must be a 2-D array (n_examples, n_classes) with at least 2 columns; got "
            f"shape {p.shape}. Pass predict_proba output, not predicted labels."
        )
    y = np.asarray(y_true)
    if y.ndim != 1 or len(y) != len(p):
        raise DataError(
            f"y_true must be 1-D with one label per row of proba ({len(p)} rows); got shape "
            f"{y.shape}."
        )
    if len(y) == 0:
        raise DataError("No examples to score: y_true and proba are empty.")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError(
                f"y_true must hold integer class indices into classes; got dtype {y.dtype}. "
                "Map label names to their index first (classes.index(name))."
            )
    bad = (y < 0) | (y >= p.shape[1])
    if bad.any():
        raise DataError(
            f"y_true holds {int(bad.sum())} label(s) outside 0..{p.shape[1] - 1} (e.g. "
            f"{int(y[bad][0])} at row {int(np.flatnonzero(bad)[0])}). Drop unlabelled rows "
            "(label -1) before scoring, and pass one proba column per class."
        )
    if not np.isfinite(p).all() or (p < 0).any():
        raise DataError("proba holds negative, NaN or infinite values; expected probabilities.")
    sums = p.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > 1e-3:
        raise DataError(
            f"Rows of proba must sum to 1; row {worst} sums to {sums[worst]:.6g}. Apply softmax "
            "to logits, or pass predict_proba output."
        )
    return y.astype(np.int64), p


def expected_calibration_error(
    y_true: ArrayLike, proba: ArrayLike, n_bins: int = ECE_BINS
) -> tuple[float, list[dict[str, Any]]]:
    """Top-label ECE and the reliability-diagram bins.

    Confidence is the highest probability of each row; bin ``b`` (0-based) holds confidences
    in ``(b/n_bins, (b+1)/n_bins]`` (the first bin also holds 0). ECE is the count-weighted
    mean of ``|accuracy - mean confidence|`` over bins. Each bin is reported as
    ``{"lower", "upper", "confidence", "accuracy", "count"}``; confidence and accuracy are
    None for empty bins.
    """
    y, p = _check_inputs(y_true, proba)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins)
    bins: list[dict[str, Any]] = []
    ece = 0.0
    for b in range(n_bins):
        c = int(count[b])
        mean_conf = float(conf_sum[b] / c) if c else None
        acc = float(acc_sum[b] / c) if c else None
        if c:
            ece += c / len(y) * abs(acc - mean_conf)  # type: ignore[operator]
        bins.append(
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "confidence": mean_conf,
                "accuracy": acc,
                "count": c,
            }
        )
    return float(ece), bins


def classification_metrics(
    y_true: ArrayLike, proba: ArrayLike, classes: Sequence[str]
) -> dict[str, Any]:
    """All metrics of one split, as a JSON-able dict.

    Keys: ``n``, ``accuracy``, ``macro_f1`` (mean F1 over the classes that occur in y_true or
    in the predictions, as :func:`sklearn.metrics.f1_score` does), ``balanced_accuracy`` (mean
    recall over the classes in y_true, as :func:`sklearn.metrics.balanced_accuracy_score`),
    ``log_loss`` (natural log, of the rows renormalised to sum to 1 and clipped to
    [eps, 1 - eps] with float64 eps, by :func:`sklearn.metrics.log_loss`), ``per_class``
    ({name: {precision, recall, f1, support}}; 0.0 where undefined), ``confusion_matrix``
    (list of lists, rows = true class, columns = predicted, in `classes` order), ``roc_auc``
    (binary: of the class-1 column; multiclass: macro one-vs-rest, only when every class
    occurs in y_true; otherwise None), ``ece`` and ``reliability`` (see
    :func:`expected_calibration_error`).
    """
    y, p = _check_inputs(y_true, proba)
    k = p.shape[1]
    if len(classes) != k:
        raise DataError(
            f"{len(classes)} class names for {k} proba columns; pass one name per column."
        )
    labels = np.arange(k)
    pred = p.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0.0
    )

    roc_auc: float | None = None
    if k == 2 and 0 < support[1] < len(y):
        roc_auc = float(skm.roc_auc_score(y == 1, p[:, 1]))
    elif k > 2 and (support > 0).all():
        # One-vs-rest macro AUC, per column: scikit-learn's multi_class="ovr" would also demand
        # rows that sum to 1 within 1e-5, stricter than the 1e-3 accepted here.
        roc_auc = float(np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in labels]))

    ece, reliability = expected_calibration_error(y, p)
    return {
        "n": len(y),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "macro_f1": float(skm.f1_score(y, pred, average="macro", zero_division=0.0)),
        # balanced_accuracy_score, without its warning when a class is predicted but absent
        "balanced_accuracy": float(recall[support > 0].mean()),
        "log_loss": float(skm.log_loss(y, p / p.sum(axis=1, keepdims=True), labels=labels)),
        "per_class": {
            str(name): {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(support[c]),
            }
            for c, name in enumerate(classes)
        },
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=labels).tolist(),
        "roc_auc": roc_auc,
        "ece": ece,
        "reliability": reliability,
    }


def most_confident_errors(y_true: ArrayLike, proba: ArrayLike, k: int = 12) -> list[dict[str, Any]]:
    """The `k` misclassified examples with the highest predicted-class probability.

    Each is ``{"index", "true", "pred", "confidence"}`` (class indices, confidence = the
    probability of the predicted class), most confident first; ties keep row order.
    """
    y, p = _check_inputs(y_true, proba)
    pred = p.argmax(axis=1)
    conf = p.max(axis=1)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-conf[wrong], kind="stable")][: max(int(k), 0)]
    return [
        {"index": int(i), "true": int(y[i]), "pred": int(pred[i]), "confidence": float(conf[i])}
        for i in order
    ]
