"""TransferClassifier and model bundles on tiny random backbones."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.exceptions
import sklearn.utils.validation

from conftest import image_examples, text_examples
from headstart import TransferClassifier, load_model
from headstart.errors import DataError, NotFittedError


@pytest.fixture(scope="module")
def image_clf(tiny_vision_dir, tmp_path_factory):
    ex = image_examples(60)
    clf = TransferClassifier(
        backbone=f"local-dir:{tiny_vision_dir}",
        engine="torch",
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    return clf.fit(ex.inputs, np.array(ex.classes)[ex.labels])


def test_fit_predict_learns_a_separable_image_task(image_clf):
    test = image_examples(40, seed=7)
    pred = image_clf.predict(test.inputs)
    truth = np.array(test.classes)[test.labels]
    assert set(pred) <= {"left", "right"}
    assert np.mean(pred == truth) >= 0.9
    proba = image_clf.predict_proba(test.inputs)
    assert proba.shape == (40, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert image_clf.score(test.inputs, truth) == pytest.approx(np.mean(pred == truth))


def test_saved_and_reloaded_bundle_predicts_identically(image_clf, tmp_path):
    test = image_examples(30, seed=3)
    before = image_clf.predict_proba(test.inputs, cache=False)
    path = image_clf.save(tmp_path / "model")
    assert (path / "headstart.json").exists() and (path / "head.safetensors").exists()
    again = load_model(path)
    after = again.predict_proba(test.inputs, cache=False)
    np.testing.assert_array_equal(before, after)
    assert list(again.classes_) == list(image_clf.classes_)


def test_text_bundle_round_trip(tiny_text_dir, tmp_path):
    ex = text_examples(60)
    clf = TransferClassifier(
        backbone=f"local-dir:{tiny_text_dir}", engine="torch", cache_dir=str(tmp_path / "c")
    ).fit(ex.inputs, ex.labels)
    texts = text_examples(20, seed=5).inputs
    before = clf.predict_proba(texts, cache=False)
    again = load_model(clf.save(tmp_path / "m"))
    np.testing.assert_array_equal(before, again.predict_proba(texts, cache=False))


def test_saving_over_an_existing_bundle_replaces_it_whole(image_clf, tmp_path):
    dest = tmp_path / "model"
    image_clf.save(dest)
    (dest / "stale.txt").write_text("left from an older bundle")
    image_clf.save(dest)
    assert not (dest / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp folders left


def test_unfitted_and_one_class_errors(tiny_vision_dir):
    clf = TransferClassifier(backbone=f"local-dir:{tiny_vision_dir}")
    with pytest.raises(NotFittedError, match="fit"):
        clf.predict(image_examples(4).inputs)
    # scikit-learn's own check and except clauses see the same error.
    with pytest.raises(sklearn.exceptions.NotFittedError):
        clf.predict_proba(image_examples(4).inputs)
    with pytest.raises(sklearn.exceptions.NotFittedError):
        sklearn.utils.validation.check_is_fitted(clf)
    ex = image_examples(10)
    with pytest.raises(DataError, match="only one class"):
        clf.fit(ex.inputs, ["a"] * 10)


def test_a_second_fit_with_another_head_reuses_the_features(tiny_vision_dir, tmp_path):
    ex = image_examples(40)
    a = TransferClassifier(
        backbone=f"local-dir:{tiny_vision_dir}", engine="torch", cache_dir=str(tmp_path)
    )
    a.fit(ex.inputs, ex.labels)
    assert [e["cached"] for e in a.extraction_log_] == [False]
    b = TransferClassifier(
        backbone=f"local-dir:{tiny_vision_dir}", head="mlp", engine="torch", cache_dir=str(tmp_path)
    )
    b.fit(ex.inputs, ex.labels)
    assert [e["cached"] for e in b.extraction_log_] == [True]
