"""Saving and loading the fitted non-transfer baseline (headstart.baselines.store).

Real small baselines (TF-IDF on two-vocabulary texts, pixels on arrays and on PNG files,
log-mel statistics on WAV tones) go through ``save_baseline`` / ``load_baseline`` and must
predict exactly as before; damaged folders must be refused with a BundleError that names the
file and the fix.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from safetensors.numpy import load_file, save_file

from headstart.baselines import Baseline, fit_baseline, load_baseline, save_baseline
from headstart.baselines.store import ARRAYS_FILE, META_FILE
from headstart.data.base import Examples
from headstart.errors import BundleError, ConfigError, DataError

SR = 16000


def _texts(n: int, seed: int) -> Examples:
    """Two classes with distinct cue words among shared filler."""
    rng = np.random.default_rng(seed)
    filler = [f"filler{i}" for i in range(40)]
    cues = [["sunny", "bright", "warm", "clear"], ["rainy", "cold", "grey", "stormy"]]
    y = np.arange(n) % 2
    texts = [" ".join([*rng.choice(filler, 6), *rng.choice(cues[c], 3)]) for c in y]
    return Examples("text", texts, y, ["sun", "rain"])


def _image_arrays(n: int, seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 images: class 0 bright on the left, class 1 bright on the right."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    img = rng.integers(0, 120, size=(n, size, size)).astype(np.float64)
    img[y == 0, :, : size // 2] += 100
    img[y == 1, :, size // 2 :] += 100
    grey = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1), y


def _images(n: int, seed: int, size: int = 12) -> Examples:
    return Examples("image", *_image_arrays(n, seed, size), ["left", "right"])


def _png_files(folder: Path, arrays: np.ndarray, y: np.ndarray) -> Examples:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    return Examples("image", paths, y, ["left", "right"])


def _tones(folder: Path, n: int, seed: int) -> Examples:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y = np.arange(n) % 2
    paths = []
    for i, c in enumerate(y):
        t = np.arange(round(SR * 0.3)) / SR
        f = (300.0 if c == 0 else 3000.0) * rng.uniform(0.9, 1.1)
        x = rng.uniform(0.1, 0.4) * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(len(t))
        sf.write(folder / f"{i}.wav", x.astype(np.float32), SR)
        paths.append(str(folder / f"{i}.wav"))
    return Examples("audio", paths, y, ["low", "high"])


def _round_trip(base: Baseline, folder: Path) -> Baseline:
    save_baseline(base, folder)
    assert sorted(p.name for p in folder.iterdir()) == [META_FILE, ARRAYS_FILE]
    return load_baseline(folder)


def _same(a: Baseline, b: Baseline, *splits: Examples) -> None:
    for split in splits:
        pa, pb = a.predict_proba(split), b.predict_proba(split)
        assert np.array_equal(pa, pb), np.abs(pa - pb).max()
        assert np.array_equal(a.predict(split), b.predict(split))
    assert b.describe() == a.describe() and repr(b) == repr(a)
    assert b.to_dict() == a.to_dict()
    assert (b.name, b.modality, b.classes, b.C, b.refit) == (
        a.name,
        a.modality,
        a.classes,
        a.C,
        a.refit,
    )
    assert b.val_scores == a.val_scores and b.val_accuracy == a.val_accuracy
    assert a.val_proba is not None and b.val_proba is not None
    assert np.array_equal(a.val_proba, b.val_proba)


@pytest.fixture(scope="module")
def text_baseline() -> Baseline:
    return fit_baseline(_texts(40, 0), _texts(20, 1))


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("refit", [True, False])
def test_text_baseline_round_trip(tmp_path: Path, refit: bool) -> None:
    base = fit_baseline(_texts(40, 0), _texts(20, 1), refit=refit)
    test = _texts(30, 2)
    assert (base.predict(test) == test.labels).mean() > 0.9  # it learned something
    loaded = _round_trip(base, tmp_path / "b")
    _same(base, loaded, test)
    meta = json.loads((tmp_path / "b" / META_FILE).read_text())
    assert meta["featurizer"]["kind"] == "tfidf" and meta["model"]["kind"] == "linear-softmax"
    arrays = load_file(str(tmp_path / "b" / ARRAYS_FILE))
    assert arrays["featurizer.keep"].dtype == np.int64
    assert arrays["model.coef"].shape == (2, meta["n_features"])


def test_text_baseline_with_a_class_it_never_saw(tmp_path: Path) -> None:
    """A class without training examples keeps its probability column of zeros."""
    train, val = _texts(40, 0), _texts(20, 1)
    classes = ["sun", "rain", "snow"]
    base = fit_baseline(*(Examples("text", s.inputs, s.labels, classes) for s in (train, val)))
    test = Examples("text", _texts(10, 3).inputs, _texts(10, 3).labels, classes)
    loaded = _round_trip(base, tmp_path / "b")
    _same(base, loaded, test)
    assert (loaded.predict_proba(test)[:, 2] == 0).all()


@pytest.mark.parametrize("size", [12, 32], ids=["native", "resized"])
def test_pixel_baseline_round_trip_reads_arrays_and_files(tmp_path: Path, size: int) -> None:
    base = fit_baseline(_images(40, 0, size), _images(20, 1, size))
    arrays, y = _image_arrays(16, 2, size)
    as_arrays = Examples("image", arrays, y, ["left", "right"])
    as_files = _png_files(tmp_path / "png", arrays, y)
    loaded = _round_trip(base, tmp_path / "b")
    _same(base, loaded, as_arrays, as_files)
    assert loaded.n_features == min(size, 28) ** 2
    meta = json.loads((tmp_path / "b" / META_FILE).read_text())
    assert meta["model"]["kind"] == "logistic"
    names = set(load_file(str(tmp_path / "b" / ARRAYS_FILE)))
    assert {"model.mean", "model.scale", "model.coef", "model.classes"} <= names


def test_pixel_baseline_fitted_on_files_round_trip(tmp_path: Path) -> None:
    tr, va, te = (_image_arrays(n, s, 20) for n, s in ((30, 0), (16, 1), (10, 2)))
    train, val = _png_files(tmp_path / "tr", *tr), _png_files(tmp_path / "va", *va)
    base = fit_baseline(train, val)
    loaded = _round_trip(base, tmp_path / "b")
    _same(base, loaded, _png_files(tmp_path / "te", *te), Examples("image", *te, ["left", "right"]))


def test_audio_baseline_round_trip(tmp_path: Path) -> None:
    base = fit_baseline(_tones(tmp_path / "tr", 16, 0), _tones(tmp_path / "va", 8, 1))
    test = _tones(tmp_path / "te", 10, 2)
    loaded = _round_trip(base, tmp_path / "b")
    _same(base, loaded, test)
    assert (loaded.predict(test) == test.labels).mean() >= 0.8


def test_state_is_json_and_numeric_arrays(text_baseline: Baseline) -> None:
    meta, arrays = text_baseline.state()
    json.dumps(meta, allow_nan=False)  # standard JSON: no NaN or infinities
    assert meta["format"] == 1 and meta["featurizer"]["min_df"] in (1, 2)
    assert all(isinstance(a, np.ndarray) and a.dtype.kind in "fiu" for a in arrays.values())
    again = Baseline.from_state(meta, arrays)
    test = _texts(10, 5)
    assert np.array_equal(again.predict_proba(test), text_baseline.predict_proba(test))


def test_unknown_timing_is_written_as_null(tmp_path: Path, text_baseline: Baseline) -> None:
    base = Baseline.from_state(*text_baseline.state())
    base.fit_seconds = float("nan")
    save_baseline(base, tmp_path)
    assert json.loads((tmp_path / META_FILE).read_text())["fit_seconds"] is None
    assert math.isnan(load_baseline(tmp_path).fit_seconds)


def test_loading_never_unpickles(
    tmp_path: Path, text_baseline: Baseline, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_baseline(text_baseline, tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle or np.load used while loading a baseline")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", refuse)
    assert load_baseline(tmp_path).name == "tfidf+logreg"


def test_save_replaces_atomically(
    tmp_path: Path, text_baseline: Baseline, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_baseline(text_baseline, tmp_path)
    save_baseline(text_baseline, tmp_path)  # over an existing save
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(before) == [META_FILE, ARRAYS_FILE]

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    other = fit_baseline(_texts(40, 7), _texts(20, 8))
    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_baseline(other, tmp_path)
    # the old files are intact and no temporary file is left behind
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ------------------------------------------------------------------------- damaged folders


@pytest.fixture
def saved(tmp_path: Path, text_baseline: Baseline) -> Path:
    folder = tmp_path / "saved"
    save_baseline(text_baseline, folder)
    return folder


def _edit_meta(folder: Path, **changes: object) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    meta.update(changes)
    (folder / META_FILE).write_text(json.dumps(meta))


def _edit_arrays(folder: Path, edit: Callable[[dict[str, np.ndarray]], object]) -> None:
    """Rewrite the arrays with `edit(arrays)` and drop the recorded hash (a deliberate edit)."""
    arrays = load_file(str(folder / ARRAYS_FILE))
    edit(arrays)
    save_file(arrays, str(folder / ARRAYS_FILE))
    meta = json.loads((folder / META_FILE).read_text())
    del meta["arrays_sha256"]
    (folder / META_FILE).write_text(json.dumps(meta))


def _refused(folder: Path, *fragments: str) -> str:
    with pytest.raises(BundleError) as info:
        load_baseline(folder)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "save it again" in message or "Save the baseline again" in message, message
    return message


@pytest.mark.parametrize("missing", [META_FILE, ARRAYS_FILE])
def test_a_missing_file_is_refused(saved: Path, missing: str) -> None:
    (saved / missing).unlink()
    _refused(saved, str(saved / missing), "is missing")


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path / "nowhere", "nowhere", "is not a folder")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\udcff"], ids=["syntax", "list", "bytes"])
def test_unreadable_json_is_refused(saved: Path, text: str) -> None:
    if text == "\udcff":
        (saved / META_FILE).write_bytes(b"\xff\xfe\x00garbage")
    else:
        (saved / META_FILE).write_text(text)
    _refused(saved, META_FILE)


@pytest.mark.parametrize("fmt", [2, 0, "1", None])
def test_an_unknown_format_is_refused(saved: Path, fmt: object) -> None:
    _edit_meta(saved, format=fmt)
    _refused(saved, META_FILE, f"format {fmt!r}", "reads baseline format 1")


def test_arrays_from_another_save_are_refused(tmp_path: Path, saved: Path) -> None:
    other = tmp_path / "other"
    save_baseline(fit_baseline(_texts(40, 3), _texts(20, 4)), other)
    shutil.copy(other / ARRAYS_FILE, saved / ARRAYS_FILE)
    _refused(saved, ARRAYS_FILE, "sha256 differs")


def test_a_truncated_arrays_file_is_refused(saved: Path) -> None:
    _edit_meta(saved, arrays_sha256=None)
    data = (saved / ARRAYS_FILE).read_bytes()
    (saved / ARRAYS_FILE).write_bytes(data[: len(data) // 2])
    _refused(saved, ARRAYS_FILE, "truncated or damaged")


@pytest.mark.parametrize("name", ["model.coef", "model.classes", "featurizer.idf"])
def test_a_missing_array_is_refused(saved: Path, name: str) -> None:
    _edit_arrays(saved, lambda a: a.pop(name))
    _refused(saved, ARRAYS_FILE, META_FILE, name.split(".")[1], "lack")


def test_coef_columns_must_match_the_features(saved: Path) -> None:
    def widen(a: dict[str, np.ndarray]) -> None:
        a["model.coef"] = np.hstack([a["model.coef"], np.zeros((2, 1), np.float32)])

    _edit_arrays(saved, widen)
    _refused(saved, ARRAYS_FILE, "coef has", "columns")


def test_n_features_must_match(saved: Path) -> None:
    meta = json.loads((saved / META_FILE).read_text())
    _edit_meta(saved, n_features=meta["n_features"] + 1)
    _refused(saved, "n_features is")


def test_the_class_count_must_match(saved: Path) -> None:
    _edit_meta(saved, classes=["sun"])  # the model has a column for class index 1
    _refused(saved, "model.classes must be", "class indices")
    _edit_meta(saved, classes=[])
    _refused(saved, "'classes' must be a non-empty list")


def test_model_classes_must_match_coef_rows(saved: Path) -> None:
    _edit_arrays(saved, lambda a: a.update({"model.classes": np.array([0, 1, 2])}))
    _refused(saved, "model.classes")


def test_idf_and_kept_terms_must_agree(saved: Path) -> None:
    _edit_arrays(saved, lambda a: a.update({"featurizer.idf": a["featurizer.idf"][:-1]}))
    _refused(saved, "idf values")


def test_non_finite_weights_are_refused(saved: Path) -> None:
    def poison(a: dict[str, np.ndarray]) -> None:
        a["model.intercept"] = np.full_like(a["model.intercept"], np.nan)

    _edit_arrays(saved, poison)
    _refused(saved, ARRAYS_FILE, "NaN or infinite", "model.intercept")


def test_unexpected_dtypes_are_refused(saved: Path) -> None:
    _edit_arrays(saved, lambda a: a.update({"model.classes": a["model.classes"].astype(np.int8)}))
    _refused(saved, ARRAYS_FILE, "dtypes")


def test_wrong_names_and_settings_are_refused(saved: Path) -> None:
    meta = json.loads((saved / META_FILE).read_text())
    for changes, fragment in [
        ({"name": "svm"}, "Unknown baseline name 'svm'"),
        ({"modality": "image"}, "reads text data"),
        ({"C": -1}, "'C' must be a number > 0"),
        ({"featurizer": {**meta["featurizer"], "hash_buckets": 1024}}, "hash_buckets"),
        ({"featurizer": {**meta["featurizer"], "kind": "pixels"}}, "'tfidf' featurizer"),
        ({"model": {"kind": "forest"}}, "Unknown baseline model kind 'forest'"),
    ]:
        (saved / META_FILE).write_text(json.dumps({**meta, **changes}))
        _refused(saved, META_FILE, fragment)


def test_a_link_out_of_the_folder_is_refused(tmp_path: Path, saved: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    shutil.move(saved / META_FILE, outside)
    (saved / META_FILE).symlink_to(outside)
    _refused(saved, "leads outside")


def test_from_state_raises_config_error(text_baseline: Baseline) -> None:
    meta, arrays = text_baseline.state()
    with pytest.raises(ConfigError, match="format 7"):
        Baseline.from_state({**meta, "format": 7}, arrays)
    with pytest.raises(ConfigError, match="lack"):
        Baseline.from_state(meta, {k: v for k, v in arrays.items() if k != "model.coef"})


# ---------------------------------------------------------------------------- the small CNN


@pytest.fixture(scope="module")
def cnn_baseline():
    from conftest import bar_images
    from headstart.baselines.scratch import fit_cnn, plan_cnn

    train, val = bar_images(120, seed=0), bar_images(40, seed=1)
    return fit_cnn(train, val, plan_cnn(train, val), seed=0)


def test_cnn_baseline_round_trip(tmp_path: Path, cnn_baseline) -> None:
    from conftest import bar_images

    test = bar_images(50, seed=2)
    save_baseline(cnn_baseline, tmp_path / "cnn")
    loaded = load_baseline(tmp_path / "cnn")
    assert loaded.name == "small-cnn" and loaded.side == 16 and loaded.in_channels == 1
    assert np.array_equal(loaded.predict_proba(test), cnn_baseline.predict_proba(test))
    assert np.array_equal(loaded.val_proba, cnn_baseline.val_proba)
    assert loaded.best_epoch == cnn_baseline.best_epoch >= 1
    dtypes = {str(v.dtype) for v in load_file(str(tmp_path / "cnn" / ARRAYS_FILE)).values()}
    assert dtypes <= {"float32", "float64", "int64"}  # tensors only, nothing pickled


def test_cnn_baseline_refuses_images_of_other_channels(cnn_baseline) -> None:
    from conftest import bar_images

    rgb = bar_images(4, seed=3)
    rgb = Examples("image", np.repeat(rgb.inputs[..., None], 3, -1), rgb.labels, rgb.classes)
    with pytest.raises(DataError, match="3 channel"):
        cnn_baseline.predict_proba(rgb)


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda m, a: a.pop("net.0.weight"), "does not fit its description"),
        (lambda m, a: m.update(side=0), "side"),
        (lambda m, a: m.update(in_channels=3), "does not fit its description"),
        (lambda m, a: a.update({"norm.std": np.zeros((1, 1, 1, 1), np.float32)}), "positive"),
    ],
    ids=["missing-tensor", "side", "channels", "std"],
)
def test_a_damaged_cnn_baseline_is_refused(tmp_path: Path, cnn_baseline, damage, fragment) -> None:
    folder = tmp_path / "cnn"
    save_baseline(cnn_baseline, folder)
    meta = json.loads((folder / META_FILE).read_text())
    arrays = load_file(str(folder / ARRAYS_FILE))
    damage(meta, arrays)
    save_file(arrays, str(folder / ARRAYS_FILE))
    meta.pop("arrays_sha256")
    (folder / META_FILE).write_text(json.dumps(meta))
    _refused(folder, ARRAYS_FILE, fragment)
