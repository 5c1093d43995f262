"""The strategy layer: one engine behind the estimator, `fit` and `curve` (issue 10)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.config import FinetuneConfig, FitConfig, LadderConfig
from headstart.estimator import TransferClassifier


def noisy_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes that differ only by a faint brightness gradient: not trivially separable,
    so validation scores vary with the model and equal scores mean equal computations."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 200, size=(n, 32, 32, 3)).astype(np.int16)
    x[y == 1, :, :16] += 10
    return np.clip(x, 0, 255).astype(np.uint8), y


def write_folder(root: Path, x: np.ndarray, y: np.ndarray) -> Path:
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        d = root / f"class{label}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.png")
    return root


def _clf(tiny_vision_dir: Path, tmp_path: Path, **kw) -> TransferClassifier:
    return TransferClassifier(
        backbone=f"local-dir:{tiny_vision_dir}",
        engine="torch",
        cache_dir=str(tmp_path / "cache"),
        **kw,
    )


def test_the_estimator_fine_tunes_from_python(tiny_vision_dir, tmp_path):
    x, y = noisy_images(64)
    clf = _clf(
        tiny_vision_dir,
        tmp_path,
        strategy="finetune",
        finetune=FinetuneConfig(unfreeze=1, epochs=2, batch_size=16, keep_start=False),
    ).fit(x, y)
    assert clf.strategy_ == "finetune" and clf.unfrozen_ == 1
    assert clf.tuned_state_ and clf.backbone_.weights.tuned_sha256
    pristine = dict(clf.extraction_.backbone.named_parameters())
    moved = [n for n, p in clf.backbone_.named_parameters() if not p.detach().equal(pristine[n])]
    assert moved and set(moved) <= set(clf.tuned_state_)
    assert [r["unfreeze"] for r in clf.decisions_["rungs"]] == [0, 1]
    proba = clf.predict_proba(x[:5])
    assert proba.shape == (5, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert set(clf.predict(x[:5])) <= {0, 1}  # the labels keep their type


def test_the_estimator_runs_the_ladder_with_auto(tiny_vision_dir, tmp_path):
    x, y = noisy_images(80)
    clf = _clf(
        tiny_vision_dir,
        tmp_path,
        strategy="auto",
        finetune=FinetuneConfig(epochs=1, batch_size=16),
        ladder=LadderConfig(
            min_examples=20,
            min_per_class=5,
            max_rungs=1,
            noise_z=0.0,
            first_rung="fixed",
            contend_cnn=False,  # the ladder under test (tests/test_contend.py has the CNN)
        ),
    ).fit(x, y)
    rungs = clf.decisions_["rungs"]
    assert [r["unfreeze"] for r in rungs] == [0, 2]
    assert clf.decisions_["reasons"][0].startswith("feature extraction reached")
    best = max(rungs, key=lambda r: (r["val_accuracy"], -r["unfreeze"]))
    assert clf.unfrozen_ == best["unfreeze"]  # noise_z=0: the plain best on validation
    assert "learning_curve" in clf.decisions_


def test_clone_and_grid_search_over_a_nested_fine_tuning_parameter(tiny_vision_dir, tmp_path):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    base = _clf(
        tiny_vision_dir,
        tmp_path,
        strategy="finetune",
        finetune=FinetuneConfig(unfreeze=1, epochs=1, batch_size=16),
    )
    twin = clone(base)
    assert twin.finetune is not base.finetune and twin.finetune == base.finetune
    twin.set_params(finetune__lr_ratio=10.0)
    assert (twin.finetune.lr_ratio, base.finetune.lr_ratio) == (10.0, 30.0)
    assert base.get_params()["finetune__epochs"] == 1
    # a section left at its defaults (None) is made when a nested parameter is set
    plain = TransferClassifier().set_params(ladder__min_gain=0.02)
    assert plain.ladder == LadderConfig(min_gain=0.02)
    with pytest.raises(ValueError, match="no parameter 'lr_ration'"):
        clone(base).set_params(finetune__lr_ration=3)

    x, y = noisy_images(48)
    search = GridSearchCV(base, {"finetune__lr_ratio": [10.0, 50.0]}, cv=2, scoring="accuracy")
    search.fit(x, y)
    assert list(search.cv_results_["param_finetune__lr_ratio"]) == [10.0, 50.0]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.strategy_ == "finetune"
    assert search.best_estimator_.finetune.lr_ratio == search.best_params_["finetune__lr_ratio"]


def test_a_curve_cell_and_a_fit_with_the_same_settings_score_the_same(tiny_vision_dir, tmp_path):
    from headstart.curve import run_curve
    from headstart.fit import fit_run

    x, y = noisy_images(100)
    data = write_folder(tmp_path / "train", x[:80], y[:80])
    test = write_folder(tmp_path / "test", x[80:], y[80:])
    common = dict(test=str(test), backbone=f"local-dir:{tiny_vision_dir}", engine="torch",
                  cache_dir=str(tmp_path / "cache"), epochs=2, finetune_batch_size=16)  # fmt: skip
    study = run_curve(str(data), out=str(tmp_path / "curve"), fractions=[0.5], seeds=1,
                      strategies=["finetune"], progress=False, **common)  # fmt: skip
    cell = json.loads((tmp_path / "curve" / "cells" / "finetune-f0.5-seed0.json").read_text())
    assert study.complete and cell["n_labelled"] == 40
    run = fit_run(
        FitConfig.build(
            data=str(data),
            out=str(tmp_path / "fit"),
            strategy="finetune",
            train_size=40,
            seed=0,
            baseline=False,
            **common,
        ),
        progress=False,
    )
    m = run.metrics
    assert (m["n_train"], m["n_val"]) == (cell["n_train"], cell["n_val"])
    assert m["val"]["accuracy"] == cell["val_accuracy"]
    assert m["val"]["log_loss"] == cell["detail"]["val_metrics"]["log_loss"]

    def curve(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert len(curve(m["finetune"]["history"])) == 2
    assert curve(m["finetune"]["history"]) == curve(cell["detail"]["history"])
    assert m["test"]["accuracy"] == pytest.approx(cell["test"]["accuracy"])
