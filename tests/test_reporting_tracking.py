"""Reporting that tells the truth (issue 14 item 8) and tracking that runs with the run (item 9).

Real fits on the tiny random backbone of conftest.py; TensorBoard's own event reader checks
what was logged, and when.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import image_examples, text_examples
from headstart.baselines import fit_baseline
from headstart.cli.main import main
from headstart.config import LadderConfig
from headstart.fit import summarise
from headstart.strategies.ladder import Rung, next_step
from test_bad_inputs import write_images


@pytest.mark.parametrize("make", [image_examples, text_examples], ids=["pixels", "tfidf"])
def test_baseline_val_is_scored_before_the_refit(make) -> None:
    ex = make(n=60, seed=1)
    idx = np.arange(len(ex))
    train, val = ex.subset(idx[idx % 3 != 0]), ex.subset(idx[idx % 3 == 0])
    base = fit_baseline(train, val)  # refit on train + val (the default)
    assert base.refit and base.val_proba is not None
    assert base.val_proba.shape == (len(val), len(ex.classes))
    honest = float((base.val_proba.argmax(1) == val.labels).mean())
    # the train-only model at the chosen C: the score the C was chosen by
    assert honest == pytest.approx(base.val_accuracy)
    # and it is not the refitted model's score on data it was trained on
    alone = fit_baseline(train, val, refit=False)
    np.testing.assert_allclose(alone.predict_proba(val), base.val_proba, atol=1e-6)


def _metrics(acc: float, base_acc: float, majority: float) -> dict:
    return {
        "strategy": "extract", "backbone": "b", "head": "logistic", "train_size": 10,
        "n_train": 8, "n_val": 2, "n_test": 10,
        "test": {"accuracy": acc, "macro_f1": acc},
        "baseline": {"name": "pixels+logreg",
                     "test": {"accuracy": base_acc, "majority_rate": majority}},
        "timings": {"features_s": 1.0, "head_s": 0.1, "finetune_s": 0.0, "total_s": 2.0},
        "extraction": {"train": {"cached": False}},
    }  # fmt: skip


def test_a_baseline_below_the_majority_rate_is_noted() -> None:
    low = summarise(_metrics(0.9, 0.32, 0.5))
    assert "below the majority-class rate (0.5000" in low
    assert "majority" not in summarise(_metrics(0.9, 0.7, 0.5))


def test_per_class_counts_are_real_counts() -> None:
    cfg = LadderConfig()
    rung = [Rung(0, 0.5, 1.0)]
    kw = {"n_classes": 3, "n_groups": 6, "n_val": 30, "cfg": cfg}
    balanced = next_step(rung, n_labelled=90, min_class_count=30, **kw).reason
    assert "(30 per class)" in balanced
    skewed = next_step(rung, n_labelled=90, min_class_count=5, **kw).reason
    assert "5 in the smallest class, 30.0 per class on average" in skewed
    assert "(30 per class)" not in skewed


def test_tensorboard_logs_epochs_and_rungs_as_they_happen(tmp_path: Path, tiny_vision_dir, capsys):
    pytest.importorskip("tensorboard", reason="pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = write_images(tmp_path / "pets", per_class=8)
    out = tmp_path / "run"
    argv = ["fit", str(data), "--backbone", f"local-dir:{tiny_vision_dir}", "--strategy",
            "finetune", "--engine", "torch", "--epochs", "3", "--patience", "3",
            "--track", "tensorboard", "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0
    assert "accuracy" in capsys.readouterr().out  # the summary is printed
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"epoch/val_accuracy", "epoch/train_loss", "rung/val_accuracy", "test/accuracy"} <= tags
    epochs = acc.Scalars("epoch/val_accuracy")
    assert [e.step for e in epochs] == [1, 2, 3]
    history = json.loads((out / "metrics.json").read_text())["finetune"]["history"]
    assert [e.value for e in epochs] == pytest.approx([h["val_accuracy"] for h in history])
    rungs = acc.Scalars("rung/val_accuracy")
    assert len(rungs) == 2  # extraction, then the fine-tuning rung
    final = acc.Scalars("test/accuracy")[0]
    # live: each epoch was written when it finished, before the run's final scores
    assert epochs[0].wall_time < epochs[-1].wall_time <= final.wall_time
    assert rungs[0].wall_time < epochs[0].wall_time  # extraction's rung came first
