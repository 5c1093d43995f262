"""The ladder's first fine-tuning rung follows the domain; rungs are compared paired."""

from __future__ import annotations

import json

import numpy as np
import pytest

from headstart.cli import fit as fit_cli
from headstart.cli.flags import config_from_args
from headstart.cli.main import build_parser
from headstart.config import FinetuneConfig, LadderConfig
from headstart.plan import epochs_that_fit, finetune_estimate, predicted_gain
from headstart.strategies.ladder import (
    FAR_LR_RATIO,
    FAR_MAX_EPOCHS,
    NEAR_LR_RATIO,
    UNKNOWN_LR_RATIO,
    Decision,
    Rung,
    choose,
    first_rung,
    gate,
    next_step,
)


def _first(verdict, *, n_train=4000, batch_size=32, distance=None, **cfg):
    return first_rung(
        verdict=verdict,
        distance=distance,
        n_train=n_train,
        batch_size=batch_size,
        n_groups=9,
        ladder_cfg=LadderConfig(),
        finetune_cfg=FinetuneConfig(**cfg),
    )


# ------------------------------------------------------------------ the rule, pure
def test_far_data_tunes_every_group_at_the_top_of_the_rule_for_about_1000_steps():
    rung = _first("far", distance=1.02)
    # the measured run: 4,000 training images at batch 32 = 125 steps per epoch
    assert (rung.unfreeze, rung.lr_ratio, rung.epochs) == (9, FAR_LR_RATIO, 8)
    assert rung.patience == 3 and rung.bn == "frozen"
    assert "far from the pretraining domain" in rung.reason and "1.02" in rung.reason
    assert "8 epochs" in rung.reason and "/ 10" in rung.reason
    assert ". " not in rung.reason and not rung.reason.endswith(".")  # one sentence
    # the length is clamped: never below the configured epochs, never above 20
    assert _first("far", n_train=100_000).epochs == FinetuneConfig().epochs
    assert _first("far", n_train=100_000, epochs=7).epochs == 7
    assert _first("far", n_train=100).epochs == FAR_MAX_EPOCHS
    assert _first("far", batch_size=64).epochs == 16  # 63 steps per epoch
    # the configured batch-statistics mode gives way to the pretrained statistics
    assert _first("far", bn="train").bn == "frozen"


def test_near_data_tunes_the_top_groups_gently_and_unknown_every_group_in_the_middle():
    near = _first("near", distance=0.1)
    assert (near.unfreeze, near.lr_ratio, near.epochs) == (2, NEAR_LR_RATIO, 5)
    assert near.patience == 2 and "near the pretraining domain" in near.reason
    everything = first_rung(
        verdict="near", distance=None, n_train=4000, batch_size=32, n_groups=9,
        ladder_cfg=LadderConfig(first_unfreeze=-1), finetune_cfg=FinetuneConfig(),
    )  # fmt: skip
    assert everything.unfreeze == 9
    for verdict in ("unknown", None):
        unknown = _first(verdict, epochs=2)
        assert (unknown.unfreeze, unknown.lr_ratio, unknown.epochs) == (9, UNKNOWN_LR_RATIO, 2)
        assert "no calibrated measurement" in unknown.reason


def test_next_step_runs_the_chosen_first_rung_and_says_why():
    rungs = [Rung(0, 0.86, 10.0)]
    kw = dict(n_labelled=5000, min_class_count=500, n_classes=10, n_groups=9, n_val=1000)
    chosen = _first("far", distance=1.0)
    d = next_step(rungs, cfg=LadderConfig(), first=chosen, **kw)
    assert (d.action, d.unfreeze) == ("finetune", 9) and d.reason.endswith(chosen.reason)
    assert d.overrides == {"lr_ratio": 10.0, "epochs": 8, "patience": 3, "bn": "frozen"}
    fixed = next_step(rungs, cfg=LadderConfig(), **kw)
    assert fixed.unfreeze == 2 and fixed.overrides == {}
    # later rungs step as before: after every group, nothing is left to unfreeze
    done = next_step([*rungs, Rung(9, 0.90, 99.0)], cfg=LadderConfig(), first=chosen, **kw)
    assert done.action == "stop" and "every group" in done.reason


def test_a_whole_network_rung_on_far_data_is_not_bounded_by_the_curve_slope():
    # measured: +4.2 validation points on a +0.6-per-doubling curve (bound 1.2 points)
    assert predicted_gain(0.862, "far", 0.006) == pytest.approx(0.012)
    whole = predicted_gain(0.862, "far", 0.006, whole_network=True)
    assert whole == pytest.approx(0.4 * 0.138) and whole > 0.042
    assert predicted_gain(0.862, "near", 0.006, whole_network=True) == pytest.approx(0.006)


# --------------------------------------------------------------- the time cut, pure
def _cost(epochs):
    return finetune_estimate(
        step_s_per_example=0.01, eval_ms_per_example=2.0, n_train=1000, n_val=250, epochs=epochs
    )


def test_the_first_rung_is_cut_to_the_epochs_that_fit_and_refused_below_two():
    per = {"step_s_per_example": 0.01, "eval_ms_per_example": 2.0, "n_train": 1000, "n_val": 250}
    assert epochs_that_fit(**per, time_left_s=_cost(3)) == 3
    assert epochs_that_fit(**per, time_left_s=_cost(3) - 0.01) == 2
    assert epochs_that_fit(**per, time_left_s=0.1) == 0
    assert epochs_that_fit(**per, time_left_s=float("inf")) >= 1000
    d = Decision(
        "finetune", 9, "fine-tuning every group", overrides={"lr_ratio": 10.0, "epochs": 8}
    )
    common = dict(best_val_accuracy=0.86, n_val=1000, cfg=LadderConfig(), budget_s=300.0)
    for left, expected in ((_cost(3) + 1, 3), (_cost(2) + 0.5, 2)):
        fit = epochs_that_fit(**per, time_left_s=left)
        cut = gate(d, **common, estimate_s=_cost(8), time_left_s=left, epochs=8, epochs_fit=fit)
        assert cut.action == "finetune" and cut.overrides == {"lr_ratio": 10.0, "epochs": expected}
        assert f"cut to {expected} of its 8 epochs" in cut.reason
    left = _cost(2) - 1  # not even two epochs: refused, with the flag that buys all eight
    fit = epochs_that_fit(**per, time_left_s=left)
    no = gate(d, **common, estimate_s=_cost(8), time_left_s=left, epochs=8, epochs_fit=fit)
    assert no.action == "stop" and no.flag.startswith("--time-budget")
    # without epochs_fit (a later rung, or first_rung fixed) a rung that does not fit is refused
    assert gate(d, **common, estimate_s=_cost(8), time_left_s=_cost(3)).action == "stop"
    # a rung that fits is left alone
    assert gate(d, **common, estimate_s=_cost(8), time_left_s=_cost(9), epochs=8, epochs_fit=9) is d


def test_the_flag_of_a_refused_first_rung_carries_its_settings():
    d = Decision("finetune", 9, "x", overrides={"lr_ratio": 10.0, "epochs": 8, "bn": "frozen"})
    no = gate(d, best_val_accuracy=0.99, n_val=100, cfg=LadderConfig(), expected_gain=0.001)
    assert no.flag == "--strategy finetune --unfreeze 9 --lr-ratio 10 --epochs 8 --bn frozen"


# ------------------------------------------------------------ paired comparison, pure
def _correct(n, right, rng):
    out = np.zeros(n, np.int8)
    out[rng.choice(n, right, replace=False)] = 1
    return out


def test_paired_errors_keep_a_consistent_lead_the_binomial_error_calls_noise():
    n = 200
    base = _correct(n, 168, np.random.default_rng(0))  # 0.84
    better = base.copy()
    better[np.flatnonzero(base == 0)[:7]] = 1  # right on 7 more, wrong on none: 0.875
    plain = [Rung(0, base.mean(), 1.0), Rung(2, better.mean(), 9.0)]
    keep, why = choose(plain, n_val=n, cfg=LadderConfig())  # binomial: 2 SE = 4.7 points
    assert keep.unfreeze == 0 and "2 standard errors" in why
    paired = [Rung(0, base.mean(), 1.0, correct=base), Rung(2, better.mean(), 9.0, correct=better)]
    keep, why = choose(paired, n_val=n, cfg=LadderConfig())  # paired: 2 SE = 2.6 points
    assert keep.unfreeze == 2 and why is None


def test_paired_errors_call_noise_a_lead_the_binomial_error_would_keep():
    n = 100
    cheap = np.zeros(n, np.int8)
    cheap[:75] = 1  # 0.75
    costly = np.zeros(n, np.int8)
    costly[:60] = 1  # right on 60 that cheap also gets right, wrong on 15 it gets ...
    costly[75:] = 1  # ... and right on the 25 it misses: 0.85, 40 disagreements
    plain = [Rung(0, 0.75, 1.0), Rung(2, 0.85, 9.0)]
    assert choose(plain, n_val=n, cfg=LadderConfig())[0].unfreeze == 2  # 2 SE: 7.1 points
    paired = [Rung(0, 0.75, 1.0, correct=cheap), Rung(2, 0.85, 9.0, correct=costly)]
    keep, why = choose(paired, n_val=n, cfg=LadderConfig())  # paired 2 SE: 12.5 points
    assert keep.unfreeze == 0
    assert "paired standard errors = 12.5 points" in why and "disagree on 40" in why


def test_paired_comparison_needs_both_arrays_of_the_same_length():
    a = np.ones(10, np.int8)
    rungs = [Rung(0, 0.84, 1.0, correct=a), Rung(2, 0.87, 9.0)]
    keep, why = choose(rungs, n_val=200, cfg=LadderConfig())
    assert keep.unfreeze == 0 and "paired" not in why


# --------------------------------------------------------------------- the CLI switch
def _cfg(*argv):
    args = build_parser().parse_args(["fit", "data", *argv])
    cfg = config_from_args(args, fit_cli.OPTIONS)
    return cfg, fit_cli.first_rung_as_given(args, cfg)


def test_an_explicit_fine_tuning_flag_runs_the_first_rung_as_given():
    cfg, note = _cfg()
    assert cfg.ladder.first_rung == "domain" and note is None
    for flags in (["--epochs", "5"], ["--lr-ratio", "30"], ["--unfreeze", "2"],
                  ["--patience", "3"], ["--ladder-first-unfreeze", "-1"], ["--bn", "frozen"]):  # fmt: skip
        cfg, note = _cfg(*flags)
        assert cfg.ladder.first_rung == "fixed", flags
        assert note is not None and flags[0] in note and "--ladder-first-rung fixed" in note
    cfg, note = _cfg("--epochs", "5", "--ladder-first-rung", "domain")  # asked for: kept
    assert cfg.ladder.first_rung == "domain" and note is None
    cfg, note = _cfg("--epochs", "5", "--strategy", "finetune")  # no ladder: nothing to say
    assert note is None
    cfg, note = _cfg("--lr", "0.01", "--layer-decay", "0.8")  # not the first rung's settings
    assert cfg.ladder.first_rung == "domain" and note is None


# ------------------------------------------------------------------------ end to end
def test_auto_runs_and_records_the_first_rung_the_rule_chose(tiny_vision_dir, tmp_path):
    """The tiny backbone has no calibrated reference: unknown, so every group at /30."""
    from headstart.estimator import TransferClassifier
    from test_strategies import noisy_images

    x, y = noisy_images(80)
    clf = TransferClassifier(
        backbone=f"local-dir:{tiny_vision_dir}",
        engine="torch",
        cache_dir=str(tmp_path / "cache"),
        strategy="auto",
        # keep_start off: the rung's own last epoch is what it hands back (checked below)
        finetune=FinetuneConfig(epochs=1, batch_size=16, keep_start=False),
        # the rung under test; the CNN contender has its own tests (tests/test_contend.py)
        ladder=LadderConfig(
            min_examples=20, min_per_class=5, max_rungs=1, noise_z=0.0, contend_cnn=False
        ),
    ).fit(x, y)
    decisions = json.loads(json.dumps(clf.decisions_, allow_nan=False))  # JSON-able
    n_groups = len(clf.extraction_.backbone.layer_groups())
    first = decisions["first_rung"]
    assert first["mode"] == "domain" and first["unfreeze"] == n_groups
    assert first["lr_ratio"] == UNKNOWN_LR_RATIO and first["epochs"] == 1
    assert "no calibrated measurement" in first["reason"]
    rung = decisions["rungs"][1]
    # the ladder's rung keeps its last epoch ("auto" resolved), and says so
    assert first["keep_epoch"] == "last" and "last epoch" in rung["stopped"]
    assert rung["best_epoch"] == rung["epochs_run"]
    assert (rung["unfreeze"], rung["lr_ratio"], rung["epochs"]) == (n_groups, 30.0, 1)
    assert rung["lrs"]["head"] / 30.0 == pytest.approx(min(rung["lrs"].values()))
    assert first["reason"] in decisions["reasons"][0]
    assert all("correct" not in r for r in decisions["rungs"])
