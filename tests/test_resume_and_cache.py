"""Recovering from damage: a garbled feature-cache manifest, and a killed fine-tuning run.

Both on real files and a real process (the run is killed with SIGKILL half way), on the tiny
random backbone of conftest.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import image_examples
from headstart.backbones import load_backbone
from headstart.cli.main import main
from headstart.features.cache import extract_features
from test_bad_inputs import write_images

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.mark.parametrize(
    "garble",
    [b'{"key": "abc", "n": 4', b"[1, 2, 3]", b"\xff\xfe\x00 not text", b""],
    ids=["cut short", "not an object", "not UTF-8", "empty"],
)
def test_a_garbled_manifest_is_detected_and_recomputed(
    tmp_path: Path, tiny_vision_dir: Path, garble: bytes, caplog
) -> None:
    bb = load_backbone(f"local-dir:{tiny_vision_dir}")
    ex = image_examples(n=12, size=32)
    first = extract_features(bb, ex, cache_dir=tmp_path, progress=False, engine="torch")
    want = first.load()
    assert first.computed_shards == 1
    manifest = first.path / "manifest.json"
    manifest.write_bytes(garble)
    again = extract_features(bb, ex, cache_dir=tmp_path, progress=False, engine="torch")
    # recomputed, not trusted, not a traceback; the same features come back
    assert again.computed_shards == 1 and again.cached_shards == 0
    assert "manifest" in caplog.text and "recomputing" in caplog.text
    np.testing.assert_allclose(again.load(), want, atol=1e-5)
    assert json.loads(manifest.read_text())["n"] == len(ex)
    # and the rewritten entry is trusted again
    third = extract_features(bb, ex, cache_dir=tmp_path, progress=False, engine="torch")
    assert third.cached_shards == 1 and third.computed_shards == 0


def test_a_garbled_shard_side_file_is_recomputed(tmp_path: Path, tiny_vision_dir: Path) -> None:
    bb = load_backbone(f"local-dir:{tiny_vision_dir}")
    ex = image_examples(n=12, size=32)
    first = extract_features(bb, ex, cache_dir=tmp_path, progress=False, engine="torch")
    (first.path / "shard-00000.json").write_text("[]")
    again = extract_features(bb, ex, cache_dir=tmp_path, progress=False, engine="torch")
    assert again.computed_shards == 1
    np.testing.assert_allclose(again.load(), first.load(), atol=1e-5)


@pytest.mark.slow
def test_a_killed_finetuning_run_resumes_and_says_so(
    tmp_path: Path, tiny_vision_dir: Path, capsys
) -> None:
    """SIGKILL a `headstart fit --strategy finetune` after its first checkpoint; the same
    command then says "resumed from epoch K" and records K as ``resumed_from``."""
    data = write_images(tmp_path / "pets", per_class=10)
    out = tmp_path / "run"
    argv = ["fit", str(data), "--backbone", f"local-dir:{tiny_vision_dir}", "--strategy",
            "finetune", "--engine", "torch", "--epochs", "5", "--patience", "5",
            "--time-budget", "inf", "--no-baseline", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(out), "-q"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "headstart", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while not list((out / "checkpoints").glob("rung-*.pt")):
            if proc.poll() is not None:
                pytest.fail(f"the run ended before its first checkpoint: {proc.communicate()}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 240 s")
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    if proc.returncode == 0:
        pytest.skip("the run finished before it could be killed (a very fast machine)")
    assert not (out / "metrics.json").exists()

    assert main(argv) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    k = metrics["finetune"]["resumed_from"]
    assert isinstance(k, int) and 1 <= k < 5
    assert f"resumed from epoch {k}" in printed
    # the epochs before K are not run again: the history holds each epoch once
    epochs = [h["epoch"] for h in metrics["finetune"]["history"]]
    assert epochs == sorted(set(epochs)) and epochs[0] == 1


def test_a_fresh_run_does_not_claim_to_resume(tmp_path: Path, tiny_vision_dir: Path, capsys):
    data = write_images(tmp_path / "pets", per_class=6)
    out = tmp_path / "run"
    argv = ["fit", str(data), "--backbone", f"local-dir:{tiny_vision_dir}", "--strategy",
            "finetune", "--engine", "torch", "--epochs", "2", "--no-baseline",
            "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0
    assert "resumed" not in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["finetune"]["resumed_from"] is None
