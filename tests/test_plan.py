"""The cost model (headstart.plan), the rung gate and the input-size rule, on scripted costs
and scores; then the gate inside the real ladder on a tiny backbone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from headstart.backbones.sizing import input_size, native_size
from headstart.config import FinetuneConfig, LadderConfig
from headstart.data.base import Examples
from headstart.plan import (
    DEFAULT_TIME_BUDGET_S,
    LOAD_S,
    MIN_TEST,
    MIN_WINDOW,
    RANK_SHARE,
    TEST_SHARE,
    effective_tokens,
    estimate_ms,
    finetune_estimate,
    fit_window,
    measured_ms,
    plan_ranking,
    plan_test_size,
    predicted_gain,
    resolvable_gain,
)
from headstart.strategies.ladder import Decision, gate


def _rung(k: int = 2) -> Decision:
    return Decision("finetune", k, f"fine-tuning the top {k} groups")


# --------------------------------------------------------------------------- the gate
def test_a_rung_over_budget_is_skipped_with_its_stated_cost():
    d = gate(_rung(), best_val_accuracy=0.80, n_val=2000, cfg=LadderConfig(),
             estimate_s=840.0, time_left_s=20.0, budget_s=60.0, expected_gain=0.08)  # fmt: skip
    assert d.action == "stop" and d.estimated_s == 840.0 and d.expected_gain == 0.08
    assert "~14 min" in d.reason and "20 s of the budget are left" in d.reason
    assert "8.0 points" in d.reason
    # the flag buys what was spent, the rung (with a quarter's slack), and nothing less
    minutes = int(d.flag.removeprefix("--time-budget ").removesuffix("m"))
    assert d.flag in d.reason and minutes * 60 >= 40 + 840
    # the same rung with the time it needs is started
    assert gate(_rung(), best_val_accuracy=0.80, n_val=2000, cfg=LadderConfig(),
                estimate_s=840.0, time_left_s=900.0, budget_s=960.0,
                expected_gain=0.08) == _rung()  # fmt: skip


def test_a_rung_the_validation_split_cannot_resolve_is_skipped_before_it_costs_anything():
    cfg = LadderConfig()
    margin = resolvable_gain(0.84, 200, cfg.noise_z)
    assert margin == pytest.approx(2 * math.sqrt(0.84 * 0.16 / 200))
    d = gate(_rung(), best_val_accuracy=0.84, n_val=200, cfg=cfg,
             expected_gain=margin - 0.001)  # fmt: skip
    assert d.action == "stop" and "200 validation examples" in d.reason
    assert d.flag == "--strategy finetune --unfreeze 2"
    # five times the validation split resolves the same expected gain
    assert gate(_rung(), best_val_accuracy=0.84, n_val=1000, cfg=cfg,
                expected_gain=margin - 0.001).action == "finetune"  # fmt: skip
    # noise_z=0 keeps the plain best, so nothing is unresolvable
    assert gate(_rung(), best_val_accuracy=0.84, n_val=200, cfg=LadderConfig(noise_z=0),
                expected_gain=0.0).action == "finetune"  # fmt: skip


def test_predicted_gain_is_a_share_of_the_error_left_larger_far_from_the_source():
    assert predicted_gain(0.8, "far") == pytest.approx(0.08)
    assert predicted_gain(0.8, "near") < predicted_gain(0.8, "far")
    assert predicted_gain(0.8, None) == predicted_gain(0.8, "far")  # unknown: optimistic
    assert predicted_gain(1.0, "far") == 0.0
    # a measured learning curve caps it: 2 doublings far, 1 near, nothing when flat
    assert predicted_gain(0.8, "far", curve_slope=0.02) == pytest.approx(0.04)
    assert predicted_gain(0.8, "near", curve_slope=0.02) == pytest.approx(0.02)
    assert predicted_gain(0.8, "far", curve_slope=-0.01) == 0.0
    assert predicted_gain(0.8, "far", curve_slope=0.5) == pytest.approx(0.08)  # headroom wins


@pytest.mark.parametrize(
    ("step_ms", "eval_ms", "expected"),
    [(500.0, 50.0, "stop"), (2.0, 0.5, "finetune")],  # a 2-core CPU vs a GPU, mobilenet_v2
)
def test_the_default_budget_buys_fine_tuning_on_a_fast_machine_only(step_ms, eval_ms, expected):
    """One default budget; the measured speed decides (5,000 labels, 1,000 validation)."""
    spent = 12.0  # data, backbone, extraction and the head, on either machine
    estimate = finetune_estimate(step_s_per_example=step_ms / 1000, eval_ms_per_example=eval_ms,
                                 n_train=4000, n_val=1000, epochs=5)  # fmt: skip
    d = gate(_rung(), best_val_accuracy=0.85, n_val=1000, cfg=LadderConfig(),
             estimate_s=estimate, time_left_s=DEFAULT_TIME_BUDGET_S - spent,
             budget_s=DEFAULT_TIME_BUDGET_S, expected_gain=predicted_gain(0.85, "far"))  # fmt: skip
    assert d.action == expected
    if expected == "stop":
        assert d.estimated_s == pytest.approx(estimate, rel=0.01) and "--time-budget" in d.flag


# ------------------------------------------------------------------------ test split
def test_the_test_split_is_subsampled_only_when_it_would_dominate_the_budget():
    # 10,000 images at 12 ms: 120 s, more than 35 % of 60 s
    n, why = plan_test_size(10_000, 12.0, 60.0)
    assert n == int(TEST_SHARE * 60 / 0.012) and "10,000" in why and "--test-size all" in why
    assert plan_test_size(10_000, 12.0, 60.0, requested="all") == (10_000, None)
    assert plan_test_size(10_000, 12.0, 60.0, requested=500) == (500, None)
    assert plan_test_size(10_000, 1.0, 60.0) == (10_000, None)  # 10 s: fits
    assert plan_test_size(10_000, 12.0, math.inf) == (10_000, None)
    # never below MIN_TEST, however slow the backbone
    assert plan_test_size(10_000, 500.0, 60.0)[0] == MIN_TEST
    assert plan_test_size(MIN_TEST - 100, 500.0, 60.0) == (MIN_TEST - 100, None)
    # after the fit the share no longer keeps time for training: only the time left counts
    # (10,000 at 12 ms: 120 s; 35 % of a 300 s budget is 105 s)
    assert plan_test_size(10_000, 12.0, 300.0, time_left_s=150.0)[0] < 10_000
    assert plan_test_size(10_000, 12.0, 300.0, time_left_s=150.0, share=1.0) == (10_000, None)
    n, why = plan_test_size(10_000, 12.0, 300.0, time_left_s=60.0, share=1.0)
    assert n == 5_000 and "60 s" in why


def test_measured_speed_counts_only_computed_extractions():
    log = [
        {"n": 800, "examples_per_s": 200.0, "cached": False},  # 4 s
        {"n": 200, "examples_per_s": 100.0, "cached": False},  # 2 s
        {"n": 5000, "examples_per_s": 1e6, "cached": True},  # read back: says nothing
    ]
    assert measured_ms(log) == pytest.approx(6.0)  # 6 s over 1,000 examples
    assert measured_ms(log[2:]) is None


# ---------------------------------------------------------------------------- ranking
def test_ranking_leaves_out_what_the_budget_cannot_afford():
    est = {"default": 10.0, "cheap": 12.0, "slow": 300.0, "unknown": None}
    # default + cheap: 2 x LOAD_S + (10 + 12) ms x 300
    cost = 2 * LOAD_S + 22 * 0.3
    big, small = 1.2 * cost / RANK_SHARE, 0.8 * cost / RANK_SHARE
    order, steps = plan_ranking(est, default="default", n_job=2500, sample=300, budget_s=big)
    skipped = {s.name: s for s in steps}
    # 300 ms x 2,500 = 750 s: more than the budget, not extracted at all, its estimate stated
    assert big < 750 and skipped["rank slow"].estimated_s == 750.0
    assert "12 min" in skipped["rank slow"].reason
    assert "unknown" in skipped["rank unknown"].reason
    assert order == ["default", "cheap"]
    # a smaller budget drops the costliest until ranking fits its share; one left: no ranking
    order, steps = plan_ranking(est, default="default", n_job=2500, sample=300, budget_s=small)
    assert order == ["default"] and any(s.name == "rank cheap" for s in steps)
    assert all(s.flag and s.flag.startswith("--time-budget") for s in steps if s.estimated_s)
    # unlimited: everything with a known cost is ranked, the default first
    order, _ = plan_ranking(est, default="default", n_job=2500, sample=300, budget_s=math.inf)
    assert order[0] == "default" and set(order) == set(est)


def test_estimated_speed_scales_with_flops_and_pixels():
    # measured: 10 ms for a 0.3-GFLOP model run at its pretraining size
    assert estimate_ms(10.0, 0.3, 0.6, 224, 224) == pytest.approx(20.0)
    assert estimate_ms(10.0, 0.3, 0.6, 112, 224) == pytest.approx(5.0)
    assert estimate_ms(10.0, 0.3, None, 224, 224) is None


def test_a_text_window_is_shortened_to_the_longest_that_fits_the_budget():
    lengths = [50, 150, 300, 600]  # tokens in four texts
    # at 384 tokens the texts cost 50 + 150 + 300 + 384 = 884 tokens, 221 on average
    assert effective_tokens(lengths, 384) == pytest.approx(221.0)
    assert effective_tokens(lengths, 128) == pytest.approx((50 + 128 * 3) / 4)
    # in padded batches of 2 (sorted: 50, 150 | 300, 384) each pays its batch's longest
    assert effective_tokens(lengths, 384, batch=2) == pytest.approx((2 * 150 + 2 * 384) / 4)
    # 1 ms per token, 10,000 texts: 2,210 s at 384; a 1,500 s budget fits 192 tokens
    # ((50 + 150 + 2 x 192) / 4 = 146 tokens, 1,460 s); 224 would be 162 tokens, 1,620 s
    assert fit_window(1.0, lengths, 384, 10_000, 1_500.0) == 192
    assert fit_window(1.0, lengths, 384, 10_000, 3_000.0) == 384  # fits whole: unchanged
    assert fit_window(1.0, lengths, 384, 10_000, math.inf) == 384
    # below MIN_WINDOW the candidate is left out rather than cut to a few words
    floor_s = effective_tokens(lengths, MIN_WINDOW) * 10_000 / 1000
    assert fit_window(1.0, lengths, 384, 10_000, floor_s) == MIN_WINDOW
    assert fit_window(1.0, lengths, 384, 10_000, 0.99 * floor_s) is None


def test_the_backbone_choice_shortens_a_text_candidate_the_budget_cannot_read_whole():
    from headstart.backbones.hf import text_window
    from headstart.backbones.names import parse_name

    # the cheapest installed text model stands for the default; the others' estimates are
    # FLOPs-scaled from it. Needs the offline models: bash scripts/setup.sh --dev
    from headstart.backbones.registry import load_backbone
    from headstart.data.base import Splits
    from headstart.plan import Budget
    from headstart.selection.budgeted import _fit_windows

    default = "hf:sentence-transformers/paraphrase-MiniLM-L3-v2"
    big = "hf:sentence-transformers/all-mpnet-base-v2"
    if text_window(parse_name(big)[1]) is None or text_window(parse_name(default)[1]) is None:
        pytest.skip("the offline sentence encoders are not installed: bash scripts/setup.sh --dev")
    assert text_window(parse_name(big)[1]) == 384  # its sentence-transformers window
    d_bb = load_backbone(default)
    d_window = d_bb.preprocess.max_length
    texts = [" ".join(["word"] * 400)] * 40  # 400 words: longer than any window here
    ex = Examples("text", texts, np.arange(40) % 2, ["a", "b"])
    splits = Splits(ex, ex, None, ["a", "b"])

    # the default: 1 ms per example at its window; mpnet 16x its FLOPs per token, so
    # 16 / d_window ms per token. Estimates that fit are not measured again:
    def not_probed(name, window):
        raise AssertionError(f"{name} was probed at {window} although its estimate fits")

    at = {w: 16.0 * w / d_window for w in (256, 288, 384)}
    est = {default: 1.0, big: 16.0}
    budget = Budget(1.01 * at[384] * 10_000 / 1000 / (1 - RANK_SHARE))  # 384 tokens fit
    windows = _fit_windows(d_bb, default, est, splits, 40, 10_000, budget, not_probed)
    assert windows == {} and est[big] == pytest.approx(at[384])

    def fits_256():  # a fresh budget each time: the clock runs on a Budget
        return Budget(0.5 * (at[256] + at[288]) * 10_000 / 1000 / (1 - RANK_SHARE))

    est = {default: 1.0, big: 16.0}
    budget = fits_256()
    windows = _fit_windows(d_bb, default, est, splits, 40, 10_000, budget, not_probed)
    assert windows == {big: 256} and est[big] == pytest.approx(at[256])
    step = next(s for s in budget.steps if s.name == f"window {big}")
    assert step.action == "reduced" and "256 of its 384 tokens" in step.reason
    # what the whole window would cost, and the budget that buys it (24 ms x 10,000 = 240 s
    # within 85% of the budget: 283 s, 5 minutes)
    assert step.estimated_s == pytest.approx(at[384] * 10) and step.flag == "--time-budget 5m"
    # the budget fits 256 tokens at 16 / d_window ms per token, so 128 at twice that rate,
    # 32 ms per d_window tokens. FLOPs saying 1.5x that are within FLOPS_SLACK: the candidate
    # is measured, and the measurement decides. At a constant rate per token (at[w]) it
    # says 256 tokens fit, and the second probe at 256 changes nothing
    est = {default: 1.0, big: 1.5 * 32.0}
    budget, probed = fits_256(), []

    def constant(name, window):
        probed.append(window)
        return 16.0 * window / d_window

    windows = _fit_windows(d_bb, default, est, splits, 40, 10_000, budget, constant)
    assert windows == {big: 256} and est[big] == pytest.approx(at[256])
    assert probed == [384, 256]  # its own window first, then the one that fits
    probe = next(s for s in budget.steps if s.name == f"speed probe {big}")
    assert "within 2x of fitting" in probe.reason and "per token at 256" in probe.reason

    # a token costing less in a shorter window (5/6 of the rate at 384 when measured at
    # 256): linear between the two, 288 tokens cost 0.875 x 288 = 252 at the 384 rate and
    # fit the 272 the budget holds; 320 would cost 0.917 x 320 = 293
    def attention(name, window):
        return 16.0 / d_window * window * (window + 384) / 768

    est = {default: 1.0, big: 1.5 * 32.0}
    windows = _fit_windows(d_bb, default, est, splits, 40, 10_000, fits_256(), attention)
    assert windows == {big: 288}
    # beyond the slack it is left out unmeasured, at its estimate
    est = {default: 1.0, big: 3 * 32.0}
    assert _fit_windows(d_bb, default, est, splits, 40, 10_000, fits_256(), not_probed) == {}


# ------------------------------------------------------------------------- input size
def test_input_size_follows_the_data_and_respects_fixed_grids():
    assert input_size(8, 224) == 96  # digits: the object must reach ~96 px
    assert input_size(16, 224) == 128  # 8x, rounded up to a multiple of 32
    assert input_size(28, 224) == 224  # Fashion-MNIST: 8x reaches the pretraining size
    assert input_size(500, 224) == 224 and input_size(28, 260) == 224
    assert input_size(8, 224, "hf:facebook/dinov2-small") == 224  # position embeddings
    assert input_size(8, 224, "torchvision:vit_b_16") == 224
    assert input_size(None, 240) == 240


def test_native_size_reads_arrays_and_image_headers(tmp_path):
    from PIL import Image

    arr = Examples("image", np.zeros((3, 28, 20), np.uint8), np.array([0, 1, 0]), ["a", "b"])
    assert native_size(arr) == 28
    paths = []
    for i, (w, h) in enumerate([(40, 30), (64, 48), (50, 50)]):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (w, h)).save(p)
        paths.append(str(p))
    assert native_size(Examples("image", paths, np.array([0, 1, 0]), ["a", "b"])) == 50
    assert native_size(Examples("text", ["x", "y"], np.array([0, 1]), ["a", "b"])) is None


# ------------------------------------------------------------- the gate in the ladder
def _auto(tiny_vision_dir, tmp_path, budget):
    from headstart.estimator import TransferClassifier
    from test_strategies import noisy_images

    x, y = noisy_images(80)
    return TransferClassifier(
        backbone=f"local-dir:{tiny_vision_dir}",
        engine="torch",
        cache_dir=str(tmp_path / "cache"),
        strategy="auto",
        time_budget_s=budget,
        finetune=FinetuneConfig(epochs=1, batch_size=16),
        ladder=LadderConfig(
            min_examples=20, min_per_class=5, max_rungs=1, noise_z=0.0, first_rung="fixed"
        ),
    ).fit(x, y)


def test_the_ladder_measures_a_rung_and_skips_it_when_it_does_not_fit(tiny_vision_dir, tmp_path):
    """A real probe on a tiny backbone: with no time left the rung is refused with its
    measured estimate; with time, the same rung runs."""
    starved = _auto(tiny_vision_dir, tmp_path, 1e-3)
    assert [r["unfreeze"] for r in starved.decisions_["rungs"]] == [0]
    skips = {s["step"]: s for s in starved.decisions_["skipped"]}
    (skip,) = [s for step, s in skips.items() if step.startswith("fine-tuning")]
    assert skips["the small CNN contender"]["needs_s"] > 0  # no time for the CNN either
    assert skip["estimated_s"] > 0 and skip["flag"].startswith("--time-budget")
    assert skip["reason"] in starved.decisions_["reasons"]
    # an hour: room for the rung and the CNN contender (500 steps) even on a loaded machine
    fed = _auto(tiny_vision_dir, tmp_path, 3600.0)
    assert [r["unfreeze"] for r in fed.decisions_["rungs"]] == [0, 2]
    assert "skipped" not in fed.decisions_


def test_a_requested_test_size_counts_whole_in_the_backbone_choice():
    from headstart.data.base import Examples, Splits
    from headstart.selection.budgeted import test_in_job

    def ex(n):
        return Examples("text", [f"text {i}" for i in range(n)], np.arange(n) % 2, ["a", "b"])

    splits = Splits(ex(100), ex(20), ex(5000), ["a", "b"])
    assert test_in_job(splits, "auto") == MIN_TEST  # the planner may cut it to this
    assert test_in_job(splits, 5000) == 5000  # asked for: scored whatever the budget
    assert test_in_job(splits, "all") == 5000
    assert test_in_job(Splits(ex(100), ex(20), None, ["a", "b"]), 7) == 0
