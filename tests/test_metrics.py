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


# --------------------------------------------------------------------------------------------
# Same results as the hand-written implementation that metrics.py had before it wrapped
# sklearn.metrics (kept here as a reference, on the edge cases it handled)
# --------------------------------------------------------------------------------------------


def _rank_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula; ties count one half."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(score) - n_pos)))


def _reference_metrics(y: np.ndarray, p: np.ndarray) -> dict:
    """The former headstart.metrics formulas (log-loss of the rows as given)."""
    n, k = p.shape
    pred = p.argmax(axis=1)
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    seen = (support > 0) | (predicted > 0)
    auc = None
    if k == 2 and 0 < support[1] < n:
        auc = _rank_auc(y == 1, p[:, 1])
    elif k > 2 and (support > 0).all():
        auc = float(np.mean([_rank_auc(y == c, p[:, c]) for c in range(k)]))
    eps = np.finfo(np.float64).eps
    return {
        "n": n,
        "accuracy": tp.sum() / n,
        "macro_f1": f1[seen].mean(),
        "balanced_accuracy": recall[support > 0].mean(),
        "log_loss": -np.log(np.clip(p[np.arange(n), y], eps, 1 - eps)).mean(),
        "per_class": {
            f"c{c}": {
                "precision": precision[c],
                "recall": recall[c],
                "f1": f1[c],
                "support": support[c],
            }
            for c in range(k)
        },
        "confusion_matrix": cm.tolist(),
        "roc_auc": auc,
    }


def _assert_same(got: dict, want: dict) -> None:
    assert got["n"] == want["n"]
    assert got["confusion_matrix"] == want["confusion_matrix"]
    for key in ("accuracy", "macro_f1", "balanced_accuracy", "log_loss"):
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), key
    assert list(got["per_class"]) == list(want["per_class"])
    for name, scores in want["per_class"].items():
        assert got["per_class"][name] == pytest.approx(scores, rel=1e-12, abs=1e-12), name
    if want["roc_auc"] is None:
        assert got["roc_auc"] is None
    else:
        assert got["roc_auc"] == pytest.approx(want["roc_auc"], rel=1e-12, abs=1e-12)


@pytest.mark.filterwarnings("error")  # and scikit-learn warns about none of these cases
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("n", [1, 7, 60])
@pytest.mark.parametrize("drop", ["none", "true_class", "predicted_class", "all_but_one"])
def test_same_results_as_the_former_implementation(k, n, drop):
    y, p = random_problem(n, k, seed=100 * k + n)
    if drop == "true_class":  # a class absent from y_true (it may still be predicted)
        y[y == k - 1] = 0
    elif drop == "predicted_class":  # a class never predicted (it may still occur in y_true)
        p[:, 1] = 0.0
        p /= p.sum(axis=1, keepdims=True)
    elif drop == "all_but_one":  # a single class in y_true: ROC AUC is undefined
        y[:] = 1
    got = classification_metrics(y, p, [f"c{c}" for c in range(k)])
    _assert_same(got, _reference_metrics(y, p))
    assert json.loads(json.dumps(got)) == got
    if drop == "all_but_one":
        assert got["roc_auc"] is None


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("k", [2, 4])
def test_rows_that_do_not_sum_to_one_exactly(k):
    """Rows off by up to 1e-3 (float32 rounding and worse) are accepted, as before. Every
    metric is the former one except log-loss, which is now that of the renormalised rows
    (a probability distribution), so it moves by about the rows' error."""
    y, p = random_problem(200, k, seed=k)
    off = p * (1 + np.random.default_rng(k).uniform(-5e-4, 5e-4, size=(len(p), 1)))
    got = classification_metrics(y, off, [f"c{c}" for c in range(k)])
    want = _reference_metrics(y, off)
    renormalised = _reference_metrics(y, off / off.sum(axis=1, keepdims=True))
    assert got["log_loss"] == pytest.approx(renormalised["log_loss"], rel=1e-12)
    assert got["log_loss"] == pytest.approx(want["log_loss"], abs=1e-3)
    _assert_same(got, {**want, "log_loss": got["log_loss"]})
    # The same rows in float32 (what a torch softmax gives) score like the float64 ones.
    f32 = classification_metrics(y, p.astype(np.float32), [f"c{c}" for c in range(k)])
    assert f32["log_loss"] == pytest.approx(_reference_metrics(y, p)["log_loss"], rel=1e-6)


def test_labels_given_as_whole_floats_and_names_from_classes():
    y = np.array([0.0, 1.0, 2.0, 2.0])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    m = classification_metrics(y, p, ["cat", "dog", "eel"])
    assert list(m["per_class"]) == ["cat", "dog", "eel"]
    assert m["per_class"]["eel"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    with pytest.raises(DataError, match="integer class indices"):
        classification_metrics(np.array([0.5, 1.0, 2.0, 2.0]), p, ["cat", "dog", "eel"])
