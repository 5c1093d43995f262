"""Tests for headstart.metrics against scikit-learn's reference implementations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from headstart.errors import DataError
from headstart.metrics import (
    classification_metrics,
    expected_calibration_error,
    most_confident_errors,
)


def random_problem(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels plus informative-but-imperfect probabilities (with some exact ties)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    logits = np.round(logits, 1)  # creates tied scores, which AUC must handle
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3, 6])
def test_matches_sklearn(k):
    y, p = random_problem(500, k, seed=k)
    classes = [f"c{i}" for i in range(k)]
    m = classification_metrics(y, p, classes)
    pred = p.argmax(axis=1)

    assert m["n"] == 500
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p, labels=range(k)), rel=1e-12)
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(k)).tolist()
    prec, rec, f1, sup = skm.precision_recall_fscore_support(
        y, pred, labels=range(k), zero_division=0
    )
    for c, name in enumerate(classes):
        assert m["per_class"][name] == pytest.approx(
            {"precision": prec[c], "recall": rec[c], "f1": f1[c], "support": sup[c]}, abs=1e-12
        )
    if k == 2:
        ref_auc = skm.roc_auc_score(y, p[:, 1])
    else:
        ref_auc = skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert m["roc_auc"] == pytest.approx(ref_auc, abs=1e-12)
    # Plain Python values only: the dict survives a JSON round trip unchanged.
    assert json.loads(json.dumps(m)) == m


def test_fixed_small_example():
    y = np.array([0, 0, 1, 1, 1, 2])
    p = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.3, 0.6, 0.1],
            [0.1, 0.8, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.2, 0.7],
            [0.1, 0.1, 0.8],
        ]
    )
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.8, 0.3, 0.8, 0.7, 0.2, 0.8])))


def test_auc_absent_when_undefined():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.65, 0.35]])
    assert classification_metrics(y, p, ["neg", "pos"])["roc_auc"] == pytest.approx(0.75)
    assert classification_metrics(np.zeros(4, int), p, ["neg", "pos"])["roc_auc"] is None
    y3, p3 = random_problem(50, 3, seed=0)
    y3[y3 == 2] = 0  # class 2 never occurs: one-vs-rest AUC for it is undefined
    assert classification_metrics(y3, p3, ["a", "b", "c"])["roc_auc"] is None


def test_ece_of_calibrated_and_overconfident_models():
    # Calibrated: 100 predictions at confidence 0.8, exactly 80 correct.
    n = 100
    y = np.zeros(n, int)
    y[80:] = 1
    p = np.tile([0.8, 0.2], (n, 1))
    ece, bins = expected_calibration_error(y, p)
    assert ece == pytest.approx(0.0, abs=1e-12)
    full = [b for b in bins if b["count"]]
    assert len(full) == 1 and full[0]["count"] == n
    assert full[0]["confidence"] == pytest.approx(0.8) and full[0]["accuracy"] == pytest.approx(0.8)
    assert full[0]["lower"] < 0.8 <= full[0]["upper"]

    # Overconfident: confidence 0.95 but half wrong; plus a calibrated 0.6 group of equal size.
    y2 = np.array([0] * 50 + [1] * 50 + [0] * 60 + [1] * 40)
    p2 = np.array([[0.95, 0.05]] * 100 + [[0.6, 0.4]] * 100)
    m = classification_metrics(y2, p2, ["a", "b"])
    assert m["ece"] == pytest.approx(0.5 * 0.45 + 0.5 * 0.0)
    assert len(m["reliability"]) == 15
    assert sum(b["count"] for b in m["reliability"]) == 200
    assert all(b["confidence"] is None for b in m["reliability"] if b["count"] == 0)


def test_ece_bin_edges():
    # Bins are (b/15, (b+1)/15]: 0.6 = 9/15 closes bin 8, 0.61 opens bin 9, 1.0 is in bin 14.
    p = np.array([[0.6, 0.4], [0.61, 0.39], [1.0, 0.0], [0.5, 0.5]])
    _, bins = expected_calibration_error(np.array([0, 0, 0, 1]), p)
    counts = [b["count"] for b in bins]
    assert counts[8] == 1 and counts[9] == 1 and counts[14] == 1 and counts[7] == 1
    assert sum(counts) == 4
    assert bins[7]["accuracy"] == 0.0  # tie -> first column predicted, label was 1


def test_most_confident_errors():
    y = np.array([0, 1, 1, 0, 2])
    p = np.array(
        [
            [0.2, 0.7, 0.1],  # wrong, 0.7
            [0.1, 0.8, 0.1],  # right
            [0.9, 0.05, 0.05],  # wrong, 0.9
            [0.4, 0.3, 0.3],  # right
            [0.1, 0.5, 0.4],  # wrong, 0.5
        ]
    )
    errs = most_confident_errors(y, p, k=2)
    assert errs == [
        {"index": 2, "true": 1, "pred": 0, "confidence": 0.9},
        {"index": 0, "true": 0, "pred": 1, "confidence": 0.7},
    ]
    assert len(most_confident_errors(y, p)) == 3
    assert most_confident_errors(np.array([1]), np.array([[0.1, 0.9]])) == []


def test_bad_inputs_are_explained():
    p = np.array([[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(DataError, match=r"outside 0\.\.1"):
        classification_metrics(np.array([0, 2]), p, ["a", "b"])
    with pytest.raises(DataError, match="sums to"):
        classification_metrics(np.array([0, 1]), p * 2, ["a", "b"])
    with pytest.raises(DataError, match="one name per column"):
        classification_metrics(np.array([0, 1]), p, ["a"])
    with pytest.raises(DataError, match="integer class indices"):
        classification_metrics(np.array(["a", "b"]), p, ["a", "b"])
    with pytest.raises(DataError, match="2-D"):
        classification_metrics(np.array([0, 1]), np.array([0, 1]), ["a", "b"])
