"""The rule of thumb, run for the user: extract → fine-tune the top groups → unfreeze more.

:func:`next_step` is a pure function of what has been measured so far, so every decision
can be tested on scripted score sequences and explained in one sentence. Defaults, and why:

* ``min_examples=1000`` and ``min_per_class=20``: the mission's rule of thumb (feature
  extraction for 100-1,000 labelled examples, fine-tuning from 1,000+), plus enough
  examples of the rarest class that the validation split can register a change in it.
* ``min_gain=0.005``: a rung must add half an accuracy point on validation to justify the
  next, costlier one (and its risk of forgetting).
* ``target=0.995``: above this, extraction is as good as the labels allow.
* ``noise_z=2``: when the climb is over, :func:`choose` keeps the cheapest rung whose
  validation accuracy is within ``noise_z`` binomial standard errors of the best one (the
  "one standard error" rule of model selection, at about 95 % confidence): a costlier rung
  with more risk of forgetting must win by more than the validation split can resolve
  (measured: 200 validation images put a +3.0-point fine-tuning lead within the noise, and
  on the 10,000-image test set that rung was 1.2 points *below* extraction). 0 keeps the
  plain best.
* ``first_unfreeze=2, step=2, max_rungs=3``: unfreeze the top two groups first (-1: all of
  them, one fine-tuning rung), then two
  more each rung, at most three fine-tuning rungs.
All are overridable (``--ladder-min-gain 0.01``, ``LadderConfig(min_gain=0.01)``) and are written into ``decisions.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..config import LadderConfig
from ..plan import budget_flag, format_duration, resolvable_gain
from .base import rung_label


@dataclass
class Rung:
    """One measured step: unfreeze=0 is feature extraction."""

    unfreeze: int
    val_accuracy: float
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)

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


def _pts(x: float) -> str:
    return f"{100 * x:.1f} points"


def val_resolution(acc: float, n_val: int) -> float:
    """Standard error of a validation accuracy (binomial)."""
    return math.sqrt(max(acc * (1 - acc), 1e-4) / max(1, n_val))


def choose(rungs: list[Rung], *, n_val: int, cfg: LadderConfig) -> tuple[Rung, str | None]:
    """The rung to keep, and why when it is not simply the best on validation.

    ``rungs`` are in the order they ran (cheapest first).
    """
    best = max(rungs, key=lambda r: (r.val_accuracy, -r.unfreeze))
    margin = cfg.noise_z * val_resolution(best.val_accuracy, n_val)
    keep = next(r for r in rungs if r.val_accuracy >= best.val_accuracy - margin)
    if keep is best:
        return best, None
    lead = best.val_accuracy - keep.val_accuracy
    return keep, (
        f"{best.label} led {keep.label} by {_pts(lead)} on {n_val} validation examples, "
        f"within the noise ({cfg.noise_z:g} standard errors = {_pts(margin)}): keeping "
        f"{keep.label}, the cheaper rung"
    )


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
) -> Decision:
    """What to do after the rungs measured so far (the first is always extraction)."""
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
) -> Decision:
    """Start the rung ``decision`` proposes only if it can pay for itself.

    Two checks, before the rung costs anything: its ``expected_gain`` (an optimistic bound,
    :func:`headstart.plan.predicted_gain`) must reach what ``n_val`` validation examples
    resolve, the margin :func:`choose` will demand of it; and its estimated cost must fit in
    ``time_left_s``. ``lower_bound`` marks an estimate that is only a floor ("at least").
    A refused rung comes back as a ``stop`` with its cost, expected gain and the flag that
    runs it.
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
            flag=f"--strategy finetune --unfreeze {decision.unfreeze}",
        )
    if estimate_s is not None and time_left_s is not None and estimate_s > time_left_s:
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
