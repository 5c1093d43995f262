"""The bad-input corpus: what real users get wrong, each run through the real command line.

Every case builds its inputs on disk (nothing binary is committed), runs ``headstart ...``
(in-process through :func:`headstart.cli.main.main`, a few as real processes) and checks
that it ends one of two ways:

* exit status 2 and one message on stderr that names what was wrong (the file, the column,
  the flag) and the fix: the needles of each case;
* or, with ``--skip-bad-files``, a finished run that names each input it skipped, and whose
  counts show exactly those inputs left out (no silent wrong result).

Never a traceback. Validation errors fire before any heavy work: the whole corpus runs on
the tiny random backbones of conftest.py in well under two minutes on two cores. The number
of cases is printed at the end of the session (``-s`` shows it) and asserted below.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.cli.main import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


# ------------------------------------------------------------------------------ inputs


def write_images(root: Path, per_class: int = 6, classes=("cats", "dogs"), seed: int = 0) -> Path:
    """Class folders of small real images (PNG and JPEG), learnable: bright left or right."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 80, size=(36, 36, 3), dtype=np.uint8)
            arr[:, : 18 if c % 2 == 0 else 36] += 150 if c % 2 == 0 else 0
            arr[:, 18:] += 150 if c % 2 == 1 else 0
            Image.fromarray(arr).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def jpeg_bytes(seed: int = 1) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(48, 48, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def png_bytes(seed: int = 2) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(48, 48, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def write_table(path: Path, rows: list[tuple[str, ...]], sep: str = ",", header=("text", "label")):
    lines = [sep.join(header)] + [sep.join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def text_rows(n: int = 24, labels=("neg", "pos")) -> list[tuple[str, str]]:
    words = {0: "bad awful terrible boring", 1: "good great fine wonderful"}
    return [(f"{words[i % 2]} movie {i}", labels[i % len(labels)]) for i in range(n)]


def write_wav(path: Path, freq: float = 440.0, seconds: float = 0.3) -> None:
    import soundfile as sf

    t = np.arange(int(16000 * seconds)) / 16000
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)


# ------------------------------------------------------------------------------ the cases


@dataclass
class Ctx:
    """What a case may use: a folder of its own and the tiny backbones."""

    tmp: Path
    vision: str  # local-dir:<tiny DINOv2>
    text: str  # local-dir:<tiny BERT>
    model: Path  # a fitted image model bundle (for evaluate)

    def fit_img(self, data: Path | str, *extra: str) -> list[str]:
        return ["fit", str(data), "--backbone", self.vision, "--strategy", "extract",
                "--engine", "torch", "--out", str(self.tmp / "run"), "-q", *extra]  # fmt: skip

    def fit_txt(self, data: Path | str, *extra: str) -> list[str]:
        return ["fit", str(data), "--backbone", self.text, "--strategy", "extract",
                "--engine", "torch", "--out", str(self.tmp / "run"), "-q", *extra]  # fmt: skip

    def images(self, **kw) -> Path:
        return write_images(self.tmp / "data", **kw)

    def table(self, name: str, rows=None, **kw) -> Path:
        return write_table(self.tmp / name, text_rows() if rows is None else rows, **kw)


@dataclass
class Case:
    build: Callable[[Ctx], list[str]]
    needles: tuple[str, ...]  # all must appear in the output
    ok: bool = False  # True: the run must finish (a reported skip), exit 0
    check: Callable[[Ctx, str], None] | None = None  # more checks of a finished run
    subprocess: bool = False  # run as a real `python -m headstart` process
    absent: tuple[str, ...] = field(default=())  # must not appear


CASES: dict[str, Case] = {}


def case(name: str, *needles: str, **kw) -> Callable[[Callable[[Ctx], list[str]]], None]:
    def register(build: Callable[[Ctx], list[str]]) -> None:
        assert name not in CASES, name
        CASES[name] = Case(build, needles, **kw)

    return register


SKIP = "--skip-bad-files"


def _counts_exclude(n_total: int) -> Callable[[Ctx, str], None]:
    """The finished run used exactly `n_total` examples: the bad ones and nothing else left out."""

    def check(ctx: Ctx, _: str) -> None:
        m = json.loads((ctx.tmp / "run" / "metrics.json").read_text())
        assert m["n_train"] + m["n_val"] + m["n_test"] == n_total, m

    return check


# -- image folders ---------------------------------------------------------------------


@case("image: not an image at all", "broken.jpg", "cannot be read", SKIP)
def _(c: Ctx) -> list[str]:
    (c.images() / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return c.fit_img(c.tmp / "data")


@case("image: empty file", "empty.png", "empty file (0 bytes)", SKIP)
def _(c: Ctx) -> list[str]:
    (c.images() / "dogs" / "empty.png").write_bytes(b"")
    return c.fit_img(c.tmp / "data")


@case("image: truncated JPEG", "cut.jpg", "truncated", SKIP)
def _(c: Ctx) -> list[str]:
    b = jpeg_bytes()
    (c.images() / "cats" / "cut.jpg").write_bytes(b[: len(b) // 2])
    return c.fit_img(c.tmp / "data")


@case("image: truncated PNG", "cut.png", SKIP)
def _(c: Ctx) -> list[str]:
    b = png_bytes()
    (c.images() / "dogs" / "cut.png").write_bytes(b[: len(b) // 2])
    return c.fit_img(c.tmp / "data")


@case("image: text file named .png", "notes.png", "not a recognised image format", SKIP)
def _(c: Ctx) -> list[str]:
    (c.images() / "dogs" / "notes.png").write_text("shopping list: eggs, milk\n")
    return c.fit_img(c.tmp / "data")


@case("image: HTML error page saved as .jpg", "download.jpg", SKIP)
def _(c: Ctx) -> list[str]:
    (c.images() / "cats" / "download.jpg").write_text("<html><body>403 Forbidden</body></html>")
    return c.fit_img(c.tmp / "data")


@case("image: several bad files are all listed", "a.jpg", "b.png", "c.gif", "3 of", SKIP)
def _(c: Ctx) -> list[str]:
    d = c.images()
    for name in ("a.jpg", "b.png", "c.gif"):
        (d / "cats" / name).write_bytes(b"junk")
    return c.fit_img(d)


@case("image: truncated JPEG skipped with --skip-bad-files", "cut.jpg", "skipped", ok=True,
      check=_counts_exclude(12))  # fmt: skip
def _(c: Ctx) -> list[str]:
    b = jpeg_bytes()
    (c.images() / "cats" / "cut.jpg").write_bytes(b[: len(b) // 2])
    return c.fit_img(c.tmp / "data", SKIP)


@case("image: every bad kind skipped and each one named", "broken.jpg", "empty.png",
      "cut.jpg", "skipped 3", ok=True, check=_counts_exclude(12))  # fmt: skip
def _(c: Ctx) -> list[str]:
    d = c.images()
    (d / "cats" / "broken.jpg").write_bytes(b"junk")
    (d / "dogs" / "empty.png").write_bytes(b"")
    b = jpeg_bytes()
    (d / "dogs" / "cut.jpg").write_bytes(b[:300])
    return c.fit_img(d, SKIP)


@case("image: a class with only bad files, skipped", "birds", "no image files left", "Replace")
def _(c: Ctx) -> list[str]:
    d = c.images()
    (d / "birds").mkdir()
    (d / "birds" / "x.jpg").write_bytes(b"junk")
    (d / "birds" / "y.jpg").write_bytes(b"")
    return c.fit_img(d, SKIP)


@case("image: images directly in the folder, no class folders", "No class sub-folders",
      "It holds 3 image files", "/cat/1.jpg")  # fmt: skip
def _(c: Ctx) -> list[str]:
    d = c.tmp / "flat"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.png").write_bytes(png_bytes(i))
    return c.fit_img(d)


@case("image: an empty class folder", "birds", "holds no image files", "remove the folder")
def _(c: Ctx) -> list[str]:
    (c.images() / "birds").mkdir()
    return c.fit_img(c.tmp / "data")


@case("image: a class folder of non-images", "birds", "holds no image files")
def _(c: Ctx) -> list[str]:
    (c.images() / "birds").mkdir()
    (c.tmp / "data" / "birds" / "readme.txt").write_text("photos to come")
    return c.fit_img(c.tmp / "data")


@case("image: only one class", "only one class", "cats", "Add examples of another class")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(classes=("cats",)))


@case("image: a class with a single image", "'birds' has 1", "at least 2")
def _(c: Ctx) -> list[str]:
    d = c.images()
    (d / "birds").mkdir()
    (d / "birds" / "0.png").write_bytes(png_bytes())
    return c.fit_img(d)


@case("image: a folder of split folders (train/test/cat)", "split folders", "/data/train",
      "--test")  # fmt: skip
def _(c: Ctx) -> list[str]:
    write_images(c.tmp / "data" / "train")
    write_images(c.tmp / "data" / "test", per_class=2)
    return c.fit_img(c.tmp / "data")


@case("image: train/val split folders", "split folders", "--val")
def _(c: Ctx) -> list[str]:
    write_images(c.tmp / "data" / "train")
    write_images(c.tmp / "data" / "val", per_class=2)
    return c.fit_img(c.tmp / "data")


@case("image: nested sub-folders inside a class are named", "counted as class 'cats'",
      "2019", ok=True, check=_counts_exclude(16))  # fmt: skip
def _(c: Ctx) -> list[str]:
    d = c.images()
    write_images(d / "cats" / "2019", per_class=4, classes=("x",))
    # the 4 nested images are cats, counted with the 6 others: 10 cats + 6 dogs
    for p in (d / "cats" / "2019" / "x").iterdir():
        p.rename(d / "cats" / "2019" / p.name)
    (d / "cats" / "2019" / "x").rmdir()
    return c.fit_img(d)


@case("image: unknown test class", "never occur in the training data", "birds",
      "Fix the labels")  # fmt: skip
def _(c: Ctx) -> list[str]:
    d = c.images()
    t = write_images(c.tmp / "t", per_class=2, classes=("cats", "birds"))
    return c.fit_img(d, "--test", str(t))


@case("image: --test of another modality", "test data", "holds text")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(), "--test", str(c.table("t.csv")))


@case("image: --val that does not exist", "validation", "does not exist")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(), "--val", str(c.tmp / "nope"))


@case("image: --train-size larger than the data", "--train-size 500", "Ask for at most")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(), "--train-size", "500")


@case("image: --train-size too small for the classes", "--train-size 3", "too small",
      "at least 4")  # fmt: skip
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(), "--train-size", "3")


@case("image: a folder named like a table", "No class sub-folders")
def _(c: Ctx) -> list[str]:
    (c.tmp / "data.csv").mkdir()
    return c.fit_img(c.tmp / "data.csv")


# -- arguments -------------------------------------------------------------------------


@case("args: --image-size 3", "--image-size 3", "too small", "at least 16", "Leave out")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(), "--image-size", "3")


@case("args: --image-size 0", "--image-size", "positive integer")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(), "--image-size", "0")


@case("args: --image-size -32", "--image-size", "positive integer")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(), "--image-size=-32")


@case("args: --image-size not a number", "--image-size", "invalid int value")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(), "--image-size", "big")


@case("args: --out is an existing file", "--out", "existing file", "Give a folder path")
def _(c: Ctx) -> list[str]:
    (c.tmp / "run").write_text("not a folder")
    return c.fit_img(c.images())


@case("args: --out below a file", "--out", "is a file", "parents are folders")
def _(c: Ctx) -> list[str]:
    (c.tmp / "notes.txt").write_text("x")
    argv = c.fit_img(c.images())
    argv[argv.index("--out") + 1] = str(c.tmp / "notes.txt" / "run")
    return argv


@case("args: --out in a read-only folder", "--out", "cannot write into",
      "Give a --out folder you can write to")  # fmt: skip
def _(c: Ctx) -> list[str]:
    if not Path("/proc/1").is_dir():  # pragma: no cover - Linux has /proc
        pytest.skip("needs /proc")
    argv = c.fit_img(c.images())
    # /proc/1 is read-only for everyone, root included (chmod would not stop root)
    argv[argv.index("--out") + 1] = "/proc/1/headstart-run"
    return argv


@case("args: --track mlflow when mlflow is not installed", "--track mlflow",
      "pip install mlflow")  # fmt: skip
def _(c: Ctx) -> list[str]:
    import importlib.util

    if importlib.util.find_spec("mlflow") is not None:
        pytest.skip("mlflow is installed here")
    return c.fit_img(c.images(), "--track", "mlflow")


@case("args: --track tensorboard when tensorboard is not installed", "--track tensorboard",
      "pip install tensorboard", absent=("report.html",))  # fmt: skip
def _(c: Ctx) -> list[str]:
    # None in sys.modules makes `import tensorboard` raise ImportError, as when absent
    sys.modules["tensorboard"] = None  # type: ignore[assignment]
    return c.fit_img(c.images(), "--track", "tensorboard")


@case("args: --track with an unknown tracker", "--track", "invalid choice", "'mlflow'")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(), "--track", "wandb")


@case("args: data path that does not exist", "No such file or folder", "Check the path")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.tmp / "nope" / "photos")


@case("args: misspelt built-in data set", "Did you mean", "fashion-mnist")
def _(c: Ctx) -> list[str]:
    return c.fit_img("fashon-mnist")


@case("args: --val-fraction 1.5", "--val-fraction must be", "1.5")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(), "--val-fraction", "1.5")


@case("args: --time-budget abc", "90s, 20m or 1.5h", "'abc'")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(), "--time-budget", "abc")


@case("args: --test-size 0", "--test-size")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(), "--test-size", "0")


@case("args: --epochs 0", "--epochs must be", "positive integer")
def _(c: Ctx) -> list[str]:
    return c.fit_img(c.images(), "--epochs", "0")


@case("args: misspelt backbone", "Did you mean", "mobilenet_v2")
def _(c: Ctx) -> list[str]:
    argv = c.fit_img(c.images())
    argv[argv.index("--backbone") + 1] = "torchvision:mobilenet_v22"
    return argv


@case("args: a text backbone on images", "text backbone", "image", "headstart backbones")
def _(c: Ctx) -> list[str]:
    argv = c.fit_img(c.images())
    argv[argv.index("--backbone") + 1] = c.text
    return argv


@case("args: a local-dir backbone that does not exist", "nowhere")
def _(c: Ctx) -> list[str]:
    argv = c.fit_img(c.images())
    argv[argv.index("--backbone") + 1] = f"local-dir:{c.tmp / 'nowhere'}"
    return argv


# -- tables ----------------------------------------------------------------------------


@case("table: empty CSV (0 bytes)", "empty.csv", "is empty")
def _(c: Ctx) -> list[str]:
    (c.tmp / "empty.csv").write_text("")
    return c.fit_txt(c.tmp / "empty.csv")


@case("table: CSV with a header and no rows", "h.csv", "no data rows")
def _(c: Ctx) -> list[str]:
    return c.fit_txt(c.table("h.csv", rows=[]))


@case("table: TSV named .csv", "tab-separated", "Rename the file to end in .tsv")
def _(c: Ctx) -> list[str]:
    return c.fit_txt(c.table("reviews.csv", sep="\t"))


@case("table: CSV named .tsv", "comma-separated", ".csv")
def _(c: Ctx) -> list[str]:
    return c.fit_txt(c.table("reviews.tsv", sep=","))


@case("table: unknown --label-column", "'star'", "--label-column", "stars")
def _(c: Ctx) -> list[str]:
    t = c.table("r.csv", header=("review", "stars"))
    return c.fit_txt(t, "--label-column", "star")


@case("table: no column looks like the label", "Cannot tell which column", "--label-column",
      absent=("label_column=",))  # fmt: skip
def _(c: Ctx) -> list[str]:
    return c.fit_txt(c.table("r.csv", header=("review", "verdict")))


@case("table: label column misspelt in the file", "--label-column", "lable")
def _(c: Ctx) -> list[str]:
    return c.fit_txt(c.table("r.csv", header=("text", "lable")))


@case("table: unknown --text-column", "'body'", "--text-column", absent=("text_column=",))
def _(c: Ctx) -> list[str]:
    return c.fit_txt(c.table("r.csv"), "--text-column", "body")


@case("table: --text-column and --image-column together", "not both")
def _(c: Ctx) -> list[str]:
    return c.fit_txt(c.table("r.csv"), "--text-column", "text", "--image-column", "text")


@case("table: --text-column is the label column", "both 'label'")
def _(c: Ctx) -> list[str]:
    return c.fit_txt(c.table("r.csv"), "--text-column", "label")


@case("table: one class", "only one class", "neg", "check the label column")
def _(c: Ctx) -> list[str]:
    return c.fit_txt(c.table("r.csv", rows=text_rows(labels=("neg",))))


@case("table: mixed label spellings (0/1 and neg/pos)", "mixes numbers", "0, 1", "neg, pos",
      "one spelling per class")  # fmt: skip
def _(c: Ctx) -> list[str]:
    rows = text_rows(labels=("neg", "pos")) + text_rows(labels=("0", "1"))
    return c.fit_txt(c.table("r.csv", rows=rows))


@case("table: labels differing only in case", "Pos / pos", "one spelling per class")
def _(c: Ctx) -> list[str]:
    rows = text_rows(labels=("neg", "pos")) + text_rows(n=6, labels=("neg", "Pos"))
    return c.fit_txt(c.table("r.csv", rows=rows))


@case("table: not UTF-8 (Latin-1)", "latin.csv", "not UTF-8", "Save it as UTF-8")
def _(c: Ctx) -> list[str]:
    body = "text,label\n" + "".join(f"caf\xe9 cr\xe8me {i},{'ab'[i % 2]}\n" for i in range(20))
    (c.tmp / "latin.csv").write_bytes(body.encode("latin-1"))
    return c.fit_txt(c.tmp / "latin.csv")


@case("table: empty text rows", "2 rows", "empty 'text' cell", "row 3", SKIP,
      absent=("on_error",))  # fmt: skip
def _(c: Ctx) -> list[str]:
    rows = text_rows()
    rows[1] = ("", "pos")
    rows[4] = ("   ", "neg")
    return c.fit_txt(c.table("r.csv", rows=rows))


@case("table: empty text rows skipped", "row 3", "skipped 2", ok=True,
      check=_counts_exclude(22))  # fmt: skip
def _(c: Ctx) -> list[str]:
    rows = text_rows()
    rows[1] = ("", "pos")
    rows[4] = ("   ", "neg")
    return c.fit_txt(c.table("r.csv", rows=rows), SKIP)


@case("table: rows without a label", "no label", "row 2", SKIP)
def _(c: Ctx) -> list[str]:
    rows = text_rows()
    rows[0] = (rows[0][0], "")
    return c.fit_txt(c.table("r.csv", rows=rows))


@case("table: every row unusable, skipped", "No usable rows left", "skipping 24")
def _(c: Ctx) -> list[str]:
    return c.fit_txt(c.table("r.csv", rows=[("", lab) for _, lab in text_rows()]), SKIP)


@case("table: JSON Lines with a broken line", "r.jsonl:line 3", "not valid JSON", "Fix the line")
def _(c: Ctx) -> list[str]:
    lines = [json.dumps({"text": t, "label": lab}) for t, lab in text_rows()]
    lines[2] = '{"text": "oops", "label": '
    (c.tmp / "r.jsonl").write_text("\n".join(lines) + "\n")
    return c.fit_txt(c.tmp / "r.jsonl")


@case("table: JSON Lines holding a list per line", "r.jsonl:line 1", "must be a JSON object")
def _(c: Ctx) -> list[str]:
    (c.tmp / "r.jsonl").write_text("\n".join(json.dumps([t, lab]) for t, lab in text_rows()))
    return c.fit_txt(c.tmp / "r.jsonl")


@case("table: .json holding one object", "JSON list of objects", ".jsonl")
def _(c: Ctx) -> list[str]:
    (c.tmp / "r.json").write_text(json.dumps({"text": "a", "label": "b"}))
    return c.fit_txt(c.tmp / "r.json")


@case("table: .json that is not JSON", "r.json", "not valid JSON")
def _(c: Ctx) -> list[str]:
    (c.tmp / "r.json").write_text("[{'text': 'single quotes'}]")
    return c.fit_txt(c.tmp / "r.json")


@case("table: a corrupt Parquet file", "r.parquet", "Cannot read", "PARQUET")
def _(c: Ctx) -> list[str]:
    (c.tmp / "r.parquet").write_bytes(b"PAR1 this is not parquet at all")
    return c.fit_txt(c.tmp / "r.parquet")


@case("table: a corrupt .csv.gz", "r.csv.gz", "Cannot read")
def _(c: Ctx) -> list[str]:
    (c.tmp / "r.csv.gz").write_bytes(b"\x1f\x8b\x08 definitely not gzip")
    return c.fit_txt(c.tmp / "r.csv.gz")


@case("table: a .csv.gz that holds a TSV", "tab-separated", ".tsv")
def _(c: Ctx) -> list[str]:
    body = "text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in text_rows())
    (c.tmp / "r.csv.gz").write_bytes(gzip.compress(body.encode()))
    return c.fit_txt(c.tmp / "r.csv.gz")


@case("table: no header row", "add a header row", "label,text")
def _(c: Ctx) -> list[str]:
    body = "".join(f"{t},{lab}\n" for t, lab in text_rows(labels=("0", "1")))
    (c.tmp / "r.csv").write_text(body)
    return c.fit_txt(c.tmp / "r.csv")


@case("table: an id column given as the label", "'id' the label column",
      "Almost every example has its own label")  # fmt: skip
def _(c: Ctx) -> list[str]:
    rows = [(t, str(i), lab) for i, (t, lab) in enumerate(text_rows())]
    return c.fit_txt(c.table("r.csv", rows=rows, header=("text", "id", "label")),
                     "--label-column", "id")  # fmt: skip


@case("table: an Excel file", "Unknown table format", "r.xlsx", ".csv")
def _(c: Ctx) -> list[str]:
    (c.tmp / "r.xlsx").write_bytes(b"PK\x03\x04 not read here")
    return c.fit_txt(c.tmp / "r.xlsx")


@case("table: a plain text file", "Unknown table format", "notes.txt")
def _(c: Ctx) -> list[str]:
    (c.tmp / "notes.txt").write_text("good movie\nbad movie\n")
    return c.fit_txt(c.tmp / "notes.txt")


@case("table: image paths that do not exist", "row 2", "gone.png", "file not found",
      "Check the paths", SKIP)  # fmt: skip
def _(c: Ctx) -> list[str]:
    d = c.images()
    rows = [(str(p.relative_to(c.tmp)), p.parent.name) for p in sorted(d.rglob("*.*"))]
    rows[0] = ("data/cats/gone.png", "cats")
    return c.fit_img(c.table("pics.csv", rows=rows, header=("image", "label")))


@case("table: image paths with a corrupt image, skipped", "bad.png", "skipped 1", ok=True,
      check=_counts_exclude(12))  # fmt: skip
def _(c: Ctx) -> list[str]:
    d = c.images()
    (d / "cats" / "bad.png").write_bytes(b"junk")
    rows = [(str(p.relative_to(c.tmp)), p.parent.name) for p in sorted(d.rglob("*.*"))]
    return c.fit_img(c.table("pics.csv", rows=rows, header=("image", "label")), SKIP)


@case("table: a text table with an image backbone", "image backbone", "text")
def _(c: Ctx) -> list[str]:
    argv = c.fit_txt(c.table("r.csv"))
    argv[argv.index("--backbone") + 1] = c.vision
    return argv


# -- audio -----------------------------------------------------------------------------


@case("audio: a broken WAV file", "broken.wav", SKIP)
def _(c: Ctx) -> list[str]:
    for k, name in enumerate(("no", "yes")):
        for i in range(3):
            write_wav(c.tmp / "sc" / name / f"{i}.wav", 300.0 + 200 * k + 10 * i)
    (c.tmp / "sc" / "no" / "broken.wav").write_bytes(b"RIFF not really")
    return c.fit_img(c.tmp / "sc")


@case("audio: an .m4a clip", "ffmpeg", "clip.m4a")
def _(c: Ctx) -> list[str]:
    for k, name in enumerate(("no", "yes")):
        for i in range(3):
            write_wav(c.tmp / "sc" / name / f"{i}.wav", 300.0 + 200 * k + 10 * i)
    (c.tmp / "sc" / "yes" / "clip.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    return c.fit_img(c.tmp / "sc")


# -- evaluate --------------------------------------------------------------------------


def _evaluate(c: Ctx, data: Path | str, *extra: str) -> list[str]:
    return ["evaluate", str(c.model), str(data), *extra]


@case("evaluate: an image model on a text table", "model of image data", "holds text data")
def _(c: Ctx) -> list[str]:
    return _evaluate(c, c.table("r.csv"))


@case("evaluate: labels the model does not know", "not trained on", "birds", "'cats'",
      absent=("np.str_",))  # fmt: skip
def _(c: Ctx) -> list[str]:
    return _evaluate(c, write_images(c.tmp / "d", per_class=2, classes=("cats", "birds")))


@case("evaluate: a corrupt image", "broken.jpg", SKIP)
def _(c: Ctx) -> list[str]:
    d = write_images(c.tmp / "d", per_class=2)
    (d / "cats" / "broken.jpg").write_bytes(b"junk")
    return _evaluate(c, d)


@case("evaluate: a truncated JPEG skipped", "cut.jpg", "skipped 1", "on 4 examples", ok=True)
def _(c: Ctx) -> list[str]:
    d = write_images(c.tmp / "d", per_class=2)
    (d / "cats" / "cut.jpg").write_bytes(jpeg_bytes()[:400])
    return _evaluate(c, d, SKIP)


@case("evaluate: --out is a folder", "--out", "is a folder", "metrics.json")
def _(c: Ctx) -> list[str]:
    (c.tmp / "o").mkdir()
    return _evaluate(c, write_images(c.tmp / "d", per_class=2), "--out", str(c.tmp / "o"))


@case("evaluate: data that does not exist", "No such file or folder")
def _(c: Ctx) -> list[str]:
    return _evaluate(c, c.tmp / "nope" / "photos")


@case("evaluate: a model folder that does not exist", "nomodel")
def _(c: Ctx) -> list[str]:
    return ["evaluate", str(c.tmp / "nomodel"), str(write_images(c.tmp / "d", per_class=2))]


# -- rank ------------------------------------------------------------------------------


def _rank(c: Ctx, data: Path | str, *extra: str) -> list[str]:
    return ["rank", str(data), "--backbones", c.vision, "--sample", "20", "--cv", "2",
            "--cache-dir", str(c.tmp / "cache"), "-q", *extra]  # fmt: skip


@case("rank: a corrupt image", "broken.jpg", SKIP)
def _(c: Ctx) -> list[str]:
    (c.images() / "cats" / "broken.jpg").write_bytes(b"junk")
    return _rank(c, c.tmp / "data")


@case("rank: a truncated JPEG skipped", "cut.jpg", "skipped 1", "best", ok=True)
def _(c: Ctx) -> list[str]:
    d = c.images(per_class=8)
    (d / "cats" / "cut.jpg").write_bytes(jpeg_bytes()[:500])
    return _rank(c, d, SKIP)


@case("rank: one class", "only one class")
def _(c: Ctx) -> list[str]:
    return _rank(c, c.images(classes=("cats",)))


@case("rank: mixed label spellings", "mixes numbers")
def _(c: Ctx) -> list[str]:
    rows = text_rows(labels=("neg", "pos")) + text_rows(labels=("0", "1"))
    return ["rank", str(c.table("r.csv", rows=rows)), "--backbones", c.text, "-q"]


@case("rank: empty --backbones", "--backbones", "comma-separated")
def _(c: Ctx) -> list[str]:
    return ["rank", str(c.images()), "--backbones", " , ", "-q"]


# -- curve -----------------------------------------------------------------------------


def _curve(c: Ctx, data: Path | str, *extra: str) -> list[str]:
    return ["curve", str(data), "--backbone", c.vision, "--strategies", "extract",
            "--fractions", "0.5,1", "--seeds", "1", "--out", str(c.tmp / "study"), "-q",
            *extra]  # fmt: skip


@case("curve: --image-size 3", "--image-size 3", "at least 16")
def _(c: Ctx) -> list[str]:
    return _curve(c, c.images(), "--image-size", "3")


@case("curve: --out is an existing file", "--out", "existing file")
def _(c: Ctx) -> list[str]:
    (c.tmp / "study").write_text("x")
    return _curve(c, c.images())


@case("curve: --track tensorboard without tensorboard", "pip install tensorboard")
def _(c: Ctx) -> list[str]:
    sys.modules["tensorboard"] = None  # type: ignore[assignment]
    return _curve(c, c.images(), "--track", "tensorboard")


@case("curve: a corrupt image", "broken.jpg", SKIP)
def _(c: Ctx) -> list[str]:
    (c.images() / "cats" / "broken.jpg").write_bytes(b"junk")
    return _curve(c, c.tmp / "data")


@case("curve: a TSV named .csv", "tab-separated")
def _(c: Ctx) -> list[str]:
    return _curve(c, c.table("r.csv", sep="\t"))


# -- real processes --------------------------------------------------------------------


@case("process: empty CSV", "empty.csv", "is empty", subprocess=True)
def _(c: Ctx) -> list[str]:
    (c.tmp / "empty.csv").write_text("")
    return c.fit_txt(c.tmp / "empty.csv")


@case("process: truncated JPEG", "cut.jpg", "truncated", SKIP, subprocess=True)
def _(c: Ctx) -> list[str]:
    (c.images() / "cats" / "cut.jpg").write_bytes(jpeg_bytes()[:700])
    return c.fit_img(c.tmp / "data")


@case("args: --out a relative path to an existing file", "--out results.txt", "existing file")
def _(c: Ctx) -> list[str]:
    (c.tmp / "results.txt").write_text("x")  # the case runs in c.tmp
    argv = c.fit_img(c.images())
    argv[argv.index("--out") + 1] = "results.txt"
    return argv


@case("table: unknown --label-column in a TSV", "--label-column", "stars")
def _(c: Ctx) -> list[str]:
    t = c.table("r.tsv", header=("review", "stars"), sep="\t")
    return c.fit_txt(t, "--label-column", "star")


# ------------------------------------------------------------------------------ running


@pytest.fixture(scope="module")
def image_model(tmp_path_factory, tiny_vision_dir) -> Path:
    root = tmp_path_factory.mktemp("model")
    data = write_images(root / "pets", per_class=6)
    out = root / "run"
    argv = ["fit", str(data), "--backbone", f"local-dir:{tiny_vision_dir}", "--strategy",
            "extract", "--engine", "torch", "--no-baseline", "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0
    return out / "model"


def _run_in_process(argv: list[str], capsys, caplog) -> tuple[int, str]:
    caplog.clear()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse refusing a flag
        rc = int(exc.code or 0)
    captured = capsys.readouterr()
    return rc, captured.out + captured.err + caplog.text


def _run_process(argv: list[str], cwd: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-m", "headstart", *argv], capture_output=True,
                         text=True, env=env, cwd=cwd, timeout=300)  # fmt: skip
    return res.returncode, res.stdout + res.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, tiny_vision_dir, tiny_text_dir, image_model, capsys, caplog,
                   monkeypatch) -> None:  # fmt: skip
    c = CASES[name]
    ctx = Ctx(tmp_path, f"local-dir:{tiny_vision_dir}", f"local-dir:{tiny_text_dir}", image_model)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorboard", sys.modules.get("tensorboard"))
    if sys.modules["tensorboard"] is None:
        del sys.modules["tensorboard"]
    argv = c.build(ctx)
    if c.subprocess:
        rc, text = _run_process(argv, tmp_path)
    else:
        rc, text = _run_in_process(argv, capsys, caplog)
    assert "Traceback" not in text, text
    assert rc == (0 if c.ok else 2), (rc, text)
    if not c.ok:
        assert "error:" in text, text
    for needle in c.needles:
        assert needle in text, (needle, text)
    for needle in c.absent:
        assert needle not in text, (needle, text)
    if c.check is not None:
        c.check(ctx, text)


def test_the_corpus_is_complete() -> None:
    """Issue 14 counted 66 bad inputs; the corpus covers at least as many."""
    print(f"\nbad-input corpus: {len(CASES)} cases")
    assert len(CASES) >= 66, len(CASES)
