"""Tests for headstart.heads: the scikit-learn contract, learning, C search, class weights,
saving/loading, the torch export and determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from headstart.errors import ConfigError, DataError
from headstart.heads import (
    DEFAULT_CS,
    LogisticHead,
    MLPHead,
    head_from_state,
    make_head,
)

# Small settings keep the MLP's ~56 estimator checks fast; the checks still demand > 83 %
# training accuracy, so the head must learn with them.
FAST_MLP = {"hidden": 32, "lr": 1e-2, "max_epochs": 40, "batch_size": 32, "patience": 5}


# A weight of 2 is not the same fit as a duplicated row: the heads hold out a stratified part
# of the rows to choose C / the epoch, and a duplicate can land on the other side of it.
HOLDOUT_NOT_WEIGHT_INVARIANT = {
    "check_sample_weight_equivalence_on_dense_data": "the internal hold-out (C / epoch "
    "selection) splits rows: a duplicated row and a row of weight 2 are split differently"
}


@parametrize_with_checks(
    [LogisticHead(), MLPHead(**FAST_MLP)],
    expected_failed_checks=lambda est: HOLDOUT_NOT_WEIGHT_INVARIANT,
    xfail_strict=True,
)
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


def blobs(
    n: int, d: int, k: int, sep: float, seed: int, weights: list[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes with means `sep` apart (in expectation), float32 features."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(1234).normal(size=(k, d)) * sep / np.sqrt(2 * d)
    y = rng.choice(k, size=n, p=weights)
    X = means[y] + rng.normal(size=(n, d))
    return X.astype(np.float32), y


@pytest.mark.parametrize("head", [LogisticHead(), MLPHead(max_epochs=60)])
def test_learns_separable_data(head):
    X, y = blobs(600, 20, 4, sep=12.0, seed=0)
    Xt, yt = blobs(400, 20, 4, sep=12.0, seed=1)
    head.fit(X, y)
    assert head.score(Xt, yt) >= 0.99
    proba = head.predict_proba(Xt)
    assert proba.shape == (400, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_logistic_matches_sklearn_at_fixed_C(k):
    """Same objective as scikit-learn's LogisticRegression at a fixed C (no search, no refit).

    For two classes the solver fits one weight vector; this checks the mapping back to the
    multinomial parameters: the symmetric multinomial model at C is the binary model that
    scikit-learn fits at 2C.
    """
    from sklearn.linear_model import LogisticRegression

    X, y = blobs(400, 10, k, sep=3.0, seed=2)
    X = X.astype(np.float64)
    mine = LogisticHead(C=0.3, class_weight=None, standardize=False, tol=1e-8).fit(X, y)
    ref = LogisticRegression(C=0.3 * (2 if k == 2 else 1), tol=1e-10, max_iter=5000).fit(X, y)
    np.testing.assert_allclose(mine.predict_proba(X), ref.predict_proba(X), atol=2e-5)


def test_C_search_prefers_strong_regularisation_on_small_noisy_data():
    X_small, y_small = blobs(60, 100, 3, sep=2.0, seed=3)
    Xv_small, yv_small = blobs(60, 100, 3, sep=2.0, seed=4)
    X_big, y_big = blobs(3000, 10, 3, sep=10.0, seed=5)
    Xv_big, yv_big = blobs(1000, 10, 3, sep=10.0, seed=6)
    small = LogisticHead(path_patience=None).fit(X_small, y_small, Xv_small, yv_small)
    big = LogisticHead(path_patience=None).fit(X_big, y_big, Xv_big, yv_big)
    assert small.C_ < big.C_ / 10
    # Both walked the whole grid, and C_ is the validation log-loss minimiser.
    assert sorted(small.val_scores_) == sorted(DEFAULT_CS)
    best = min(small.val_scores_.values(), key=lambda s: s["log_loss"])
    assert small.val_scores_[small.C_]["log_loss"] <= best["log_loss"] * (1 + 1e-4)


def test_path_patience_stops_early_but_keeps_the_best():
    X, y = blobs(200, 50, 3, sep=3.0, seed=7)
    Xv, yv = blobs(200, 50, 3, sep=3.0, seed=8)
    full = LogisticHead(path_patience=None).fit(X, y, Xv, yv)
    short = LogisticHead(path_patience=2).fit(X, y, Xv, yv)
    assert len(short.val_scores_) < len(full.val_scores_)
    assert short.C_ == full.C_


def test_internal_holdout_when_no_validation_data():
    X, y = blobs(300, 10, 3, sep=4.0, seed=9)
    head = LogisticHead().fit(X, y)
    assert head.val_scores_ and head.C_ in head.val_scores_
    # refit=True puts the holdout back: the standardisation is that of all of X.
    np.testing.assert_allclose(head.mean_, X.mean(axis=0, dtype=np.float64), rtol=1e-6)
    no_refit = LogisticHead(refit=False).fit(X, y)
    assert not np.allclose(no_refit.mean_, X.mean(axis=0, dtype=np.float64), rtol=1e-6)


@pytest.mark.parametrize(
    "make",
    [lambda cw: LogisticHead(class_weight=cw), lambda cw: MLPHead(class_weight=cw, max_epochs=60)],
)
def test_balanced_class_weight_raises_minority_recall(make):
    X, y = blobs(2000, 10, 2, sep=2.0, seed=10, weights=[0.95, 0.05])
    Xt, yt = blobs(4000, 10, 2, sep=2.0, seed=11, weights=[0.5, 0.5])

    def minority_recall(head):
        return float((head.predict(Xt[yt == 1]) == 1).mean())

    balanced = minority_recall(make("balanced").fit(X, y))
    plain = minority_recall(make(None).fit(X, y))
    assert balanced > plain + 0.1, (balanced, plain)


def test_dict_class_weight_uses_labels():
    X, y = blobs(400, 5, 2, sep=1.0, seed=12)
    labels = np.where(y == 1, "cat", "dog")
    head = LogisticHead(C=1.0, class_weight={"cat": 50.0}).fit(X, labels)
    assert (head.predict(X) == "cat").mean() > 0.8
    with pytest.raises(ConfigError, match="'cow'"):
        LogisticHead(class_weight={"cow": 2.0}).fit(X, labels)


@pytest.mark.parametrize("head", [LogisticHead(), MLPHead(max_epochs=30)])
@pytest.mark.parametrize("k", [2, 5])
def test_state_round_trip_and_torch_export(head, k, tmp_path):
    from safetensors.numpy import load_file, save_file

    X, y = blobs(300, 16, k, sep=3.0, seed=13)
    X = X * 5 + 3  # raw features far from standardised, so the export must standardise
    labels = np.array([f"class_{i}" for i in range(k)])[y]
    head = clone(head).fit(X, labels)

    config, state = head.get_config(), head.get_state()
    (tmp_path / "head.json").write_text(json.dumps(config))
    save_file(state, str(tmp_path / "head.safetensors"))
    again = head_from_state(
        json.loads((tmp_path / "head.json").read_text()),
        load_file(str(tmp_path / "head.safetensors")),
    )
    assert type(again) is type(head)
    assert again.get_params() == head.get_params()
    np.testing.assert_array_equal(again.predict_proba(X), head.predict_proba(X))
    np.testing.assert_array_equal(again.predict(X), head.predict(X))
    assert again.get_config() == config

    module = head.to_torch()
    assert not module.training
    with torch.no_grad():
        logits = module(torch.from_numpy(X)).double().numpy()
    assert logits.shape == (len(X), k)
    dec = head.decision_function(X)
    got = logits[:, 1] - logits[:, 0] if k == 2 else logits
    np.testing.assert_allclose(got, dec, rtol=1e-4, atol=1e-4 * np.abs(dec).max())


def test_from_state_checks_what_it_loads():
    X, y = blobs(100, 6, 3, sep=3.0, seed=18)
    head = LogisticHead().fit(X, y)
    config, state = head.get_config(), head.get_state()
    with pytest.raises(ConfigError, match=r"'coef' has shape \(3, 5\)"):
        LogisticHead.from_state(config, {**state, "coef": state["coef"][:, :5]})
    with pytest.raises(ConfigError, match="lacks array"):
        LogisticHead.from_state(config, {k: v for k, v in state.items() if k != "scale"})
    with pytest.raises(ConfigError, match="head_from_state"):
        MLPHead.from_state(config, state)
    newer = {**config, "params": {**config["params"], "future_knob": 3}}
    with pytest.warns(UserWarning, match="future_knob"):
        again = LogisticHead.from_state(newer, state)
    np.testing.assert_array_equal(again.predict(X), head.predict(X))


@pytest.mark.parametrize("head", [LogisticHead(), MLPHead(max_epochs=20)])
def test_fit_is_deterministic(head):
    X, y = blobs(300, 16, 3, sep=2.0, seed=14)
    a = clone(head).fit(X, y).get_state()
    b = clone(head).fit(X, y).get_state()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_mlp_restores_best_epoch():
    X, y = blobs(200, 50, 3, sep=1.5, seed=15)
    Xv, yv = blobs(200, 50, 3, sep=1.5, seed=16)
    head = MLPHead(hidden=256, dropout=0.0, weight_decay=0.0, lr=1e-2, patience=5).fit(X, y, Xv, yv)
    assert head.n_iter_ == head.best_epoch_ + 5  # stopped after `patience` bad epochs
    assert head.val_loss_curve_[head.best_epoch_ - 1] == min(head.val_loss_curve_)
    # The weights kept are the best epoch's: their val loss is the best recorded one.
    proba = head.predict_proba(Xv)
    cw = len(yv) / (3 * np.bincount(yv))
    loss = -(cw[yv] * np.log(proba[np.arange(len(yv)), yv])).sum() / cw[yv].sum()
    assert loss == pytest.approx(min(head.val_loss_curve_), rel=1e-4)


def test_errors_say_what_and_how():
    X, y = blobs(50, 4, 2, sep=3.0, seed=17)
    with pytest.raises(ConfigError, match="'C' parameter of LogisticHead must be"):
        LogisticHead(C=-1.0).fit(X, y)
    with pytest.raises(ConfigError, match="'dropout' parameter of MLPHead"):
        MLPHead(dropout=1.5).fit(X, y)
    with pytest.raises(ConfigError, match="without y_val"):
        LogisticHead().fit(X, y, X_val=X)
    with pytest.raises(DataError, match="never occur in y"):
        LogisticHead().fit(X, y, X, np.full(len(y), 7))
    with pytest.raises(DataError, match="X_val has 3 features but X has 4"):
        LogisticHead().fit(X, y, X[:, :3], y)
    with pytest.raises(DataError, match="cannot be compared"):
        LogisticHead().fit(X, y, X, np.array(["a"] * len(y), dtype=object))
    with pytest.raises(DataError, match="only one class"):
        LogisticHead().fit(X, np.zeros(len(X)))
    assert isinstance(make_head("logistic", C=2.0), LogisticHead)
    assert isinstance(make_head("mlp", hidden=8), MLPHead)
    with pytest.raises(ConfigError, match="Did you mean: logistic"):
        make_head("logistc")
    with pytest.raises(ConfigError, match="Did you mean: hidden"):
        make_head("mlp", hiden=8)
    with pytest.raises(ConfigError, match="type 'svm'"):
        head_from_state({"type": "svm"}, {})


# --------------------------------------------------------------------------------------------
# headstart.baselines (the cheap non-transfer baseline fitted with the same solver)
# --------------------------------------------------------------------------------------------


def _reviews(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Two-class texts: shared filler words plus a few class-specific words."""
    rng = np.random.default_rng(seed)
    filler = [f"word{i}" for i in range(300)]
    cues = [["good", "great", "lovely", "fine"], ["bad", "awful", "boring", "poor"]]
    y = rng.integers(0, 2, n)
    texts = [" ".join(list(rng.choice(filler, 20)) + list(rng.choice(cues[c], 2))) for c in y]
    return texts, y


def test_text_baseline_learns():
    from headstart.baselines import TEXT_CS, fit_baseline
    from headstart.data.base import Examples

    classes = ["neg", "pos"]
    train, val, test = (
        Examples("text", *_reviews(n, s), classes) for n, s in ((400, 0), (200, 1), (300, 2))
    )
    base = fit_baseline(train, val)
    assert base.name == "tfidf+logreg"
    assert base.C in TEXT_CS and base.C in base.val_scores
    assert base.val_accuracy > 0.95
    proba = base.predict_proba(test)
    assert proba.shape == (300, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (base.predict(test) == test.labels).mean() > 0.95
    assert "TF-IDF" in base.describe() and "C=" in base.describe()
    json.dumps(base.to_dict())


def _images(n: int, seed: int, size: int = 32, rgb: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Class 0: bright left half; class 1: bright right half; class 2: bright top half."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    img = rng.integers(0, 120, size=(n, size, size)).astype(np.float64)
    half = size // 2
    img[y == 0, :, :half] += 100
    img[y == 1, :, half:] += 100
    img[y == 2, :half, :] += 100
    img = np.clip(img, 0, 255).astype(np.uint8)
    return (np.repeat(img[..., None], 3, axis=-1) if rgb else img), y


@pytest.mark.parametrize(("size", "rgb", "features"), [(32, True, 28 * 28), (8, False, 8 * 8)])
def test_pixel_baseline_from_arrays(size, rgb, features):
    from headstart.baselines import fit_baseline
    from headstart.data.base import Examples

    classes = ["left", "right", "top"]
    train, val, test = (
        Examples("image", *_images(n, s, size, rgb), classes)
        for n, s in ((300, 0), (150, 1), (200, 2))
    )
    base = fit_baseline(train, val)
    assert base.name == "pixels+logreg"
    assert base.n_features == features  # 32 px images shrink to 28 x 28; 8 px ones stay
    assert (base.predict(test) == test.labels).mean() > 0.95


def test_pixel_baseline_from_files_and_bad_file(tmp_path):
    from PIL import Image

    from headstart.baselines import fit_baseline
    from headstart.data.base import Examples

    def write(split: str, n: int, seed: int) -> Examples:
        arrays, y = _images(n, seed, size=40)
        paths = []
        for i, a in enumerate(arrays):
            path = tmp_path / f"{split}_{i}.png"
            Image.fromarray(a).save(path)
            paths.append(str(path))
        return Examples("image", paths, y, ["left", "right", "top"])

    train, val = write("train", 90, 0), write("val", 45, 1)
    base = fit_baseline(train, val)
    assert base.n_features == 28 * 28
    assert (base.predict(val) == val.labels).mean() > 0.9
    (tmp_path / "broken.png").write_bytes(b"not a png")
    broken = Examples(
        "image", [str(tmp_path / "broken.png")], np.array([0]), ["left", "right", "top"]
    )
    with pytest.raises(DataError, match=r"broken\.png"):
        base.predict(broken)


def test_baseline_errors_and_missing_class_column():
    from headstart.baselines import fit_baseline
    from headstart.data.base import Examples

    texts, y = _reviews(200, 3)
    classes = ["neg", "pos", "neutral"]  # 'neutral' has no examples: its column stays 0
    base = fit_baseline(
        Examples("text", texts, y, classes), Examples("text", *_reviews(80, 4), classes)
    )
    proba = base.predict_proba(Examples("text", texts[:10], y[:10], classes))
    assert proba.shape == (10, 3) and (proba[:, 2] == 0).all()

    with pytest.raises(DataError, match="different class lists"):
        fit_baseline(
            Examples("text", texts, y, classes), Examples("text", texts, y, ["a", "b", "c"])
        )
    with pytest.raises(DataError, match=r"a\.wav"):  # audio has a baseline: it reads the files
        fit_baseline(
            Examples("audio", ["a.wav"] * 2, [0, 1], ["x", "y"]),
            Examples("audio", ["b.wav"], [0], ["x", "y"]),
        )
    with pytest.raises(DataError, match="never occur in train"):
        fit_baseline(
            Examples("text", texts, np.zeros(200, int), classes),
            Examples("text", texts[:5], [1] * 5, classes),
        )


def test_a_numerically_constant_feature_is_not_amplified():
    """A pooled dimension that is constant up to float32 rounding must not get a tiny scale:
    fine-tuning moves it, and 1/scale would turn that into enormous logits."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    X[:, 3] = 0.25 + rng.normal(scale=1e-9, size=200).astype(np.float32)  # rounding noise
    head = LogisticHead(C=1.0, refit=False).fit(X, y)
    assert head.scale_[3] == 1.0 and head.scale_[0] != 1.0
    module = head.to_torch()
    moved = torch.as_tensor(X[:5].copy())
    moved[:, 3] += 0.01  # what a fine-tuned backbone does to the dimension
    with torch.no_grad():
        change = (module(moved) - module(torch.as_tensor(X[:5]))).abs().max().item()
    assert change < 0.1
