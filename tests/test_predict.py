"""`headstart predict` on real batches: tables, folders, output files, bad inputs, accuracy.

Models are tiny randomly initialised backbones (conftest) with heads fitted on learnable
data, saved as real bundles; the CLI runs in-process through ``headstart.cli.main.main``
(the same argument parsing and error handling as the console script; tests/test_cli.py runs
`predict` as a real process, and benchmarks/bench_predict.py over 10,000 rows).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import text_examples
from headstart.cli.main import main


def _image(path: Path, right: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 60, size=(32, 32, 3), dtype=np.uint8)
    arr[:, 16:] += 150 if right else 0
    arr[:, :16] += 0 if right else 150
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory, tiny_vision_dir: Path):
    """A saved image bundle, and a folder with a table of 40 image paths and labels."""
    from headstart import TransferClassifier

    root = tmp_path_factory.mktemp("predict-img")
    paths, labels = [], []
    for i in range(40):
        right = bool(i % 2)
        p = root / "imgs" / f"{i:02d}.png"
        _image(p, right, i)
        paths.append(p)
        labels.append("right" if right else "left")
    clf = TransferClassifier(
        backbone=f"local-dir:{tiny_vision_dir}", engine="torch", cache=False
    ).fit([str(p) for p in paths[:24]], labels[:24])
    clf.save(root / "model")
    with open(root / "table.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "image", "label"])
        for i, (p, y) in enumerate(zip(paths, labels, strict=True)):
            w.writerow([i, f"imgs/{p.name}", y])  # relative to the table's folder
    return root


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory, tiny_text_dir: Path):
    from headstart import TransferClassifier

    root = tmp_path_factory.mktemp("predict-text")
    ex = text_examples(80, seed=1)
    clf = TransferClassifier(backbone=f"local-dir:{tiny_text_dir}", engine="torch", cache=False)
    clf.fit(ex)
    clf.save(root / "model")
    return root, ex


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_table_of_image_paths_to_csv_with_accuracy_matching_evaluate(image_model, capsys):
    root = image_model
    out = root / "pred.csv"
    rc, stdout, err = _run(capsys, "predict", str(root / "model"), str(root / "table.csv"),
                           "--output", str(out), "--batch-size", "8")  # fmt: skip
    assert rc == 0, err
    assert stdout == ""  # everything went to the file
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 40
    assert rows[0]["input"] == "table.csv:row 2" and rows[-1]["input"] == "table.csv:row 41"
    assert set(rows[0]) == {"input", "label", "probability", "true_label", "p_left", "p_right"}
    for r in rows:
        p = float(r["p_left"]), float(r["p_right"])
        assert abs(sum(p) - 1) < 1e-4 and r["label"] == ("left" if p[0] > p[1] else "right")
        assert float(r["probability"]) == max(p)
    acc = np.mean([r["label"] == r["true_label"] for r in rows])
    assert f"accuracy {acc:.4f} on 40 rows" in err and "label column 'label'" in err
    # the same accuracy `evaluate` gives on the same table
    rc, stdout, _ = _run(capsys, "evaluate", str(root / "model"), str(root / "table.csv"))
    assert rc == 0 and stdout.startswith(f"accuracy {acc:.4f}")


def test_a_folder_and_jsonl_output_agree_with_the_python_api(image_model, capsys):
    from headstart import load_model

    root = image_model
    out = root / "pred.jsonl"
    rc, _, err = _run(capsys, "predict", str(root / "model"), str(root / "imgs"), "-o", str(out),
                      "--batch-size", "5", "-q")  # fmt: skip
    assert rc == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    files = sorted(str(p) for p in (root / "imgs").glob("*.png"))
    assert [r["input"] for r in rows] == files
    proba = load_model(root / "model").predict_proba(files)
    got = np.array([[r["probabilities"]["left"], r["probabilities"]["right"]] for r in rows])
    np.testing.assert_allclose(got, proba, atol=2e-6)
    assert "%|" not in err  # -q: no progress bar


def test_a_bad_file_is_named_with_the_flag_or_skipped_and_reported(image_model, capsys, tmp_path):
    root = image_model
    table = tmp_path / "t.csv"
    good = sorted((root / "imgs").glob("*.png"))[:6]
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    cut = tmp_path / "cut.jpg"  # a JPEG cut short: passes a header check, fails to decode
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(cut, quality=95)
    cut.write_bytes(cut.read_bytes()[:400])
    lines = ["path"] + [str(p) for p in good[:3]] + ["broken.png", "missing.png", "cut.jpg"]
    table.write_text("\n".join(lines + [str(p) for p in good[3:]]) + "\n")
    out = tmp_path / "out.csv"
    rc, _, err = _run(capsys, "predict", str(root / "model"), str(table), "-o", str(out))
    assert rc == 2
    assert "t.csv:row 5" in err and "broken.png" in err and "missing.png" in err
    assert "--skip-bad-files" in err and not out.exists()

    rc, _, err = _run(capsys, "predict", str(root / "model"), str(table), "-o", str(out),
                      "--skip-bad-files", "--batch-size", "2")  # fmt: skip
    assert rc == 0, err
    assert "skipped 3 input(s)" in err
    for name in ("t.csv:row 5", "t.csv:row 6", "t.csv:row 7", "cut.jpg"):
        assert name in err
    rows = list(csv.DictReader(out.open()))
    assert [r["input"] for r in rows] == [f"t.csv:row {i}" for i in (2, 3, 4, 8, 9, 10)]
    assert "true_label" not in rows[0]  # no label column: no accuracy either
    assert "accuracy" not in err


def test_text_tables_pick_the_text_column_or_the_named_one(text_model, capsys, tmp_path):
    root, ex = text_model
    table = tmp_path / "reviews.jsonl"
    with table.open("w") as fh:
        for t, y in zip(ex.inputs[:30], ex.labels[:30], strict=True):
            fh.write(
                json.dumps({"id": 7, "note": "x", "review": t, "sentiment": ex.classes[y]}) + "\n"
            )
    out = tmp_path / "p.jsonl"
    rc, _, err = _run(capsys, "predict", str(root / "model"), str(table), "-o", str(out))
    assert rc == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 30 and rows[0]["input"] == "reviews.jsonl:line 1"
    assert [r["true_label"] for r in rows] == [ex.classes[y] for y in ex.labels[:30]]
    assert "label column 'sentiment'" in err
    # the same texts given on the command line give the same probabilities
    rc, stdout, _ = _run(capsys, "predict", str(root / "model"), *ex.inputs[:3], "-q")
    direct = [json.loads(line) for line in stdout.splitlines()]
    assert [d["probabilities"] for d in direct] == [r["probabilities"] for r in rows[:3]]
    # --column names another column: the model then reads "x" for every row
    rc, stdout, _ = _run(
        capsys, "predict", str(root / "model"), str(table), "--column", "note", "-q"
    )
    assert (
        rc == 0
        and len({json.dumps(json.loads(s)["probabilities"]) for s in stdout.splitlines()}) == 1
    )
    rc, _, err = _run(capsys, "predict", str(root / "model"), str(table), "--column", "reveiw")
    assert rc == 2 and "'reveiw'" in err and "review" in err and "--column" in err


def test_empty_texts_and_bad_options_get_clear_errors(text_model, capsys, tmp_path):
    root, _ = text_model
    table = tmp_path / "t.csv"
    table.write_text('text\ngood film\n""\nawful plot\n')
    rc, _, err = _run(capsys, "predict", str(root / "model"), str(table))
    assert rc == 2 and "t.csv:row 3: empty text" in err and "--skip-bad-files" in err
    rc, stdout, err = _run(capsys, "predict", str(root / "model"), str(table), "--skip-bad-files")
    assert rc == 0 and len(stdout.splitlines()) == 2 and "t.csv:row 3: empty text" in err
    for argv, words in (
        (["-o", str(tmp_path / "p.txt")], "--output"),
        (["--batch-size", "0"], "--batch-size"),
        (["-o", str(tmp_path / "p.csv"), "--top", "1"], "--top"),
    ):
        rc, _, err = _run(capsys, "predict", str(root / "model"), str(table), *argv)
        assert rc == 2 and words in err, err
    rc, _, err = _run(capsys, "predict", str(root / "model"), str(tmp_path))
    assert rc == 2 and "text model" in err


def test_a_progress_bar_and_an_atomic_file(image_model, capsys, tmp_path):
    root = image_model
    out = tmp_path / "p.csv"
    rc, _, err = _run(capsys, "predict", str(root / "model"), str(root / "table.csv"),
                      "--output", str(out), "--batch-size", "4")  # fmt: skip
    assert rc == 0, err
    assert "predict: 100%" in err and "40/40" in err
    assert len(list(csv.DictReader(out.open()))) == 40
    assert [p.name for p in tmp_path.iterdir()] == ["p.csv"]  # no temporary file left
