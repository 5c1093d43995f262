"""The `headstart` command line, run as a real process on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SRC = str(Path(__file__).resolve().parents[1] / "src")


def headstart(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "headstart", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def write_image_folder(root: Path, per_class: int = 12, classes=("cats", "dogs")) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 80, size=(40, 40, 3), dtype=np.uint8)
            arr[:, :20] += 150 if c == 0 else 0
            arr[:, 20:] += 150 if c == 1 else 0
            Image.fromarray(arr).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_vision_dir):
    root = tmp_path_factory.mktemp("cli")
    data = write_image_folder(root / "pets")
    out = root / "run"
    res = headstart(
        "fit",
        str(data),
        "--backbone",
        f"local-dir:{tiny_vision_dir}",
        "--strategy",
        "extract",
        "--engine",
        "torch",
        "--out",
        str(out),
        "-q",
    )
    assert res.returncode == 0, res.stderr
    return root, data, out, res


def test_fit_writes_the_run_folder(fitted):
    _, _, out, res = fitted
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["strategy"] == "extract"
        and metrics["train_size"] == metrics["n_train"] + metrics["n_val"]
    )
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0 and "macro_f1" in metrics["val"]
    assert metrics["baseline"]["name"] and "accuracy" in metrics["baseline"]["test"]
    config = json.loads((out / "config.json").read_text())
    assert len(config["data"]["fingerprint"]["train"]) == 64
    assert config["versions"]["torch"] and config["config"]["seed"] == 0
    assert (out / "model" / "headstart.json").exists()
    assert "accuracy" in res.stdout and "baseline" in res.stdout


def test_predict_prints_one_json_line_per_input(fitted):
    _, data, out, _ = fitted
    files = sorted((data / "cats").iterdir())[:2] + sorted((data / "dogs").iterdir())[:1]
    res = headstart("predict", str(out / "model"), *map(str, files))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["input"] for r in rows] == list(map(str, files))
    for r in rows:
        assert r["label"] in ("cats", "dogs")
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4


def test_evaluate_reports_metrics(fitted):
    _, data, out, _ = fitted
    res = headstart("evaluate", str(out / "model"), str(data), "--out", str(out / "eval.json"))
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "eval.json").read_text())["n"] == 24


def test_info_commands(tmp_path):
    res = headstart("backbones")
    assert res.returncode == 0 and "torchvision:mobilenet_v2" in res.stdout
    assert headstart("datasets").returncode == 0
    env = json.loads(headstart("env").stdout)
    assert env["versions"]["python"].startswith("3.")


def test_rank_and_advise_commands(tmp_path, tiny_vision_dir):
    """`rank` and `advise` (one module each under cli/) run end to end and print JSON."""
    data = write_image_folder(tmp_path / "pets")
    bb, cache = f"local-dir:{tiny_vision_dir}", str(tmp_path / "cache")
    res = headstart("rank", str(data), "--backbones", bb, "--sample", "16", "--cv", "2",
                    "--cache-dir", cache, "--json", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    ranked = json.loads(res.stdout)
    (row,) = ranked["rows"]
    assert ranked["best"] == row["name"] and row["name"].endswith(str(tiny_vision_dir))
    assert 0 < ranked["n"] <= 16  # a stratified sample of the training split
    res = headstart("advise", str(data), "--backbone", bb, "--sample", "16", "--cache-dir", cache,
                    "--ladder", "min_examples=5", "--json", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    advice = json.loads(res.stdout)
    assert advice["recommendation"] in ("extract", "finetune") and advice["reasons"]
    _fails(headstart("rank", str(data), "--backbones", " , "), "comma-separated names")
    _fails(headstart("advise", str(data), "--ladder", "nope=1"), "--ladder takes KEY=VALUE")


# ---------------------------------------------------------------- bad input: clear errors
def _fails(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    for n in needles:
        assert n in res.stderr, (n, res.stderr)


def test_corrupt_and_empty_images_are_named(tmp_path, tiny_vision_dir):
    data = write_image_folder(tmp_path / "d", per_class=6)
    (data / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (data / "dogs" / "empty.png").write_bytes(b"")
    res = headstart(
        "fit",
        str(data),
        "--backbone",
        f"local-dir:{tiny_vision_dir}",
        "--out",
        str(tmp_path / "r"),
        "-q",
    )
    _fails(res, "broken.jpg", "empty.png")
    ok = headstart(
        "fit",
        str(data),
        "--backbone",
        f"local-dir:{tiny_vision_dir}",
        "--strategy",
        "extract",
        "--engine",
        "torch",
        "--skip-bad-files",
        "--out",
        str(tmp_path / "r2"),
        "-q",
    )
    assert ok.returncode == 0, ok.stderr


def test_table_errors_name_the_file_and_column(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _fails(headstart("fit", str(empty)), "empty.csv")
    table = tmp_path / "reviews.csv"
    table.write_text("review,stars\n" + "".join(f"text number {i},{i % 2}\n" for i in range(20)))
    _fails(headstart("fit", str(table), "--label-column", "star"), "star", "stars")


def test_one_class_and_single_example_class(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("text,label\n" + "".join(f"some words {i},a\n" for i in range(10)))
    _fails(headstart("fit", str(one)), "one class")
    single = tmp_path / "single.csv"
    single.write_text(
        "text,label\n" + "".join(f"some words {i},a\n" for i in range(10)) + "odd one,b\n"
    )
    _fails(headstart("fit", str(single)), "'b'")


def test_unknown_backbone_and_missing_weights(tmp_path):
    data = write_image_folder(tmp_path / "d", per_class=4)
    _fails(
        headstart("fit", str(data), "--backbone", "torchvision:mobilenet_v22"),
        "Did you mean",
        "mobilenet_v2",
    )
    # A torchvision checkpoint that no installed package provides and that cannot be downloaded.
    env_home = tmp_path / "torch-home"
    env = {**os.environ, "PYTHONPATH": SRC, "TORCH_HOME": str(env_home)}
    res = subprocess.run(
        [sys.executable, "-m", "headstart", "fit", str(data), "--backbone", "torchvision:resnet18"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    _fails(res, "resnet18", "--no-pretrained")
