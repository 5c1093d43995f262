"""End to end on real offline weights and real data (see README, "Offline weights").

Each test skips, naming the install command, when its package or data set is missing.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from headstart.backbones import load_backbone
from headstart.backbones.offline import OFFLINE_SOURCES, locate_raw
from headstart.config import FitConfig
from headstart.data import get_builtin
from headstart.fit import fit_run

pytestmark = pytest.mark.integration


def need_weights(name: str) -> None:
    if locate_raw(name) is None:
        pytest.skip(f"{name} weights missing: {OFFLINE_SOURCES[name].install_command}")


def need_data(name: str) -> None:
    ds = get_builtin(name)
    if not ds.is_installed():
        pytest.skip(f"data set {name} missing: {' or '.join(ds.install)}")


def test_mobilenet_v2_recognises_a_real_photo():
    need_weights("torchvision:mobilenet_v2")
    from sklearn.datasets import load_sample_image

    from headstart.features.preprocess import image_tensor

    bb = load_backbone("torchvision:mobilenet_v2")
    x = image_tensor(load_sample_image("china.jpg")[None], bb.preprocess)
    logits = bb.source_logits(bb(x)).detach()
    top5 = [bb.source_classes[i] for i in logits[0].topk(5).indices]
    # A Chinese temple roof: ImageNet's closest classes are buildings.
    assert {"palace", "monastery", "pagoda", "church", "dome", "bell cote"} & set(top5), top5


def test_image_transfer_beats_raw_pixels_on_digits(tmp_path):
    need_weights("torchvision:mobilenet_v2")
    need_data("digits")
    cfg = FitConfig.build(
        data="digits",
        out=str(tmp_path / "run"),
        backbone="torchvision:mobilenet_v2",
        strategy="extract",
        train_size=300,
        test_size=300,
        image_size=96,
    )
    r = fit_run(cfg, progress=False)
    m = r.metrics
    assert m["test"]["accuracy"] >= 0.85
    assert m["test"]["accuracy"] > m["baseline"]["test"]["accuracy"] - 0.05
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]["backbone"][
        "weights"
    ]["pretrained"]


def test_sentence_encoder_separates_review_sentiment(tmp_path):
    need_weights("hf:sentence-transformers/all-MiniLM-L6-v2")
    need_data("pang-lee-sentences")
    cfg = FitConfig.build(
        data="pang-lee-sentences",
        out=str(tmp_path / "run"),
        backbone="hf:sentence-transformers/all-MiniLM-L6-v2",
        strategy="extract",
        train_size=400,
        test_size=300,
    )
    m = fit_run(cfg, progress=False).metrics
    assert m["test"]["accuracy"] >= 0.65  # chance is 0.5


@pytest.mark.parametrize("name", ["timm:tf_efficientnet_lite0", "hf:facebook/dinov2-small"])
def test_imported_backbones_give_informative_features(name):
    need_weights(name)
    need_data("digits")
    from headstart.data import load_builtin
    from headstart.features.cache import features_in_memory
    from headstart.heads import LogisticHead

    pool, _ = load_builtin("digits")
    ex = pool.subset(np.arange(0, 400))
    bb = load_backbone(name, image_size=98 if "dinov2" in name else 96)
    F = features_in_memory(bb, ex)
    head = LogisticHead(refit=False).fit(F[:300], ex.labels[:300])
    assert np.mean(head.predict(F[300:]) == ex.labels[300:]) >= 0.7  # chance: 0.1


def test_backbone_auto_ranks_the_installed_candidates_and_fits_the_best(tmp_path):
    from headstart.selection.rank import candidates

    installed = candidates("image")
    if len(installed) < 2:
        pytest.skip("needs two installed image backbones: bash scripts/setup.sh installs them")
    need_data("digits")
    cfg = FitConfig.build(
        data="digits",
        out=str(tmp_path / "run"),
        backbone="auto",
        strategy="extract",
        train_size=200,
        test_size=100,
        image_size=64,
        engine="torch",
        rank_sample=60,
        baseline=False,
        time_budget=math.inf,  # no limit: every candidate is affordable
    )
    r = fit_run(cfg, progress=False)
    decisions = json.loads((tmp_path / "run" / "decisions.json").read_text())
    table = decisions["backbone"]["table"]
    ranked = [row["name"] for row in table["rows"]]
    assert sorted(ranked) == sorted(installed)  # every installed candidate was scored
    assert r.metrics["backbone"] == ranked[0] == decisions["backbone"]["chosen"]
    assert decisions["reasons"][0].startswith(f"backbone {ranked[0]}: ranked first")
    assert r.metrics["test"]["accuracy"] > 0.5  # 10 classes: chance is 0.1


def test_the_default_budget_ranks_only_what_it_can_afford_and_says_what_it_left_out(tmp_path):
    """``headstart fit digits`` as a new user runs it (every setting default), on the real
    installed backbones: the slow candidates are not extracted, each left-out one is named
    with its estimated cost and the flag that ranks it (the wall time is measured by
    benchmarks/bench_ladder.py, not here)."""
    from headstart.selection.rank import candidates

    installed = candidates("image")
    if "hf:facebook/dinov2-small" not in installed or len(installed) < 3:
        pytest.skip("needs the offline image backbones: bash scripts/setup.sh installs them")
    need_data("digits")
    cfg = FitConfig.build(data="digits", out=str(tmp_path / "run"))
    r = fit_run(cfg, progress=False)
    decisions = json.loads((tmp_path / "run" / "decisions.json").read_text())
    steps = {s["name"]: s for s in decisions["steps"]}
    dino = steps["rank hf:facebook/dinov2-small"]  # ~20x mobilenet_v2's FLOPs at 224 px
    assert dino["action"] == "skipped" and dino["estimated_s"] > 0
    assert dino["flag"].startswith("--time-budget")
    assert (
        json.loads((tmp_path / "run" / "config.json").read_text())["resolved"]["image_size"] == 96
    )  # 8-px digits: the input-size rule
    assert decisions["budget"]["time_budget_s"] == 60  # the default (its speed: bench_ladder)
    # 8-px digits, measured far from photos: the small CNN contends, trained (its seconds in
    # the step list) or skipped with the budget that trains it
    (cnn,) = [s for s in decisions["steps"] if "contender" in s["name"]]
    assert (cnn["action"] == "ran" and cnn["seconds"] > 0) or cnn["flag"].startswith(
        "--time-budget"
    )
    base = r.metrics["baseline"]["test"]["accuracy"]
    assert r.metrics["test"]["accuracy"] >= base - 2 * r.metrics["test"]["accuracy_se"]
