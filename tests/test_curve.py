"""The data-efficiency study: cells, shared splits, the table, resume, and experiment logging."""

from __future__ import annotations

import html
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from headstart.curve import CurveConfig, headline, run_curve, summarise_cells
from headstart.errors import ConfigError
from headstart.report import schema
from headstart.tracking import Tracker
from test_report import (
    SRC,
    assert_self_contained,
    embedded_pngs,
    inspect_page,
    needs_chromium,
    schema_mismatches,
)

# Everything tiny: 1 epoch or step per trainer, the 2-layer 32-px DINOv2 of conftest.
FAST = {"engine": "torch", "epochs": 1, "scratch_epochs": 1, "scratch_min_steps": 1,
        "cnn_epochs": 1, "cnn_min_steps": 2, "finetune_batch_size": 16}  # fmt: skip


@pytest.fixture(scope="module")
def pets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_cli import write_image_folder

    return write_image_folder(tmp_path_factory.mktemp("curve") / "pets", per_class=30)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, pets: Path, tiny_vision_dir: Path):
    out = tmp_path_factory.mktemp("study") / "curve"
    res = run_curve(str(pets), out=str(out), fractions=[0.25, 1.0], seeds=2,
                    strategies=["scratch", "extract", "finetune", "baseline"],
                    backbone=f"local-dir:{tiny_vision_dir}", progress=False, **FAST)  # fmt: skip
    return res


def _cells(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))}


def test_every_cell_is_computed_on_shared_splits(study):
    cells = _cells(study.out)
    # scratch on images brings the small CNN: 5 strategies x 2 fractions x 2 seeds
    assert len(cells) == 20 and study.complete and len(study.computed) == 20 and not study.reused
    for f in (0.25, 1.0):
        for seed in (0, 1):
            same = [c for c in cells.values() if c["fraction"] == f and c["seed"] == seed]
            assert {c["strategy"] for c in same} == {
                "scratch",
                "cnn",
                "extract",
                "finetune",
                "baseline",
            }
            assert len({c["split"] for c in same}) == 1  # one train/val split for every strategy
            assert len({(c["n_train"], c["n_val"]) for c in same}) == 1
    small = {
        c["seed"]: c for c in cells.values() if c["strategy"] == "extract" and c["fraction"] == 0.25
    }
    assert small[0]["split"] != small[1]["split"]  # seeds draw different subsets
    assert small[0]["n_labelled"] == 12 and small[0]["n_train"] + small[0]["n_val"] == 12
    full = next(c for c in cells.values() if c["fraction"] == 1.0)
    assert full["n_labelled"] == 48  # 60 images less a 0.2 test split
    assert all(c["test"]["n"] == 12 for c in cells.values())  # one fixed test split


def test_table_is_mean_and_sample_std_over_seeds(study):
    cells = _cells(study.out)
    assert len(study.rows) == 10
    for row in study.rows:
        accs = [c["test"]["accuracy"] for c in cells.values()
                if c["strategy"] == row["strategy"] and c["fraction"] == row["fraction"]]  # fmt: skip
        assert row["n_seeds"] == len(accs) == 2
        assert row["accuracy_mean"] == pytest.approx(np.mean(accs))
        assert row["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    doc = json.loads((study.out / "curve.json").read_text())
    assert doc["rows"] == study.rows and doc["complete"] is True
    assert doc["strategies"] == ["scratch", "cnn", "extract", "finetune", "baseline"]
    ft = next(r for r in study.rows if r["strategy"] == "finetune" and r["fraction"] == 0.25)
    best = max((r for r in study.rows if r["strategy"] in ("scratch", "cnn") and r["fraction"] == 1.0),
               key=lambda r: r["accuracy_mean"])  # fmt: skip
    assert study.headline.startswith("With 25% of the labels (12 examples), fine-tuned transfer")
    assert (
        f"reaches {100 * ft['accuracy_mean'] / best['accuracy_mean']:.0f}% of the" in study.headline
    )
    md = (study.out / "results.md").read_text()
    assert "| labels | examples | from scratch (same architecture) |" in md
    assert study.headline in md


def test_study_report_and_plot(study, tmp_path: Path):
    from test_report import png_size

    w, h = png_size((study.out / "curve.png").read_bytes())
    assert w > 500 and h > 300
    page = (study.out / "report.html").read_text()
    assert html.escape(study.headline) in page
    assert "small CNN from scratch" in page and "How each strategy was trained" in page
    assert len(embedded_pngs(page)) == 1
    assert_self_contained(page)
    doc = json.loads((study.out / schema.CURVE_FILE).read_text())
    assert schema_mismatches(doc, schema.CurveDoc) == []  # what the study page reads


@needs_chromium
def test_study_report_renders_in_chromium(study, tmp_path: Path):
    found = inspect_page(study.out / "report.html", tmp_path)
    assert found["console"] == [] and found["errors"] == []
    assert len(found["imgs"]) == 1 and found["imgs"][0]["w"] > 500 and found["imgs"][0]["rw"] > 0


def test_a_partial_study_resumes_and_a_changed_setting_recomputes_only_its_cells(
    pets: Path, tiny_vision_dir: Path, tmp_path: Path
):
    kw = {"out": str(tmp_path / "c"), "fractions": [0.5, 1.0], "seeds": 1,
          "strategies": ["extract", "finetune"], "backbone": f"local-dir:{tiny_vision_dir}",
          "progress": False, **FAST}  # fmt: skip
    first = run_curve(str(pets), max_new_cells=3, **kw)
    assert (len(first.computed), first.reused, first.complete) == (3, [], False)
    assert first.headline.startswith("(partial: 3 of 4 cells)")
    assert "The study is not finished" in (tmp_path / "c" / "report.html").read_text()
    # A summary-only pass (no new cells) with a second seed: its missing cells come first in
    # the plan, yet every finished cell after them is still read and summarised.
    peek = run_curve(str(pets), max_new_cells=0, **{**kw, "seeds": 2})
    assert sorted(peek.reused) == sorted(first.computed) and peek.computed == []
    assert peek.headline.startswith("(partial: 3 of 8 cells)")
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c" / "cells").glob("*.json")}
    second = run_curve(str(pets), **kw)
    assert sorted(second.reused) == sorted(first.computed) and len(second.computed) == 1
    assert second.complete
    assert all((tmp_path / "c" / "cells" / n).stat().st_mtime_ns == t for n, t in stamps.items())
    third = run_curve(str(pets), **{**kw, "epochs": 2})  # fine-tuning changes, extraction not
    assert sorted(third.computed) == ["finetune-f0.5-seed0", "finetune-f1-seed0"]
    assert sorted(third.reused) == ["extract-f0.5-seed0", "extract-f1-seed0"]


def _curve_cmd(data: Path, backbone: Path, out: Path) -> list[str]:
    code = ("import sys; from headstart.cli import main, curve\n"
            "if curve not in main.COMMANDS: main.COMMANDS = (*main.COMMANDS, curve)\n"
            "sys.exit(main.main(sys.argv[1:]))")  # fmt: skip
    return [sys.executable, "-c", code, "curve", str(data), "--backbone", f"local-dir:{backbone}",
            "--fractions", "0.5,1", "--seeds", "2", "--strategies", "extract,finetune,cnn",
            "--engine", "torch", "--epochs", "1", "--cnn-epochs", "2", "--cnn-min-steps", "8",
            "--out", str(out), "-q"]  # fmt: skip


def test_a_killed_study_resumes_without_recomputing_finished_cells(
    pets: Path, tiny_vision_dir: Path, tmp_path: Path
):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmd = _curve_cmd(pets, tiny_vision_dir, out)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "cells").glob("*.json"))) >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {
        p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "cells").glob("*.json")
    }
    assert 3 <= len(finished) < 12, "the study must be killed part way"
    assert not (out / "curve.json").exists()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"cells: {12 - len(finished)} computed, {len(finished)} reused" in res.stdout
    for name, (mtime, content) in finished.items():
        p = out / "cells" / name
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == content
    assert len(list((out / "cells").glob("*.json"))) == 12
    assert json.loads((out / "curve.json").read_text())["complete"] is True


def test_headline_compares_low_budget_transfer_with_the_best_full_budget_scratch_model():
    def cell(strategy: str, fraction: float, seed: int, acc: float) -> dict:
        return {"strategy": strategy, "fraction": fraction, "seed": seed, "seconds": 1.0,
                "n_labelled": int(fraction * 1000), "test": {"accuracy": acc, "macro_f1": acc}}  # fmt: skip

    cells = [cell("finetune", 0.01, s, a) for s, a in ((0, 0.70), (1, 0.74))]
    cells += [cell("scratch", 1.0, s, a) for s, a in ((0, 0.85), (1, 0.87))]
    cells += [cell("cnn", 1.0, s, a) for s, a in ((0, 0.89), (1, 0.91))]
    cells += [cell("scratch", 0.01, 0, 0.3), cell("extract", 0.01, 0, 0.8)]
    text, detail = headline(summarise_cells(cells))
    assert detail["reference"] == "cnn" and detail["ratio"] == pytest.approx(0.72 / 0.90)
    assert text.startswith(
        "With 1% of the labels (10 examples), fine-tuned transfer reaches 80% of"
    )
    assert "trained on 100% (1,000 examples; a small CNN): 72.0% vs 90.0%" in text
    assert text.endswith("with 1% of the data' does not hold here.")
    assert detail["claim_holds"] is False
    cells += [cell("extract", 1.0, 0, 0.95)]  # the reference is from scratch only
    cells[:2] = [cell("finetune", 0.01, s, 0.82) for s in (0, 1)]
    text, detail = headline(summarise_cells(cells))
    assert detail["claim_holds"] is True and text.endswith("holds here.")
    assert detail["ratio"] == pytest.approx(0.82 / 0.90)
    no_ref, _ = headline(summarise_cells([cell("extract", 0.1, 0, 0.5)]))
    assert no_ref.startswith("No headline")


def test_bad_settings_are_refused_with_the_fix(tmp_path: Path, tiny_text_dir: Path):
    with pytest.raises(ConfigError, match=r"'fractions' .* in \(0, 1\].*Got \[0\.0, 1\.5\]"):
        CurveConfig(fractions=[0.0, 1.5])
    with pytest.raises(ConfigError, match=r"'strategies' .*extract, finetune.*Got \['transfer'\]"):
        CurveConfig(strategies=["extract", "transfer"])
    with pytest.raises(ConfigError, match="'seeds'"):
        CurveConfig(seeds=0)
    from conftest import text_examples

    ex = text_examples(40)
    table = tmp_path / "reviews.csv"
    table.write_text(
        "text,label\n"
        + "".join(f"{t},{ex.classes[y]}\n" for t, y in zip(ex.inputs, ex.labels, strict=True))
    )
    # On text, "scratch" brings the small text CNN, trained on a vocabulary of its cell's texts.
    res = run_curve(str(table), out=str(tmp_path / "o"), strategies=["scratch"], fractions=[1.0],
                    seeds=1, backbone=f"local-dir:{tiny_text_dir}", progress=False,
                    **FAST)  # fmt: skip
    assert [r["strategy"] for r in res.rows] == ["scratch", "cnn"]
    (cnn_cell,) = [json.loads(p.read_text()) for p in (res.out / "cells").glob("cnn-*.json")]
    assert 0 < cnn_cell["detail"]["vocabulary"] < 200
    from headstart.cli.curve import parse_fractions

    assert parse_fractions("1%, 10%,1.0") == [0.01, 0.1, 1.0]
    with pytest.raises(ConfigError, match="comma-separated fractions"):
        parse_fractions("0.1;0.2")


# ------------------------------------------------------------------------------- tracking
def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_tracker_is_off_by_default_and_names_its_choices(tmp_path: Path):
    with Tracker("none", tmp_path) as t:
        t.log_params({"a": 1})
        t.log_metrics({"x": 1.0}, step=1)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match=r"one of none, tensorboard, mlflow\. Got 'wandb'"):
        Tracker("wandb", tmp_path)


@pytest.mark.parametrize("kind", ["tensorboard", "mlflow"])
def test_a_missing_tracking_package_says_how_to_install_it(kind: str, tmp_path: Path):
    if _importable(kind):
        pytest.skip(f"{kind} is installed here")
    with pytest.raises(ConfigError, match=f"pip install {kind}"):
        Tracker(kind, tmp_path)


@pytest.mark.skipif(not _importable("tensorboard"), reason="pip install tensorboard")
def test_curve_logs_to_tensorboard(study, tmp_path: Path, tiny_vision_dir: Path, pets: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = json.loads((study.out / "curve.json").read_text())["config"]
    again = run_curve(CurveConfig(**{**cfg, "track": "tensorboard"}), progress=False)
    assert again.computed == []  # the cells are reused; only the logging is new
    ea = EventAccumulator(str(study.out / "tb"))
    ea.Reload()
    ft = [(e.step, e.value) for e in ea.Scalars("finetune/test_accuracy")]
    expect = [
        (r["n_labelled"], r["accuracy_mean"]) for r in study.rows if r["strategy"] == "finetune"
    ]
    assert [s for s, _ in ft] == [s for s, _ in expect]
    assert [v for _, v in ft] == pytest.approx([v for _, v in expect], abs=1e-6)


@pytest.mark.skipif(not _importable("mlflow"), reason="pip install mlflow")
def test_curve_logs_to_a_local_mlflow_store(study):
    import mlflow

    cfg = json.loads((study.out / "curve.json").read_text())["config"]
    run_curve(CurveConfig(**{**cfg, "track": "mlflow"}), progress=False)
    mlflow.set_tracking_uri("sqlite:///" + str((study.out / "mlflow.db").resolve()))
    runs = mlflow.search_runs(experiment_names=["headstart"], output_format="list")
    assert len(runs) == 1 and runs[0].data.params["seeds"] == "2"
    history = mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "extract/test_accuracy")
    assert sorted(m.step for m in history) == [12, 48]


def test_scratch_training_normalises_with_batch_statistics():
    """A random network has no pretrained BatchNorm statistics to keep: from scratch, every
    BN layer's running statistics must follow the data (fine-tuning's default keeps them)."""
    import torch

    from headstart.backbones.registry import load_backbone
    from headstart.curve import scratch_config
    from headstart.heads import HeadModule
    from headstart.strategies.training import finetune
    from test_finetune import image_examples

    torch.manual_seed(0)
    bb = load_backbone("torchvision:mobilenet_v3_small", pretrained=False, image_size=32)
    train, val = image_examples(32), image_examples(16, seed=1)
    d = bb.feature_dim
    head = HeadModule(np.zeros(d), np.ones(d), torch.nn.Linear(d, 2))
    before = {k: v.clone() for k, v in bb.state_dict().items() if k.endswith("running_var")}
    assert before, "the test needs BatchNorm layers"
    cfg = CurveConfig.build(data="x", epochs=1, scratch_epochs=1, scratch_min_steps=1,
                            finetune_batch_size=16)  # fmt: skip
    ft = scratch_config(cfg, len(train), 1e-3)
    assert ft.unfreeze == -1 and ft.lr_ratio == 1.0
    finetune(bb, head, train, val, ft, progress=False)
    after = bb.state_dict()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []


def test_text_cnn_tokens_vocabulary_and_head_tail_truncation():
    from headstart.baselines.cnn import build_vocab, text_ids, text_words

    docs = text_words(["A great film.<br /><br />Great cast, don't miss it", "Dull. DULL plot"])
    assert docs[0] == ["a", "great", "film", "great", "cast", "don't", "miss", "it"]
    vocab = build_vocab(docs, min_count=2)
    assert vocab == {"great": 2, "dull": 3}  # seen twice; 0 = padding, 1 = unknown
    ids = text_ids(docs, vocab, max_len=4)
    # 8 words > 4: the first two and the last two are kept
    assert ids.tolist() == [[1, 2, 1, 1], [3, 3, 1, 0]]


def test_text_cnn_learns_words_that_decide_the_label():
    """Trained from scratch on 240 short texts whose label is set by one of four words among
    random filler, the text CNN classifies 80 new texts almost perfectly (chance: 0.5)."""
    from headstart.baselines.cnn import SmallTextCNN, build_vocab, text_ids

    rng = np.random.default_rng(0)
    filler = [f"w{i}" for i in range(300)]
    cue = {0: ["awful", "boring"], 1: ["superb", "moving"]}

    def make(n: int) -> tuple[list[list[str]], np.ndarray]:
        y = rng.integers(0, 2, n)
        docs = []
        for label in y:
            d = list(rng.choice(filler, 20))
            d.insert(int(rng.integers(0, 21)), str(rng.choice(cue[int(label)])))
            docs.append(d)
        return docs, y

    (dt, yt), (dv, yv), (de, ye) = make(240), make(60), make(80)
    vocab = build_vocab(dt)
    cnn = SmallTextCNN(vocab_size=len(vocab) + 2, epochs=8, min_steps=100, batch_size=32, seed=0)
    cnn.fit(text_ids(dt, vocab), yt, text_ids(dv, vocab), yv, 2)
    acc = float(np.mean(cnn.predict_proba(text_ids(de, vocab)).argmax(1) == ye))
    assert acc >= 0.9, acc
    assert cnn.n_params_ == sum(p.numel() for p in cnn.model_.parameters())


def test_auto_runs_the_ladder_as_one_strategy_and_the_headline_says_what_a_user_gets(
    tmp_path: Path, pets: Path, tiny_vision_dir: Path
):
    res = run_curve(str(pets), out=str(tmp_path / "c"), fractions=[1.0], seeds=1,
                    strategies=["baseline", "extract", "auto"], time_budget_s=120.0,
                    backbone=f"local-dir:{tiny_vision_dir}", progress=False, **FAST)  # fmt: skip
    cells = _cells(res.out)
    auto = cells["auto-f1-seed0"]
    # 48 images: under the ladder's floor, so extraction is the only transfer rung; then the
    # baseline contends (a random tiny backbone may well lose to pixels)
    # (after the small CNN's line: 120 s cannot spare it half the time left here, or can)
    ladder_reasons = [r for r in auto["detail"]["reasons"] if "small CNN" not in r]
    assert ladder_reasons[0].startswith("feature extraction reached")
    assert auto["detail"]["rungs"] == ["feature extraction"]
    chosen = auto["detail"]["chosen"]
    assert chosen in (
        "feature extraction",
        "baseline (pixels+logreg)",
        "baseline (small-cnn)",  # where the machine can spare the CNN half the time left
    ) or chosen.startswith("stack")
    # same split: auto's kept model is the extract (or baseline) cell's model
    assert auto["split"] == cells["extract-f1-seed0"]["split"]
    if chosen == "feature extraction":
        assert auto["test"]["accuracy"] == cells["extract-f1-seed0"]["test"]["accuracy"]
    elif chosen == "baseline (pixels+logreg)":
        assert auto["test"]["accuracy"] == cells["baseline-f1-seed0"]["test"]["accuracy"]
    assert res.headline.startswith("With 100% of the labels (48 examples), headstart's default")
    assert "at 1 of 1 label budgets" in res.headline or "at 0 of 1 label budgets" in res.headline
    doc = json.loads((res.out / "curve.json").read_text())
    assert doc["config"]["time_budget_s"] == 120.0


def test_against_references_counts_budgets_where_auto_matches_the_best_non_transfer_model():
    from headstart.curve.summary import against_references

    def row(strategy: str, fraction: float, acc: float) -> dict:
        return {"strategy": strategy, "fraction": fraction, "accuracy_mean": acc}

    rows = [row("auto", 0.01, 0.80), row("cnn", 0.01, 0.78), row("baseline", 0.01, 0.81),
            row("auto", 0.1, 0.88), row("cnn", 0.1, 0.86), row("extract", 0.1, 0.95)]  # fmt: skip
    v = against_references(rows, "auto")
    assert (v["at_least"], v["of"]) == (1, 2)
    assert [p["reference"] for p in v["budgets"]] == ["baseline", "cnn"]  # extract is transfer
    assert "below it at 1% (80.0 vs 81.0, pixels/TF-IDF + logistic regression)" in v["text"]
    assert against_references([row("auto", 0.1, 0.9)], "auto") == {}


def test_study_labels_name_what_each_reference_is_on_the_data():
    from headstart.curve.summary import against_references, text_table
    from headstart.report.plots import plot_learning_curve

    def row(strategy: str, fraction: float, acc: float) -> dict:
        return {"strategy": strategy, "fraction": fraction, "accuracy_mean": acc,
                "accuracy_std": 0.01, "n_labelled": int(fraction * 4000), "n_seeds": 1}  # fmt: skip

    rows = [row("auto", 0.1, 0.77), row("cnn", 0.1, 0.70), row("baseline", 0.1, 0.80)]
    text = against_references(rows, "auto", "text")["text"]
    assert "(77.0 vs 80.0, TF-IDF + logistic regression)" in text and "pixels" not in text
    table = text_table(rows, markdown=True, modality="text")
    assert "| text CNN from scratch | TF-IDF + logistic regression |" in table
    assert "pixels + logistic regression" in text_table(rows, modality="image")
    assert "pixels/TF-IDF" in text_table(rows)  # no modality: the generic name
    assert plot_learning_curve(rows, "imdb", "text").startswith(b"\x89PNG")
    cells = [{"strategy": s, "fraction": f, "seed": 0, "seconds": 1.0, "n_labelled": int(f * 4000),
              "test": {"accuracy": a, "macro_f1": a}}
             for s, f, a in (("auto", 0.1, 0.8), ("cnn", 0.5, 0.76))]  # fmt: skip
    said, _ = headline(summarise_cells(cells), "text")
    assert "(2,000 examples; a small text CNN)" in said
