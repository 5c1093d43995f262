"""The rule of thumb, run for the user: extract → fine-tune → unfreeze more.

:func:`next_step` is a pure function of what has been measured so far, so every decision
can be tested on scripted score sequences and explained in one sentence. Defaults, and why:

* ``min_examples=1000`` and ``min_per_class=20``: the mission's rule of thumb (feature
  extraction for 100-1,000 labelled examples, fine-tuning from 1,000+), plus enough
  examples of the rarest class that the validation split can register a change in it.
* ``min_gain=0.005``: a rung must add half an accuracy point on validation to justify the
  next, costlier one (and its risk of forgetting).
* ``target=0.995``: above this, extraction is as good as the labels allow.
* ``noise_z=2``: when the climb is over, :func:`choose` keeps the cheapest rung whose
  validation accuracy is within ``noise_z`` standard errors of the best one (the "one
  standard error" rule of model selection, at about 95 % confidence): a costlier rung with
  more risk of forgetting must win by more than the validation split can resolve
  (measured twice on Fashion-MNIST 1,000, 200 validation images: the top-2-groups rung's
  +3.0-point lead and the whole-network far rung's +3.5-point lead, both beyond one paired
  standard error but within two, were 1.2 and 1.65 points *below* extraction on the test
  set; ``benchmarks/RESULTS.md``, issue 12). Rungs are
  scored on the same validation examples, so where both carry their per-example
  correctness the standard error is that of the *paired* difference (McNemar's): it counts
  only the examples on which the two disagree, and is usually well below the binomial
  error of one accuracy. 0 keeps the plain best.
* ``first_rung="domain"``: the first fine-tuning rung follows the measured distance from
  the pretraining domain (:func:`first_rung`: far data trains every group at
  ``lr / 10`` for about :data:`FAR_STEPS` optimiser steps, near data the top
  ``first_unfreeze`` groups at ``lr / 100``, an unmeasured domain every group at
  ``lr / 30``); ``"fixed"`` runs the top ``first_unfreeze`` groups with the fine-tuning
  section's own values.
* ``first_unfreeze=2, step=2, max_rungs=3``: the first rung's groups under ``"fixed"`` (and
  near the domain; -1: all of them, one fine-tuning rung), then two more each rung, at
  most three fine-tuning rungs.

All are overridable (``--ladder-min-gain 0.01``, ``LadderConfig(min_gain=0.01)``) and are
written into ``decisions.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import FinetuneConfig, LadderConfig
from ..plan import budget_flag, format_duration, resolvable_gain
from .base import rung_label

#: Backbone LR = head LR / this on data far from the pretraining domain: the top of the
#: 10-100x rule, because the features themselves must move. Measured (benchmarks/RESULTS.md,
#: issue 3): mobilenet_v2 on Fashion-MNIST 5,000, every group at /10 gained +3.55 test points
#: over extraction; the top 2 or 4 groups at /30 gained +0.1 and +0.3.
FAR_LR_RATIO = 10.0
#: ... near the domain: the bottom of the rule. The pretrained features already fit the data,
#: so the rung adjusts the top groups gently and keeps the most of what pretraining learned.
NEAR_LR_RATIO = 100.0
#: ... when no calibrated measurement decides (text encoders, backbones without a shipped
#: reference): the geometric middle of the rule, sqrt(10 x 100) ~ 30. It is also the
#: standard recipe for transformer encoders, every layer at 2e-5..5e-5 against a head near
#: 1e-3 (/20../50); measured: MiniLM on IMDB 2,000, every layer at /30 for 2 epochs,
#: +7.6 test points over extraction.
UNKNOWN_LR_RATIO = 30.0
#: Optimiser steps a far-domain rung is given (its epochs follow from the training set and
#: the batch): the measured whole-network run above peaked at epoch 7 of 8 at 125 steps per
#: epoch, i.e. after ~900 of 1,000 steps; 5 epochs (625 steps) were not enough to move the
#: top groups of the same network.
FAR_STEPS = 1000
#: ... but at most this many epochs: on a small training set 1,000 steps would mean hundreds
#: of passes over the same images, where overfitting, not the step count, sets the limit.
FAR_MAX_EPOCHS = 20
#: Early-stopping patience of a far-domain rung: a whole network at a high rate has a noisy
#: validation curve in its longer schedule (the measured runs used 3).
FAR_PATIENCE = 3
#: A first rung whose estimated cost exceeds the time left is shortened to the epochs that
#: fit, but never below this: one epoch of warm-up and cosine decay barely moves the features
#: and would spend the time on a rung the ladder could not keep.
MIN_EPOCHS = 2


@dataclass
class Rung:
    """One measured step: unfreeze=0 is feature extraction.

    ``correct`` is the per-example correctness (0/1) on the validation split, for the paired
    comparison in :func:`choose`; it is not written into ``decisions.json``.
    """

    unfreeze: int
    val_accuracy: float
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)
    correct: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        return rung_label(self.unfreeze, self.detail)


@dataclass
class Decision:
    action: str  # "finetune" | "stop"
    unfreeze: int
    reason: str
    #: a rung not started for its cost or its resolution: what it would have cost, gained,
    #: and the flag that runs it (``decisions.json``'s ``steps``)
    estimated_s: float | None = None
    expected_gain: float | None = None
    flag: str | None = None
    #: fine-tuning settings this rung runs with instead of the configured ones
    #: (:class:`~headstart.config.FinetuneConfig` field → value: the first rung's
    #: ``lr_ratio``, ``epochs``, ... under ``first_rung="domain"``)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FirstRung:
    """The first fine-tuning rung :func:`first_rung` chose, and why in one sentence."""

    unfreeze: int  # groups trained, counted from the top (all of them: the number of groups)
    lr_ratio: float
    epochs: int
    patience: int
    bn: str
    reason: str

    def overrides(self) -> dict[str, Any]:
        """The :class:`~headstart.config.FinetuneConfig` values this rung runs with."""
        return {
            "lr_ratio": self.lr_ratio,
            "epochs": self.epochs,
            "patience": self.patience,
            "bn": self.bn,
        }


def first_rung(
    *,
    verdict: str | None,
    distance: float | None,
    n_train: int,
    batch_size: int,
    n_groups: int,
    ladder_cfg: LadderConfig,
    finetune_cfg: FinetuneConfig,
) -> FirstRung:
    """The first fine-tuning rung for data at this distance from the pretraining domain.

    ``verdict`` is ``"near"``, ``"far"`` or anything else (unknown), ``distance`` the
    calibrated one (0 = natural photos, 1 = Fashion-MNIST; for the reason only),
    ``batch_size`` the examples per optimiser step. Far: every group at
    :data:`FAR_LR_RATIO` with BatchNorm's pretrained statistics kept, for about
    :data:`FAR_STEPS` steps (at least ``finetune_cfg.epochs``, at most
    :data:`FAR_MAX_EPOCHS` epochs); near: the top ``ladder_cfg.first_unfreeze`` groups at
    :data:`NEAR_LR_RATIO`; unknown: every group at :data:`UNKNOWN_LR_RATIO`.
    """
    measured = (
        ""
        if distance is None
        else f" ({distance:.2f} on the scale where 0 is natural photos and 1 Fashion-MNIST)"
    )
    epochs, patience, bn = finetune_cfg.epochs, finetune_cfg.patience, finetune_cfg.bn
    if verdict == "far":
        per_epoch = max(1, math.ceil(n_train / max(1, batch_size)))
        wanted = math.ceil(FAR_STEPS / per_epoch)
        epochs = max(finetune_cfg.epochs, min(wanted, FAR_MAX_EPOCHS))
        return FirstRung(
            n_groups,
            FAR_LR_RATIO,
            epochs,
            max(patience, FAR_PATIENCE),
            "frozen",
            f"the data measured far from the pretraining domain{measured}, so every group "
            f"trains, since the features must move, at backbone LR = head LR / "
            f"{FAR_LR_RATIO:g} (the top of the 10-100x rule) with BatchNorm's pretrained "
            f"statistics kept, for {epochs} epochs ({epochs * per_epoch:,} optimiser steps "
            f"of {batch_size}; about {FAR_STEPS:,} wanted, {FAR_MAX_EPOCHS} epochs at most)",
        )
    if verdict == "near":
        k = n_groups if ladder_cfg.first_unfreeze < 0 else min(ladder_cfg.first_unfreeze, n_groups)
        return FirstRung(
            k,
            NEAR_LR_RATIO,
            epochs,
            patience,
            bn,
            f"the data measured near the pretraining domain{measured}, so the top {k} of "
            f"{n_groups} groups train at backbone LR = head LR / {NEAR_LR_RATIO:g} (the bottom "
            f"of the 10-100x rule: the pretrained features already fit) for {epochs} epochs",
        )
    return FirstRung(
        n_groups,
        UNKNOWN_LR_RATIO,
        epochs,
        patience,
        bn,
        "no calibrated measurement places the data near or far from the pretraining domain, "
        f"so every group trains at backbone LR = head LR / {UNKNOWN_LR_RATIO:g} (the middle "
        f"of the 10-100x rule, as transformer encoders are usually fine-tuned) for {epochs} "
        "epochs",
    )


def _pts(x: float) -> str:
    return f"{100 * x:.1f} points"


def val_resolution(acc: float, n_val: int) -> float:
    """Standard error of a validation accuracy (binomial)."""
    return math.sqrt(max(acc * (1 - acc), 1e-4) / max(1, n_val))


def paired_resolution(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of the accuracy difference of two models scored on the same examples
    (``a``, ``b``: 0/1 correctness per example): the paired (McNemar) error, which only the
    examples where they disagree make up."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    var = max(0.0, float(np.mean(d**2)) - float(np.mean(d)) ** 2)
    return math.sqrt(var / max(1, len(d)))


def choose(rungs: list[Rung], *, n_val: int, cfg: LadderConfig) -> tuple[Rung, str | None]:
    """The rung to keep, and why when it is not simply the best on validation.

    ``rungs`` are in the order they ran (cheapest first). The first rung within
    ``cfg.noise_z`` standard errors of the best is kept: the paired error of the two rungs'
    difference where both carry per-example correctness, else the binomial error of the
    best rung's accuracy.
    """
    best = max(rungs, key=lambda r: (r.val_accuracy, -r.unfreeze))
    for keep in rungs:
        margin, differ = _margin(best, keep, n_val, cfg)
        if keep is best or keep.val_accuracy >= best.val_accuracy - margin:
            break
    if keep is best:
        return best, None
    lead = best.val_accuracy - keep.val_accuracy
    noise = (
        f"{cfg.noise_z:g} standard errors = {_pts(margin)}"
        if differ is None
        else f"{cfg.noise_z:g} paired standard errors = {_pts(margin)}: the two disagree on "
        f"{differ} of them"
    )
    return keep, (
        f"{best.label} led {keep.label} by {_pts(lead)} on {n_val} validation examples, "
        f"within the noise ({noise}): keeping {keep.label}, the cheaper rung"
    )


def _margin(best: Rung, other: Rung, n_val: int, cfg: LadderConfig) -> tuple[float, int | None]:
    """The lead ``best`` needs over ``other`` to be kept, and (paired) on how many examples
    the two disagree: the paired error where both rungs carry their per-example
    correctness on the same examples, else the binomial error of the best's accuracy."""
    a, b = best.correct, other.correct
    if a is None or b is None or len(a) != len(b):
        return cfg.noise_z * val_resolution(best.val_accuracy, n_val), None
    return cfg.noise_z * paired_resolution(a, b), int(np.sum(np.asarray(a) != np.asarray(b)))


def next_step(
    rungs: list[Rung],
    *,
    n_labelled: int,
    min_class_count: int,
    n_classes: int,
    n_groups: int,
    n_val: int,
    cfg: LadderConfig,
    time_left_s: float | None = None,
    curve_slope: float | None = None,
    first: FirstRung | None = None,
) -> Decision:
    """What to do after the rungs measured so far (the first is always extraction).

    ``first``: the first fine-tuning rung :func:`first_rung` chose (``first_rung="domain"``);
    None runs the top ``cfg.first_unfreeze`` groups with the configured settings.
    """
    if not rungs:
        return Decision(
            "extract", 0, "feature extraction first: cheap, and it measures the backbone"
        )
    last = rungs[-1]
    best = max(rungs, key=lambda r: r.val_accuracy)
    per_class = n_labelled / max(1, n_classes)
    if len(rungs) == 1:
        # real counts: "N per class" only when every class has N, else the smallest and the mean
        counts = (
            f"{min_class_count:,} per class"
            if min_class_count * n_classes == n_labelled
            else f"{min_class_count:,} in the smallest class, {per_class:.1f} per class on average"
        )
        base = (
            f"feature extraction reached {last.val_accuracy:.3f} validation accuracy with "
            f"{n_labelled:,} examples ({counts})"
        )
        if curve_slope is not None:
            base += (
                "; the learning curve was still rising "
                if curve_slope > cfg.min_gain
                else "; the learning curve had flattened "
            ) + f"({curve_slope * 100:+.1f} points per doubling)"
        if last.val_accuracy >= cfg.target:
            return Decision("stop", 0, f"{base}: at or above the target {cfg.target:.3f}, stopped")
        if n_labelled < cfg.min_examples or min_class_count < cfg.min_per_class:
            se = val_resolution(last.val_accuracy, n_val)
            return Decision(
                "stop",
                0,
                (
                    f"{base}: stopped at extraction, since fine-tuning needs at least "
                    f"{cfg.min_examples:,} labelled examples and {cfg.min_per_class} in every class "
                    f"(smallest class: {min_class_count}); with {n_val} validation examples a gain "
                    f"below about {_pts(2 * se)} could not be told from noise"
                ),
            )
        k = n_groups if cfg.first_unfreeze < 0 else min(cfg.first_unfreeze, n_groups)
        if time_left_s is not None and time_left_s <= 0:
            return Decision("stop", 0, f"{base}: the time budget is spent, stopped")
        if first is not None:
            return Decision(
                "finetune",
                first.unfreeze,
                f"{base}; fine-tuning the top {first.unfreeze} of {n_groups} groups: "
                + first.reason,
                overrides=first.overrides(),
            )
        return Decision("finetune", k, f"{base}; fine-tuning the top {k} of {n_groups} groups")
    prev = max(rungs[:-1], key=lambda r: r.val_accuracy)
    gain = last.val_accuracy - prev.val_accuracy
    said = f"{last.label} gave {last.val_accuracy:.3f} ({gain * 100:+.1f} points)"
    if gain < 0:
        return Decision("stop", 0, f"{said}: validation fell, stopped; keeping {best.label}")
    if gain < cfg.min_gain:
        return Decision(
            "stop", 0, f"{said}: less than {_pts(cfg.min_gain)}, stopped; keeping {best.label}"
        )
    if last.val_accuracy >= cfg.target:
        return Decision("stop", 0, f"{said}: at or above the target {cfg.target:.3f}, stopped")
    n_ft = len(rungs) - 1
    if n_ft >= cfg.max_rungs:
        return Decision("stop", 0, f"{said}: {cfg.max_rungs} fine-tuning rungs run, stopped")
    if last.unfreeze >= n_groups:
        return Decision("stop", 0, f"{said}: every group is already unfrozen, stopped")
    k = min(last.unfreeze + cfg.step, n_groups)
    return Decision(
        "finetune", k, f"{said}; unfreezing {k - last.unfreeze} more ({k} of {n_groups})"
    )


def rung_flag(decision: Decision) -> str:
    """The ``headstart fit`` flags that run ``decision``'s rung alone."""
    flag = f"--strategy finetune --unfreeze {decision.unfreeze}"
    for name, value in decision.overrides.items():
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        flag += f" --{name.replace('_', '-')} {shown}"
    return flag


def gate(
    decision: Decision,
    *,
    best_val_accuracy: float,
    n_val: int,
    cfg: LadderConfig,
    estimate_s: float | None = None,
    time_left_s: float | None = None,
    budget_s: float | None = None,
    expected_gain: float | None = None,
    lower_bound: bool = False,
    epochs: int | None = None,
    epochs_fit: int | None = None,
) -> Decision:
    """Start the rung ``decision`` proposes only if it can pay for itself.

    Two checks, before the rung costs anything: its ``expected_gain`` (an optimistic bound,
    :func:`headstart.plan.predicted_gain`) must reach what ``n_val`` validation examples
    resolve, the margin :func:`choose` will demand of it; and its estimated cost must fit in
    ``time_left_s``. ``lower_bound`` marks an estimate that is only a floor ("at least").
    A refused rung comes back as a ``stop`` with its cost, expected gain and the flag that
    runs it. A rung that may be shortened (``epochs_fit``: how many of its ``epochs`` fit
    the time left; the first rung under ``first_rung="domain"``) is cut to those epochs
    instead, and refused only when fewer than :data:`MIN_EPOCHS` fit.
    """
    if decision.action != "finetune":
        return decision
    what = f"fine-tuning the top {decision.unfreeze} groups"
    margin = resolvable_gain(best_val_accuracy, n_val, cfg.noise_z)
    if expected_gain is not None and expected_gain < margin:
        return Decision(
            "stop",
            0,
            (
                f"{what}: expected gain at most {_pts(expected_gain)}, below the "
                f"{_pts(margin)} that {n_val} validation examples can resolve "
                f"({cfg.noise_z:g} standard errors): not started, since the ladder could not "
                "keep it over the cheaper rung"
            ),
            estimated_s=estimate_s,
            expected_gain=expected_gain,
            flag=rung_flag(decision),
        )
    if estimate_s is not None and time_left_s is not None and estimate_s > time_left_s:
        if epochs is not None and epochs_fit is not None and MIN_EPOCHS <= epochs_fit < epochs:
            return Decision(
                "finetune",
                decision.unfreeze,
                (
                    f"{decision.reason}; cut to {epochs_fit} of its {epochs} epochs, since all "
                    f"{epochs} would take ~{format_duration(estimate_s)} here and "
                    f"{format_duration(max(0.0, time_left_s))} of the budget are left"
                ),
                estimated_s=estimate_s,
                expected_gain=expected_gain,
                overrides={**decision.overrides, "epochs": epochs_fit},
            )
        gain = f"expected gain at most {_pts(expected_gain)}; " if expected_gain is not None else ""
        flag = budget_flag((budget_s or 0.0) - time_left_s + 1.25 * estimate_s)
        return Decision(
            "stop",
            0,
            (
                f"{what} would take {'at least' if lower_bound else '~'}"
                f"{' ' if lower_bound else ''}{format_duration(estimate_s)} here, "
                f"{format_duration(max(0.0, time_left_s))} of the budget are left; "
                f"{gain}run with {flag}"
            ),
            estimated_s=estimate_s,
            expected_gain=expected_gain,
            flag=flag,
        )
    return decision
