"""Run a strategy by name: ``extract``, ``finetune`` (one rung) or ``auto`` (the ladder).

:func:`run_strategy` is the one engine behind ``headstart fit``, ``headstart curve`` and
:class:`~headstart.TransferClassifier`. The ladder's rules are pure functions in
:mod:`headstart.strategies.ladder`; this module measures the rungs they ask for.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import STRATEGIES, ExtractConfig, FinetuneConfig, LadderConfig
from ..errors import ConfigError
from ..tracking import record_live
from .base import Context, StrategyResult, short_metrics
from .contend import Contest, contend
from .extract import Extract
from .finetune import RUNG_FIELDS, Finetune
from .ladder import Decision, FirstRung, Rung, choose, first_rung, gate, next_step

log = logging.getLogger("headstart")


@dataclass
class LadderResult:
    """The chosen model, every rung measured, and the reasons, in order."""

    chosen: StrategyResult
    extraction: StrategyResult
    results: list[StrategyResult]
    rungs: list[Rung]
    reasons: list[str] = field(default_factory=list)
    learning_curve: dict[str, Any] | None = None
    ladder: dict[str, Any] | None = None
    #: rungs refused before they started: their estimated cost, expected gain and flag
    skipped: list[dict[str, Any]] = field(default_factory=list)
    domain: dict[str, Any] | None = None
    #: auto: how the first fine-tuning rung was chosen (``ladder.first_rung``), its settings
    #: and why
    first_rung: dict[str, Any] | None = None
    #: auto: the non-transfer baseline and the stack pitted against ``chosen``
    #: (:mod:`headstart.strategies.contend`); None when not run
    contest: Contest | None = None

    def decisions(self, strategy: str) -> dict[str, Any]:
        """``decisions.json``: each rung's score, cost and the reasons for each step."""
        chosen = next(r for r in self.rungs if r.unfreeze == self.chosen.unfreeze)
        out: dict[str, Any] = {"strategy": strategy, "reasons": list(self.reasons)}
        if self.ladder is not None:
            out["ladder"] = self.ladder
        if self.learning_curve is not None:
            out["learning_curve"] = self.learning_curve
        if self.domain is not None:
            out["domain"] = self.domain
        if self.first_rung is not None:
            out["first_rung"] = self.first_rung
        if self.skipped:
            out["skipped"] = list(self.skipped)
        if self.contest is not None:
            out["contender"] = self.contest.to_dict()
        out["chosen"] = chosen.label
        out["rungs"] = [
            {
                "unfreeze": r.unfreeze,
                "label": r.label,
                "val_accuracy": r.val_accuracy,
                "seconds": round(r.seconds, 2),
                **r.detail,
            }
            for r in self.rungs
        ]
        return out


def learning_curve(ctx: Context, seed: int) -> dict[str, Any] | None:
    """Linear-probe validation accuracy on 25/50/100% of the training features (cheap)."""
    from ..data.split import stratified_subset
    from ..heads import make_head

    F, Fv = ctx.pristine("train"), ctx.pristine("val")
    assert ctx.val is not None
    y = ctx.train.labels
    n = len(y)
    sizes = sorted({max(len(ctx.classes) * 2, int(n * f)) for f in (0.25, 0.5, 1.0)})
    points = []
    for size in sizes:
        idx = np.arange(n) if size >= n else stratified_subset(y, size, seed=seed)
        head = make_head("logistic", random_state=seed, refit=False)
        head.fit(F[idx], y[idx], X_val=Fv, y_val=ctx.val.labels)
        acc = float(np.mean(head.predict(Fv) == ctx.val.labels))
        points.append({"n": len(idx), "val_accuracy": acc})
    if len(points) < 2:
        return None
    a, b = points[-2], points[-1]
    slope = (b["val_accuracy"] - a["val_accuracy"]) / max(1e-9, np.log2(b["n"] / a["n"]))
    return {"points": points, "slope_per_doubling": float(slope)}


def _rung(result: StrategyResult, labels: np.ndarray | None = None) -> Rung:
    """A result as the ladder weighs it; with the validation ``labels``, its per-example
    correctness too (for :func:`~headstart.strategies.ladder.choose`'s paired comparison)."""
    detail = dict(result.detail)
    if result.unfreeze:
        detail = {
            "val": short_metrics(result.val_metrics),
            **{k: result.detail[k] for k in RUNG_FIELDS if k in result.detail},
        }
    # each rung to a tracker listening (--track) when it finishes, not after the run
    record_live(
        "rung",
        {
            "unfreeze": result.unfreeze,
            "val_accuracy": result.val_accuracy,
            "seconds": result.seconds,
        },
    )
    correct = None
    if labels is not None and result.val_proba is not None and len(result.val_proba) == len(labels):
        correct = (np.asarray(result.val_proba).argmax(axis=1) == labels).astype(np.int8)
    return Rung(result.unfreeze, result.val_accuracy, result.seconds, detail, correct)


def run_strategy(
    ctx: Context,
    strategy: str = "auto",
    *,
    extract: ExtractConfig | None = None,
    finetune: FinetuneConfig | None = None,
    ladder: LadderConfig | None = None,
    head_params: dict[str, Any] | None = None,
    measure_forgetting: bool = True,
) -> LadderResult:
    """Extraction, then (``finetune``) one fine-tuning rung or (``auto``) the ladder's rungs.

    Extraction always runs first: it is the cheap reference and its probe is fine-tuning's
    starting head. ``finetune`` reports the fine-tuned model (extraction sits beside it);
    ``auto`` keeps the cheapest rung within the ladder's noise margin of the best.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    ladder = ladder or LadderConfig()
    ft_cfg = finetune or FinetuneConfig()
    t0 = time.perf_counter()
    ctx.pristine("train")
    if ctx.val is not None:
        ctx.pristine("val")
    n_extracted = len(ctx.train) + (0 if ctx.val is None else len(ctx.val))
    extract_ms = 1000 * (time.perf_counter() - t0) / max(1, n_extracted)
    ctx.reserve_s = ctx.n_score * extract_ms / 1000
    first = Extract(extract, head_params).fit(ctx)
    labels = None if ctx.val is None else np.asarray(ctx.val.labels)
    rungs = [_rung(first, labels)]
    results = [first]
    out = LadderResult(first, first, results, rungs)
    if strategy == "extract":
        return out
    if ctx.sample_weight is not None:
        raise ConfigError(
            f"strategy {strategy!r} does not honour sample_weight (fine-tuning trains on "
            "unweighted batches); use strategy='extract', or drop sample_weight"
        )
    if ctx.val is None:
        raise ConfigError(f"strategy {strategy!r} needs a validation split")
    out.ladder = ladder.to_dict()
    n_groups = len(ctx.backbone.layer_groups())
    if strategy == "auto":
        out.learning_curve = learning_curve(ctx, ctx.seed)
        out.domain = _domain(ctx)
    # the cheap contender before the expensive rungs, so they plan with the time really left
    scratch = _scratch_contender(ctx, ladder, out) if strategy == "auto" else []
    counts = ctx.train.class_counts() + ctx.val.class_counts()
    chosen_first = _first_rung(ladder, ft_cfg, out, ctx, n_groups) if strategy == "auto" else None
    while True:
        if strategy == "finetune":
            k = Finetune(ft_cfg).groups(ctx.backbone)
            decision = (
                Decision(
                    "finetune",
                    k,
                    "strategy finetune: "
                    + (
                        f"LoRA adapters (rank {ft_cfg.lora_rank}) in every block, backbone frozen"
                        if ft_cfg.peft != "none"
                        else f"the top {k} of {n_groups} groups"
                    ),
                )
                if len(rungs) == 1
                else Decision("stop", 0, "strategy finetune: one rung")
            )
        else:
            decision = next_step(
                rungs,
                n_labelled=int(counts.sum()),
                min_class_count=int(counts.min()),
                n_classes=len(ctx.classes),
                n_groups=n_groups,
                n_val=len(ctx.val),
                cfg=ladder,
                time_left_s=None,  # the cost gate below weighs the time left
                curve_slope=(out.learning_curve or {}).get("slope_per_doubling"),
                first=chosen_first,
            )
            if decision.action == "finetune":
                decision = _gate(ctx, decision, rungs, first, ft_cfg, ladder, out, extract_ms)
        out.reasons.append(decision.reason)
        if ctx.progress:
            log.info("ladder: %s", decision.reason)
        if decision.action != "finetune":
            break
        rung = Finetune(
            _rung_config(ft_cfg, decision),
            unfreeze=decision.unfreeze,
            measure_forgetting=measure_forgetting,
            budgeted=strategy == "auto",
        )
        if strategy == "auto" and len(rungs) == 1:
            _record_first(out, ladder, rung.config, chosen_first)  # keep_epoch resolved
        tuned = rung.fit(ctx, first)
        results.append(tuned)
        rungs.append(_rung(tuned, labels))
    if strategy == "finetune" and len(rungs) > 1:
        out.chosen = results[-1]  # the user asked for fine-tuning: report it
    else:
        best, why = choose(rungs, n_val=len(ctx.val), cfg=ladder)
        if why:
            out.reasons.append(why)
        out.chosen = results[rungs.index(best)]
    if strategy == "auto" and ladder.contend:
        out.contest = _contend(ctx, out.chosen, ladder, scratch)
        if out.contest is not None:
            out.reasons.append(out.contest.reason)
            if ctx.progress:
                log.info("contender: %s", out.contest.reason)
    return out


def _contend(
    ctx: Context, chosen: StrategyResult, ladder: LadderConfig, extra: list[Any]
) -> Contest | None:
    """The baseline (and the stack) against the chosen transfer model; None where the
    modality has no baseline or the splits cannot train one."""
    from ..errors import HeadstartError

    if ctx.val is None or chosen.val_proba is None or ctx.train.modality == "features":
        return None
    try:
        return contend(ctx.train, ctx.val, chosen.val_proba, ladder, seed=ctx.seed, extra=extra)
    except HeadstartError as exc:  # no baseline for this data: transfer stands alone
        log.info("no baseline contender: %s", exc)
        return None


def _scratch_contender(ctx: Context, ladder: LadderConfig, out: LadderResult) -> list[Any]:
    """Images not measured near the pretraining domain: the small CNN from scratch, priced by
    a measured step and trained when it fits :data:`~headstart.baselines.scratch.CNN_SHARE`
    of the time left (``[]`` otherwise, the skip recorded in ``out.skipped`` with the budget
    that runs it)."""
    from ..baselines.scratch import CNN_SHARE, fit_cnn, plan_cnn
    from ..errors import HeadstartError

    if not (ladder.contend and ladder.contend_cnn) or ctx.val is None:
        return []
    if ctx.train.modality != "image":
        return []
    domain = out.domain or {}
    if domain.get("verdict") == "near":
        out.reasons.append(
            "the data measured near the pretraining domain "
            f"({domain.get('distance', float('nan')):.2f}): no small CNN from scratch as a "
            "contender (on such data the pretrained features are what a few thousand labels "
            "cannot learn from scratch); pixels + logistic regression still contends"
        )
        return []
    try:
        plan = plan_cnn(ctx.train, ctx.val, seed=ctx.seed, time_left_s=ctx.time_left())
        if not plan.run:
            flag = f"--time-budget {plan.estimate_s / CNN_SHARE:.0f}s"
            reason = f"{plan.reason}; run with {flag}"  # fit rewrites the flag for the run
            out.reasons.append(reason)
            out.skipped.append(
                {
                    "step": "the small CNN contender",
                    "reason": reason,
                    "estimated_s": round(plan.estimate_s, 1),
                    "needs_s": round(plan.estimate_s / CNN_SHARE, 1),
                    "expected_gain": None,
                    "flag": flag,
                }
            )
            return []
        left = ctx.time_left()
        cnn = fit_cnn(
            ctx.train, ctx.val, plan, seed=ctx.seed,
            deadline=None if left is None else time.perf_counter() + CNN_SHARE * left,
        )  # fmt: skip
    except HeadstartError as exc:  # images a small CNN cannot read: pixels only
        log.info("no CNN contender: %s", exc)
        return []
    out.reasons.append(f"{plan.reason}; trained in {cnn.fit_seconds:.0f} s: {cnn.describe()}")
    if ctx.progress:
        log.info("contender: %s", out.reasons[-1])
    return [cnn]


def _domain(ctx: Context) -> dict[str, Any] | None:
    """Near or far from the pretraining domain, measured on the training features."""
    from ..errors import HeadstartError
    from ..selection.domain import domain_distance

    try:
        report = domain_distance(ctx.backbone, ctx.pristine("train"))
    except (HeadstartError, ValueError) as exc:  # no reference, too few examples
        log.debug("no domain measurement: %s", exc)
        return None
    return {"verdict": report.verdict, "distance": report.distance, "reasons": report.reasons}


def _first_rung(
    ladder: LadderConfig, ft_cfg: FinetuneConfig, out: LadderResult, ctx: Context, n_groups: int
) -> FirstRung | None:
    """The first fine-tuning rung the measured domain asks for (``first_rung="domain"``);
    None under ``"fixed"``: the top ``first_unfreeze`` groups with the configured values."""
    if ladder.first_rung != "domain":
        return None
    domain = out.domain or {}
    return first_rung(
        verdict=domain.get("verdict"),
        distance=domain.get("distance"),
        n_train=len(ctx.train),
        batch_size=ft_cfg.batch_size * ft_cfg.grad_accum,
        n_groups=n_groups,
        ladder_cfg=ladder,
        finetune_cfg=ft_cfg,
    )


def _rung_config(ft_cfg: FinetuneConfig, decision: Decision) -> FinetuneConfig:
    """The fine-tuning settings ``decision``'s rung runs with: the configured ones, with the
    rung's own (the first rung's under ``first_rung="domain"``) over them."""
    cfg: FinetuneConfig = copy.deepcopy(ft_cfg)
    cfg.set_params(unfreeze=decision.unfreeze, **decision.overrides)
    return cfg


def _record_first(
    out: LadderResult, ladder: LadderConfig, cfg: FinetuneConfig, chosen: FirstRung | None
) -> None:
    """``decisions.json``'s ``first_rung``: how the first fine-tuning rung was chosen, the
    settings it ran with (after any cut to fit the time) and why."""
    reason = (
        "first_rung fixed: the top first_unfreeze groups with the fine-tuning settings as "
        "configured"
        if chosen is None
        else chosen.reason
        if cfg.epochs >= chosen.epochs
        else f"{chosen.reason}; cut to {cfg.epochs} epochs to fit the time left"
    )
    out.first_rung = {
        "mode": ladder.first_rung,
        "unfreeze": cfg.unfreeze,
        "lr_ratio": cfg.lr_ratio,
        "epochs": cfg.epochs,
        "patience": cfg.patience,
        "keep_epoch": cfg.keep_epoch,
        "bn": cfg.bn,
        "reason": reason,
    }


def _gate(
    ctx: Context,
    decision: Decision,
    rungs: list[Rung],
    first: StrategyResult,
    ft_cfg: FinetuneConfig,
    ladder: LadderConfig,
    out: LadderResult,
    extract_ms: float,
) -> Decision:
    """The cost model's say on a proposed rung: its expected gain against what validation can
    resolve, then its cost (a floor from the extraction speed; if that fits, a measured probe)
    against the time left. A domain-chosen first rung that does not fit is cut to the epochs
    that do (at least :data:`~headstart.strategies.ladder.MIN_EPOCHS`). A refused rung is
    recorded in ``out.skipped``."""
    from ..plan import epochs_that_fit, finetune_estimate, predicted_gain
    from .ladder import MIN_EPOCHS
    from .training import measure_step

    assert ctx.val is not None
    best = max(r.val_accuracy for r in rungs)
    verdict = (out.domain or {}).get("verdict")
    cfg = _rung_config(ft_cfg, decision)
    common: dict[str, Any] = {
        "best_val_accuracy": best,
        "n_val": len(ctx.val),
        "cfg": ladder,
        "expected_gain": predicted_gain(
            best,
            verdict,
            (out.learning_curve or {}).get("slope_per_doubling"),
            whole_network=decision.unfreeze >= len(ctx.backbone.layer_groups()),
        ),
        "budget_s": ctx.budget_s,
    }
    gated = gate(decision, **common)
    left = ctx.time_left()
    if gated.action == "finetune" and left is not None:
        shorten = len(rungs) == 1 and ladder.first_rung == "domain"
        n_train, n_val = len(ctx.train), len(ctx.val)
        # training costs at least a forward and a backward pass (~3 forwards) per example
        floor = 3 * extract_ms / 1000 * n_train
        if floor * (min(MIN_EPOCHS, cfg.epochs) if shorten else cfg.epochs) > left:
            gated = gate(
                decision,
                **common,
                estimate_s=floor * cfg.epochs,
                time_left_s=left,
                lower_bound=True,
            )
        else:
            step_s, eval_ms = measure_step(
                ctx.backbone, first.probe.to_torch(), ctx.train, cfg, seed=ctx.seed
            )
            cost = {"step_s_per_example": step_s, "eval_ms_per_example": eval_ms}
            estimate = finetune_estimate(**cost, n_train=n_train, n_val=n_val, epochs=cfg.epochs)
            left = ctx.time_left() or 0.0
            fit = epochs_that_fit(**cost, n_train=n_train, n_val=n_val, time_left_s=left)
            gated = gate(
                decision,
                **common,
                estimate_s=estimate,
                time_left_s=left,
                epochs=cfg.epochs,
                epochs_fit=fit if shorten else None,
            )
    if gated.action != "finetune":
        out.skipped.append(
            {
                "step": f"fine-tuning the top {decision.unfreeze} groups",
                "reason": gated.reason,
                "estimated_s": gated.estimated_s,
                "expected_gain": gated.expected_gain,
                "flag": gated.flag,
            }
        )
    return gated


def deadline(time_budget_s: float | None, started: float | None = None) -> float | None:
    """The perf_counter value a budget of ``time_budget_s`` from ``started`` ends at."""
    if time_budget_s is None:
        return None
    return (time.perf_counter() if started is None else started) + time_budget_s
