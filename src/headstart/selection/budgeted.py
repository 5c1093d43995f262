"""``--backbone auto`` under a time budget: rank the candidates the budget can afford.

Used by :func:`headstart.fit.fit_run`. The cost rules are the pure functions of
:mod:`headstart.plan`; this module measures the speeds they need and runs the ranking of
:mod:`headstart.selection.rank` on the candidates they keep.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from ..backbones.sizing import input_size, load_sized
from ..config import FitConfig
from ..data.base import Splits
from ..errors import HeadstartError
from ..features.cache import TEXT_BATCH
from ..plan import (
    FLOPS_SLACK,
    LOAD_S,
    MIN_TEST,
    RANK_SHARE,
    Budget,
    Step,
    budget_flag,
    effective_tokens,
    estimate_ms,
    fit_window,
    format_duration,
    plan_ranking,
)
from .cost import measure_cost

__all__ = ["choose_within_budget", "probe_speed", "test_in_job"]

log = logging.getLogger("headstart")


#: Examples :func:`probe_speed` times (the difference between its first quarter and all).
PROBE_N = 32


def probe_speed(backbone: Any, cfg: FitConfig, splits: Splits) -> float:
    """Extraction milliseconds per example of ``backbone`` here (a short measured probe)."""
    return measure_cost(
        backbone,
        splits.train,
        engine=cfg.extract.engine,
        batch_size=cfg.extract.batch_size,
        n=PROBE_N,
    )


def test_in_job(splits: Splits, requested: int | str) -> int:
    """Test examples a backbone's extraction of the whole job must count: all of them when
    ``--test-size`` names a number (or ``all``: the user asked for them, and they are scored
    whatever the budget), else the :data:`MIN_TEST` the planner never goes below."""
    n_test = len(splits.test) if splits.test is not None else 0
    return n_test if requested != "auto" else min(n_test, MIN_TEST)


def choose_within_budget(
    cfg: FitConfig, splits: Splits, progress: bool, budget: Budget, native: int | None
) -> tuple[str, dict[str, Any]]:
    """``--backbone auto``: rank the installed candidates the budget can afford.

    The modality's default backbone is measured first (a short probe); every other
    candidate's speed is estimated from it and the model cards' FLOPs
    (:func:`headstart.plan.estimate_ms`). A candidate whose extraction of the whole job would
    not fit the budget is not extracted; the rest are ranked on a sample of the training
    split (through the same feature cache as the fit) when that fits ``RANK_SHARE`` of the
    budget, and the best-ranked one whose *measured* cost fits is chosen. Otherwise the
    default is used, and the reason says what ranking would have cost and the flag that
    buys it. With one candidate (or ``--no-pretrained``) there is nothing to rank.
    """
    from ..backbones.names import GFLOPS, PRETRAINING_SIZE
    from ..backbones.registry import DEFAULT_BACKBONE
    from .rank import candidates, rank_backbones

    bb = cfg.backbone
    modality = splits.train.modality
    names = candidates(modality) if bb.pretrained else []
    default = DEFAULT_BACKBONE[modality]
    if default not in names and names:
        default = names[0]
    if len(names) < 2:
        why = (
            "random initialisation: nothing to rank"
            if not bb.pretrained
            else f"{len(names)} {modality} backbone(s) installed: nothing to rank"
        )
        return default, {"chosen": default, "reason": f"backbone {default} ({why})", "table": None}
    t0 = time.perf_counter()
    d_bb, d_size = load_sized(default, cfg.backbone, native)
    d_ms = probe_speed(d_bb, cfg, splits)
    budget.add(
        Step(
            "speed probe",
            "ran",
            f"{default}: {d_ms:.1f} ms per example here (the other candidates' speeds are "
            "estimated from it and their FLOPs)",
            seconds=round(time.perf_counter() - t0, 2),
        )
    )
    t0 = time.perf_counter()

    def planned(name: str) -> tuple[int | None, int | None]:
        if modality != "image":
            return None, None
        pre = PRETRAINING_SIZE.get(name, 224)
        return bb.image_size or input_size(native, pre, name), pre

    d_pre = planned(default)[1]
    d_flops = GFLOPS.get(default, 0.0) * ((d_size / d_pre) ** 2 if d_size and d_pre else 1.0)
    estimates: dict[str, float | None] = {}
    for name in names:
        size, pre = planned(name)
        estimates[name] = (
            d_ms
            if name == default
            else estimate_ms(d_ms, d_flops, GFLOPS.get(name), size or 1, pre or 1)
        )
    n_job = len(splits.train) + len(splits.val) + test_in_job(splits, cfg.data.test_size)
    sample = min(bb.rank_sample, len(splits.train))
    windows: dict[str, int] = {}
    if modality == "text" and bb.max_length is None:

        def probe(name: str, window: int) -> float:
            sized = dataclasses.replace(bb, max_length=window)
            return probe_speed(load_sized(name, sized, native)[0], cfg, splits)

        batch = cfg.extract.batch_size or TEXT_BATCH
        windows = _fit_windows(
            d_bb, default, estimates, splits, sample, n_job, budget, probe, batch
        )
    del d_bb
    to_rank, steps = plan_ranking(
        estimates, default=default, n_job=n_job, sample=sample, budget_s=budget.left()
    )
    for st in steps:
        budget.add(st)
    est_text = ", ".join(
        f"{n} ~{ms:.0f} ms" for n, ms in sorted(estimates.items(), key=lambda kv: kv[1] or 0) if ms
    )
    if len(to_rank) < 2:
        full = sum((ms or 0.0) * sample / 1000 + LOAD_S for ms in estimates.values())
        flag = budget_flag(full / RANK_SHARE + budget.spent())
        reason = (
            f"backbone {default} (the {modality} default, {d_ms:.1f} ms per example here): "
            f"ranking the {len(names)} installed {modality} backbones on {sample} examples "
            f"would take ~{format_duration(full)} (estimated per example: {est_text}), more than "
            f"the {format_duration(budget.total_s)} budget affords; {flag} ranks them"
        )
        budget.add(Step("rank backbones", "skipped", reason, estimated_s=round(full, 1), flag=flag))
        log.info("%s", reason)
        return default, {
            "chosen": default,
            "reason": reason,
            "table": None,
            "estimates_ms": estimates,
            "ms_per_example": d_ms,
        }
    log.info(
        "ranking %d of %d installed %s backbones on %d training examples (%s)",
        len(to_rank), len(names), modality, sample, ", ".join(to_rank),
    )  # fmt: skip
    items: list[Any] = [
        load_sized(n, dataclasses.replace(bb, max_length=windows.get(n)), native)[0]
        for n in to_rank
    ]
    table = rank_backbones(
        splits.train,
        items,
        sample=sample,
        seed=cfg.seed,
        cache_dir=cfg.extract.cache_dir,
        progress=progress,
        engine=cfg.extract.engine,
        batch_size=cfg.extract.batch_size,
        skip_failed=True,
    )
    del items
    # the best-ranked candidate whose measured extraction of the job fits what is left
    left = budget.left()
    affordable = 1000 * left / max(1, n_job) if math.isfinite(left) else None
    caps = [c for c in (affordable, bb.backbone_budget_ms) if c is not None]
    cap = min(caps) if caps else None
    try:
        best = table.best(cap)
    except HeadstartError:
        best = table.row(default) if default in table.names() else table.rows[0]
    within = (
        f" among those whose extraction fits the budget ({cap:.1f} ms per example)"
        if cap is not None
        else ""
    )
    window = windows.get(best.name)
    reason = (
        f"backbone {best.name}"
        + (
            f" at a {window}-token window (head+tail), the longest the budget affords"
            if window
            else ""
        )
        + f": ranked first{within} of {len(table.rows)} ranked ("
        f"{len(names)} installed {modality} backbones) by {table.primary} on {table.n} "
        "training examples"
    )
    budget.add(Step("rank backbones", "ran", reason, seconds=round(time.perf_counter() - t0, 2)))
    return best.name, {
        "chosen": best.name,
        "reason": reason,
        "table": table.to_dict(),
        "estimates_ms": estimates,
        "ms_per_example": best.ms_per_example,
        "max_length": window,
        "windows": windows,
    }


def _fit_windows(
    d_bb: Any,
    default: str,
    estimates: dict[str, float | None],
    splits: Splits,
    sample: int,
    n_job: int,
    budget: Budget,
    probe: Callable[[str, int], float],
    batch: int = 32,
) -> dict[str, int]:
    """Token windows shortened to fit the budget, by text candidate (see
    :func:`headstart.plan.fit_window`); ``estimates`` are rescaled in place to each
    candidate's window.

    Costs are counted per token actually read (:func:`~headstart.plan.effective_tokens`,
    on ``sample`` training texts with the default backbone's tokenizer): the default's
    measured probe over the probe's own texts, the others scaled from it by FLOPs
    (:func:`estimate_ms`). A candidate that estimate leaves out at every window, but by less
    than :data:`~headstart.plan.FLOPS_SLACK`, is measured with ``probe(name, window)`` (ms
    per example on the same texts at that window) at its own window before it is left out. The window must fit
    the budget less ranking's share (:data:`~headstart.plan.RANK_SHARE`). When that
    measurement shortens the window, the candidate is measured at the shorter window too,
    and the cost per token is taken as linear between the two (attention's share grows
    with the window: 1.11 ms per token at 128 for all-mpnet-base-v2 here, 1.47 at 384).
    """
    from ..backbones.hf import text_window
    from ..backbones.names import parse_name
    from ..features.preprocess import get_tokenizer

    d_window = int(d_bb.preprocess.max_length)
    texts = list(splits.train.inputs[:sample])
    tok = get_tokenizer(d_bb.preprocess)
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=True, verbose=False)["input_ids"]]

    def probe_tokens(window: int) -> float:
        # tokens per example in the timed difference of probe_speed: its first PROBE_N texts
        # less their first quarter, each set in its own padded batches
        n = min(PROBE_N, len(lengths))
        small = max(1, n // 4)
        if n <= small:
            return effective_tokens(lengths[:n], window, batch)
        big, few = (
            effective_tokens(lengths[:n], window, batch),
            effective_tokens(lengths[:small], window, batch),
        )
        return (big * n - few * small) / (n - small)

    d_tokens = probe_tokens(d_window)
    windows: dict[str, int] = {}
    for name, ms in estimates.items():
        source, rest = parse_name(name)
        full = d_window if name == default else (text_window(rest) if source == "hf" else None)
        if ms is None or full is None:
            continue
        left = budget.left() * (1 - RANK_SHARE)
        per_token = ms / d_tokens
        window = fit_window(per_token, lengths, full, n_job, left, batch)
        slack = fit_window(per_token / FLOPS_SLACK, lengths, full, n_job, left, batch)
        rate: float | Callable[[int], float] = per_token
        if window is None and slack is not None and name != default:
            t0 = time.perf_counter()
            measured = probe(name, full)
            per_token = rate = measured / probe_tokens(full)
            said = f"{measured:.1f} ms per example at its {full}-token window ({per_token:.2f} per token)"
            left = budget.left() * (1 - RANK_SHARE)
            window = fit_window(per_token, lengths, full, n_job, left, batch)
            if window is not None and window < full:
                # a token costs less in a shorter window (attention grows with it): measure
                # there too, and take the cost per token as linear between the two windows
                short = probe(name, window) / probe_tokens(window)
                rate = _between(window, short, full, per_token)
                said += f", {short:.2f} per token at {window}"
                left = budget.left() * (1 - RANK_SHARE)
                window = fit_window(rate, lengths, full, n_job, left, batch)
            budget.add(
                Step(
                    f"speed probe {name}",
                    "ran",
                    f"{said}, here; its FLOPs put it at {ms / d_tokens:.2f} ms per token, "
                    f"within {FLOPS_SLACK:g}x of fitting",
                    seconds=round(time.perf_counter() - t0, 2),
                )
            )
        estimates[name] = full_ms = per_token * effective_tokens(lengths, full, batch)
        if window is None or window == full:
            continue
        windows[name] = window
        estimates[name] = _rate(rate, window) * effective_tokens(lengths, window, batch)
        budget.add(
            Step(
                f"window {name}",
                "reduced",
                f"{window} of its {full} tokens (head+tail): extracting the {n_job:,} "
                f"examples at {full} would take ~"
                f"{format_duration(full_ms * n_job / 1000)}"
                f", over the {format_duration(left)} the budget leaves after ranking",
                estimated_s=round(full_ms * n_job / 1000, 1),
                # the budget that reads the whole window: its extraction within the share
                flag=budget_flag(full_ms * n_job / 1000 / (1 - RANK_SHARE) + budget.spent()),
            )
        )
    return windows


def _between(short: int, at_short: float, full: int, at_full: float) -> Callable[[int], float]:
    """Cost per token at any window, linear between two measured windows."""

    def rate(window: int) -> float:
        return at_short + (at_full - at_short) * (window - short) / max(1, full - short)

    return rate


def _rate(rate: float | Callable[[int], float], window: int) -> float:
    return rate(window) if callable(rate) else rate
