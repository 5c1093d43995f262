"""TransferClassifier on the inputs practitioners have (issue 14, item 7): label types kept,
sample weights honoured, image arrays / PIL / pandas / ``datasets`` inputs, 2-D arrays, and
scikit-learn's own estimator checks."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.metrics import accuracy_score
from sklearn.model_selection import cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import image_examples, text_examples
from headstart import TransferClassifier, load_model
from headstart.errors import BundleError, ConfigError, DataError
from headstart.estimator import restore_labels

# --------------------------------------------------------------- scikit-learn's checks
# Each check scikit-learn runs that TransferClassifier fails on purpose, with the reason. The
# test fails if one of these starts passing (xfail_strict) or any other check fails.
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "the head chooses its regularisation on a stratified hold-out of the rows: a row of "
        "weight 2 and the same row repeated land differently in that hold-out, so the fits "
        "differ (the loss itself is weighted exactly: test_a_weight_of_two_is_a_duplicate)"
    ),
}


@parametrize_with_checks(
    # The checks' X is a 2-D numeric array: features, which only the identity backbone
    # reads (an image or text backbone refuses (N, D) arrays on purpose, see below).
    [TransferClassifier(backbone="precomputed")],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
    xfail_strict=True,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


# With an image backbone the same checks run, and each one that fits or predicts on the
# checks' 2-D numeric X fails on purpose: (N, D) could be flattened images as well as
# features, so an image backbone refuses it with a DataError naming backbone='precomputed'
# (test_a_2d_numeric_array_is_features_only_with_the_precomputed_backbone). The rest (API
# contract: parameters, cloning, tags, unfitted errors, sparse and complex input refused) pass.
REFUSES_2D_X = "fits on a 2-D numeric X, which an image backbone refuses by design"
IMAGE_BACKBONE_FAILED_CHECKS = dict.fromkeys(
    [
        "check_all_zero_sample_weights_error",
        "check_classifier_data_not_an_array",
        "check_classifiers_classes",
        "check_classifiers_one_label",
        "check_classifiers_one_label_sample_weights",
        "check_classifiers_regression_target",
        "check_classifiers_train",
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_estimators_dtypes",
        "check_estimators_empty_data_messages",
        "check_estimators_fit_returns_self",
        "check_estimators_nan_inf",
        "check_estimators_overwrite_params",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_n_features_in_after_fitting",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
        "check_readonly_memmap_input",
        "check_requires_y_none",
        "check_sample_weight_equivalence_on_dense_data",
        "check_sample_weights_list",
        "check_sample_weights_not_an_array",
        "check_sample_weights_not_overwritten",
        "check_sample_weights_pandas_series",
        "check_sample_weights_shape",
        "check_supervised_y_2d",
    ],
    REFUSES_2D_X,
) | {"check_dtype_object": "a 2-D object array is neither texts nor images: refused"}


def test_scikit_learn_checks_on_a_tiny_image_backbone(tiny_vision_dir):
    from sklearn.utils.estimator_checks import check_estimator

    clf = TransferClassifier(backbone=f"local-dir:{tiny_vision_dir}", engine="torch", cache=False)
    results = check_estimator(clf, on_fail=None)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert failed == set(IMAGE_BACKBONE_FAILED_CHECKS)
    assert {
        "check_estimators_unfitted",
        "check_complex_data",
        "check_estimator_sparse_array",
    } <= passed
    assert len(passed) >= 20


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def vision(tiny_vision_dir, tmp_path_factory):
    """Constructor keywords of a tiny DINOv2 estimator with its own feature cache."""
    return {
        "backbone": f"local-dir:{tiny_vision_dir}",
        "engine": "torch",
        "cache_dir": str(tmp_path_factory.mktemp("cache")),
    }


@pytest.fixture(scope="module")
def fitted_images(vision):
    ex = image_examples(60)
    return TransferClassifier(**vision).fit(ex.inputs, ex.labels)


@pytest.fixture(scope="module")
def fitted_text(tiny_text_dir, tmp_path_factory):
    ex = text_examples(40)
    kw = {"engine": "torch", "cache_dir": str(tmp_path_factory.mktemp("cache"))}
    return TransferClassifier(backbone=f"local-dir:{tiny_text_dir}", **kw).fit(ex.inputs, ex.labels)


def blobs(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return rng.normal(size=(n, 5)) + 2.0 * y[:, None], y


# ------------------------------------------------------------------------------- labels
def test_integer_labels_come_back_as_integers(fitted_images):
    ex = image_examples(40, seed=7)
    assert fitted_images.classes_.dtype.kind == "i"
    pred = fitted_images.predict(ex.inputs)
    assert pred.dtype.kind == "i"
    assert accuracy_score(ex.labels, pred) >= 0.9
    assert fitted_images.score(ex.inputs, ex.labels) == accuracy_score(ex.labels, pred)


def test_cross_val_score_accuracy_on_integer_labels_gives_numbers(vision):
    ex = image_examples(45)
    kw = {"cv": 3, "scoring": "accuracy", "error_score": "raise"}
    scores = cross_val_score(TransferClassifier(**vision), ex.inputs, ex.labels, **kw)
    assert scores.shape == (3,) and np.isfinite(scores).all() and scores.min() >= 0.8


def test_a_saved_model_restores_the_label_type(vision, tmp_path):
    ex = image_examples(40)
    y = ex.labels + 10  # ints that are not 0..k-1
    clf = TransferClassifier(**vision).fit(ex.inputs, y)
    again = load_model(clf.save(tmp_path / "m"))
    assert again.classes_.dtype == clf.classes_.dtype and list(again.classes_) == [10, 11]
    np.testing.assert_array_equal(again.predict(ex.inputs), clf.predict(ex.inputs))
    assert again.score(ex.inputs, y) == clf.score(ex.inputs, y)


@pytest.mark.parametrize(
    ("classes", "dtype"),
    [
        (np.array([3, 7]), "<i8"),
        (np.array([False, True]), "|b1"),
        (np.array([0.5, 2.0]), "<f8"),
        (np.array([0.1, 0.3], dtype=np.float32), "<f4"),
        (np.array(["neg", "pos"]), "<U3"),
    ],
)
def test_restore_labels_round_trips_each_label_type(classes, dtype):
    assert classes.dtype.str == dtype
    back = restore_labels([str(c) for c in classes], dtype)  # as save() writes them
    assert back.dtype == classes.dtype
    np.testing.assert_array_equal(back, classes)


@pytest.mark.parametrize(
    ("names", "dtype"), [(["a", "b"], "<i8"), (["1.5", "2"], "<i8"), (["x"], "|b1"), (["a"], 7)]
)
def test_an_edited_label_dtype_is_one_clear_error(names, dtype):
    with pytest.raises(BundleError, match=r"label_dtype .* does not fit the class names"):
        restore_labels(names, dtype)


def test_string_labels_stay_strings_and_mixed_label_types_are_refused(vision):
    ex = image_examples(20)
    clf = TransferClassifier(**vision).fit(ex.inputs, np.array(["left", "right"])[ex.labels])
    assert clf.classes_.dtype.kind == "U"
    mixed = [0, "pos"] * 10
    with pytest.raises(DataError, match="mixes label types"):
        TransferClassifier(**vision).fit(ex.inputs, mixed)
    with pytest.raises(DataError, match="requires y"):
        TransferClassifier(**vision).fit(ex.inputs)


# ------------------------------------------------------------------------ sample weights
def test_score_honours_sample_weight(fitted_images):
    ex = image_examples(30, seed=5)
    y = ex.labels.copy()
    y[:10] = 1 - y[:10]  # ten wrong labels
    right = fitted_images.predict(ex.inputs) == y
    assert 0 < right.mean() < 1
    w = np.where(right, 1.0, 0.0)
    assert fitted_images.score(ex.inputs, y, sample_weight=w) == 1.0
    w = np.linspace(0.1, 3.0, 30)
    assert fitted_images.score(ex.inputs, y, sample_weight=w) == pytest.approx(
        accuracy_score(y, fitted_images.predict(ex.inputs), sample_weight=w)
    )
    with pytest.raises(DataError, match="shape"):
        fitted_images.score(ex.inputs, y, sample_weight=np.ones(3))


def test_a_weight_of_two_is_a_duplicate_and_zero_is_absent():
    """With the regularisation fixed (no hold-out), weights act exactly on the loss."""
    X, y = blobs()
    fixed = {"backbone": "precomputed", "head_params": {"C": 0.5, "tol": 1e-10}}
    w = np.ones(len(y))
    w[:40] = 2.0
    w[100:] = 0.0
    weighted = TransferClassifier(**fixed).fit(X, y, sample_weight=w)
    keep = np.r_[np.arange(40), np.arange(100)]  # rows 0-39 twice, 100+ gone
    copied = TransferClassifier(**fixed).fit(X[keep], y[keep])
    np.testing.assert_allclose(weighted.predict_proba(X), copied.predict_proba(X), atol=1e-5)
    plain = TransferClassifier(**fixed).fit(X, y)
    assert np.abs(weighted.predict_proba(X) - plain.predict_proba(X)).max() > 1e-3


def test_sample_weight_moves_the_image_model(vision):
    ex = image_examples(40)
    w = np.where(ex.labels == 0, 5.0, 0.2)
    plain = TransferClassifier(**vision).fit(ex.inputs, ex.labels)
    weighted = TransferClassifier(**vision).fit(ex.inputs, ex.labels, sample_weight=w)
    assert not np.allclose(plain.predict_proba(ex.inputs), weighted.predict_proba(ex.inputs))


def test_strategies_that_cannot_weight_refuse_sample_weight(vision):
    ex = image_examples(20)
    clf = TransferClassifier(**vision, strategy="finetune")
    with pytest.raises(ConfigError, match=r"sample_weight.*strategy=.extract."):
        clf.fit(ex.inputs, ex.labels, sample_weight=np.ones(20))


# ------------------------------------------------------------------------- image inputs
def test_image_array_layouts_and_ranges_give_the_same_features(fitted_images, caplog):
    grey = image_examples(8, seed=3).inputs  # uint8 (N, H, W)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    ref = fitted_images.features(grey, cache=False)
    torch = pytest.importorskip("torch")
    variants = {  # name: (X, the range the log line must say was inferred; None: no guess)
        "NHWC uint8": (rgb, None),
        "NCHW uint8": (rgb.transpose(0, 3, 1, 2), None),
        "NHW1 uint8": (grey[..., None], None),
        "float 0-1": (grey / 255.0, "[0, 1]"),
        "float32 -1..1 NCHW": (
            (rgb.transpose(0, 3, 1, 2) / 127.5 - 1).astype(np.float32),
            "[-1, 1]",
        ),
        "int64 0-255": (grey.astype(np.int64), "[0, 255]"),
        "torch tensor 0-1": (torch.from_numpy(grey / 255.0), "[0, 1]"),
    }
    for name, (X, said) in variants.items():
        with caplog.at_level(logging.INFO, logger="headstart"):
            caplog.clear()
            got = fitted_images.features(X, cache=False)
        np.testing.assert_allclose(got, ref, atol=1e-5, err_msg=name)
        inferred = [r.message for r in caplog.records if "inferred" in r.message]
        assert len(inferred) == (said is not None), name
        assert said is None or f"pixel values in {said}" in inferred[0], name


def test_a_stated_value_range_is_used_and_checked(vision, fitted_images, caplog):
    grey = image_examples(8, seed=3).inputs
    ref = fitted_images.features(grey, cache=False)
    # 0..255 values that would also fit the inferred [0, 1]? No: stated, so no guessing.
    clf = TransferClassifier(**vision, value_range=(0, 255))
    clf.backbone_ = fitted_images.backbone_
    with caplog.at_level(logging.INFO, logger="headstart"):
        got = clf.features(grey.astype(np.float64), cache=False)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert not [r for r in caplog.records if "inferred" in r.message]
    clf.value_range = (0, 1)
    with pytest.raises(DataError, match=r"outside the stated value_range \(0, 1\)"):
        clf.features(grey.astype(np.float64), cache=False)
    with pytest.raises(DataError, match="value_range=\\(0, 1\\)"):
        fitted_images.features(grey.astype(np.float64) * 4.0, cache=False)  # 0..1020


def test_lists_of_pil_images(fitted_images):
    from PIL import Image

    grey = image_examples(6, seed=3).inputs
    same = [Image.fromarray(a).convert("RGB") for a in grey]
    ref = fitted_images.features(grey, cache=False)
    np.testing.assert_allclose(fitted_images.features(same, cache=False), ref, atol=1e-5)
    mixed = [Image.fromarray(np.kron(a, np.ones((2, 3), dtype=np.uint8))) for a in grey[:3]]
    mixed += [Image.fromarray(a, mode="L") for a in grey[3:]]  # sizes 84x56 and 28x28
    mixed.append(Image.new("RGBA", (40, 30), (255, 0, 0, 128)))
    proba = fitted_images.predict_proba(mixed)
    assert proba.shape == (7, 2) and np.isfinite(proba).all()
    with pytest.raises(DataError, match="X\\[1\\] is a str"):
        fitted_images.predict([same[0], "a.png"])


def test_a_2d_numeric_array_is_features_only_with_the_precomputed_backbone(fitted_images):
    X, y = blobs()
    with pytest.raises(DataError, match=r"precomputed.*reshape"):
        fitted_images.predict(X)
    clf = TransferClassifier(backbone="precomputed").fit(X, y)
    assert clf.n_features_in_ == 5 and clf.score(X, y) > 0.9
    with pytest.raises(ConfigError, match="strategy='extract'"):
        TransferClassifier(backbone="precomputed", strategy="auto").fit(X, y)
    with pytest.raises(ConfigError, match="no backbone to bundle"):
        clf.save("unused")
    from scipy import sparse

    for bad, msg in [
        (sparse.csr_matrix(X), "sparse input is not supported"),
        (X.astype(complex)[:, :, None], "Complex data not supported"),
        (X.astype(object), "2-D array of object"),
        (X[:, 0], "1-D numeric array"),
    ]:
        with pytest.raises(DataError, match=msg):
            fitted_images.predict(bad)


def test_inputs_of_the_wrong_modality_are_refused(fitted_images, fitted_text):
    with pytest.raises(DataError, match=r"read as text.*takes image"):
        fitted_images.predict(["a good film", "a bad film"])
    with pytest.raises(DataError, match=r"read as image.*takes text"):
        fitted_text.predict(image_examples(4).inputs)


# -------------------------------------------------------------------------- text tables
def test_texts_as_list_array_series_and_one_column_frame(fitted_text):
    pd = pytest.importorskip("pandas", reason="pip install pandas")
    texts = text_examples(6, seed=9).inputs
    ref = fitted_text.predict_proba(texts)
    frame = pd.DataFrame({"review": texts})
    for name, X in {
        "array": np.array(texts),
        "object array": np.array(texts, dtype=object),
        "Series": pd.Series(texts, index=range(100, 106)),
        "DataFrame": frame,  # its column's values, not its column names
    }.items():
        np.testing.assert_allclose(fitted_text.predict_proba(X), ref, err_msg=name)
    frame["stars"] = 1
    with pytest.raises(DataError, match=r"2 columns \['review', 'stars'\].*df\['text'\]"):
        fitted_text.predict(frame)
    with pytest.raises(DataError, match="X\\[2\\] is a int"):
        fitted_text.predict(["good", "bad", 3])


def test_hugging_face_datasets(fitted_text, tiny_text_dir, tmp_path):
    datasets = pytest.importorskip("datasets", reason="pip install datasets")
    ex = text_examples(40)
    ds = datasets.Dataset.from_dict({"text": ex.inputs, "label": ex.labels.tolist()})
    kw = {"engine": "torch", "cache_dir": str(tmp_path)}
    clf = TransferClassifier(backbone=f"local-dir:{tiny_text_dir}", **kw).fit(ds)  # y: "label"
    assert clf.classes_.dtype.kind == "i"
    np.testing.assert_allclose(
        clf.predict_proba(ds), fitted_text.predict_proba(ex.inputs), atol=1e-6
    )
    assert clf.score(ds) == clf.score(ex.inputs, ex.labels)
    two = datasets.Dataset.from_dict({"text": ex.inputs, "title": ex.inputs, "label": ex.labels})
    with pytest.raises(DataError, match="one input column"):
        clf.predict(two)


def test_hugging_face_image_dataset(fitted_images):
    datasets = pytest.importorskip("datasets", reason="pip install datasets")
    from PIL import Image

    ex = image_examples(6, seed=3)
    pil = [Image.fromarray(a) for a in ex.inputs]
    ds = datasets.Dataset.from_dict({"image": pil, "label": ex.labels.tolist()})
    np.testing.assert_allclose(
        fitted_images.predict_proba(ds), fitted_images.predict_proba(ex.inputs), atol=1e-5
    )
