"""The cost model: what each step of a fit would cost here, and what fits in the time budget.

Every decision below is a pure function of numbers measured on this machine in this run
(milliseconds per example of a backbone's forward pass, seconds per fine-tuning step), so it
can be tested on scripted costs and explained in one sentence. The planner never guesses a
speed: before a backbone is ranked, a rung is started or a test split is extracted, the
caller measures a short probe (a few batches) and hands the figure in.

The default budget, :data:`DEFAULT_TIME_BUDGET_S` = 60 s, is the time to a first result a
person can look at; it covers ranking, extraction, the head, any fine-tuning and the test
split (loading the data and writing the run folder come on top, a few seconds). On a
2-core CPU it buys extraction with the default backbone at a resolution fitted to the data
(:func:`headstart.backbones.sizing.input_size`); on a GPU the same budget fits fine-tuning,
because the estimate scales with measured speed. ``--time-budget 30m`` buys the full
ladder here; ``--time-budget inf`` removes the limit.

Shares of the budget, and why:

* :data:`TEST_SHARE` = 0.35: the test split is measurement, not learning; it may take at most
  about a third of the budget. Past that, a stratified subset of at least
  :data:`MIN_TEST` examples is scored instead (standard error at most ~1.8 points at 80 %
  accuracy) and the summary says so; ``--test-size all`` scores the whole split.
* :data:`RANK_SHARE` = 0.15: choosing among backbones may take about a seventh of the
  budget. Ranking time spent on the candidates not chosen is discarded work, and the
  default backbone is a good choice on most data (benchmarks/RESULTS-rank.md), so ranking
  is bought only where the budget is large next to it; a candidate whose extraction of the
  whole job alone would exceed what is left is not ranked (its estimated cost is printed).
  Measured with ``benchmarks/bench_ladder.py``: at 0.25, the one-minute budget ranked two
  candidates on digits and 35 % of the run's wall time went to the one not chosen.
* A fine-tuning rung must fit, by its estimate, in the time left after the test split
  has been reserved; a rung whose optimistic gain is below what the validation split can
  resolve (the ladder's own noise margin, :func:`headstart.strategies.ladder.choose`) is
  not started, whatever the budget.
* A text candidate whose extraction of the whole job would not fit at its own token window
  is given the longest shorter window that fits (:func:`fit_window`), down to
  :data:`MIN_WINDOW` tokens, before it is left out: a stronger encoder reading 128 tokens
  of each text (head+tail) can beat a weaker one reading more, and the ranking compares
  them on exactly the input each would get.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_TIME_BUDGET_S",
    "FLOPS_SLACK",
    "LOAD_S",
    "MIN_TEST",
    "MIN_WINDOW",
    "RANK_SHARE",
    "TEST_SHARE",
    "Budget",
    "Step",
    "effective_tokens",
    "epochs_that_fit",
    "estimate_ms",
    "finetune_estimate",
    "fit_window",
    "format_duration",
    "measured_ms",
    "plan_ranking",
    "plan_test_size",
    "predicted_gain",
    "resolvable_gain",
]

#: The time to a first result, in seconds (see the module docstring).
DEFAULT_TIME_BUDGET_S = 60.0
#: Largest share of the budget the test split may take before it is subsampled.
TEST_SHARE = 0.35
#: Smallest test subset the planner scores (or the whole split when it is smaller).
MIN_TEST = 500
#: Share of the budget that ranking backbones may take.
RANK_SHARE = 0.15
#: Share of the remaining error fine-tuning can plausibly remove, by domain verdict: an
#: optimistic upper bound from the measurements in benchmarks/RESULTS.md (whole-network
#: fine-tuning of mobilenet_v2 on Fashion-MNIST, far from ImageNet, removed 25 % of the
#: probe's error at 5,000 labels; top-group rungs removed 0-10 %) and the transfer
#: literature (Kornblith et al., CVPR 2019: fine-tuning's lead over a linear probe grows
#: with distance from ImageNet). Unknown distance is treated as far: the planner must not
#: skip a useful rung for lack of a measurement.
RECOVERABLE = {"near": 0.15, "far": 0.4, "unknown": 0.4}
#: What fine-tuning on n labels is worth, at most, in labels for extraction: two doublings
#: (4x the labels) far from the source domain, one near it. Measured (benchmarks/RESULTS.md,
#: issue 11): Fashion-MNIST 1,000 with lite1 gained +3.0 validation points on a
#: +2.0-per-doubling curve (bound 4.0); with mobilenet_v2 the rung lost 1.2 test points, and on
#: digits and MNIST it scored below extraction on test. The bound is for rungs that tune the
#: top groups: far from the domain, a rung that tunes every group replaces the features whose
#: learning curve the slope measures, and is bounded by :data:`RECOVERABLE` alone (measured:
#: mobilenet_v2 on Fashion-MNIST 5,000, every group at /10 gained +4.2 validation points on
#: a +0.6-per-doubling curve, three times the 1.2-point slope bound).
DOUBLINGS = {"near": 1.0, "far": 2.0, "unknown": 2.0}


def format_duration(seconds: float) -> str:
    """90 → '1.5 min', 840 → '14 min', 20 → '20 s'; the form the flag takes ('--time-budget 20m')."""
    if not math.isfinite(seconds):
        return "unbounded"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 10 else f"{minutes:.0f} min"


def budget_flag(seconds: float) -> str:
    """The ``--time-budget`` value that buys ``seconds`` of work, rounded up to whole minutes."""
    return f"--time-budget {max(1, math.ceil(seconds / 60))}m"


@dataclass
class Step:
    """One entry of ``decisions.json``'s ``steps``: what ran or was skipped, and its cost."""

    name: str
    action: str  # "ran" | "skipped" | "reduced"
    reason: str
    seconds: float | None = None
    estimated_s: float | None = None
    expected_gain: float | None = None
    flag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Budget:
    """A wall-clock budget that started at ``started`` (``time.perf_counter()``)."""

    total_s: float = DEFAULT_TIME_BUDGET_S
    started: float = field(default_factory=time.perf_counter)
    steps: list[Step] = field(default_factory=list)

    @property
    def deadline(self) -> float:
        return self.started + self.total_s

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def spent(self) -> float:
        return time.perf_counter() - self.started

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        return step


def plan_test_size(
    n_test: int,
    ms_per_example: float,
    budget_s: float,
    *,
    requested: int | str = "auto",
    time_left_s: float | None = None,
    share: float = TEST_SHARE,
) -> tuple[int, str | None]:
    """How many test examples to score, and why when it is fewer than all of them.

    ``requested`` is ``"all"``, ``"auto"`` or a number (``--test-size``). Under ``"auto"``
    the split is subsampled only when scoring it would take more than ``share`` of the
    budget (:data:`TEST_SHARE` before the fit, which keeps time for training; 1 after it,
    when only the time left counts) or more than ``time_left_s``, and never below
    :data:`MIN_TEST` (or the split).
    """
    if requested == "all" or not math.isfinite(budget_s):
        return n_test, None
    if isinstance(requested, int):
        return min(n_test, requested), None
    cost = n_test * ms_per_example / 1000
    allowed = share * budget_s
    if time_left_s is not None:
        allowed = min(allowed, max(0.0, time_left_s))
    if cost <= allowed:
        return n_test, None
    fits = int(allowed * 1000 / max(ms_per_example, 1e-6))
    n = min(n_test, max(MIN_TEST, fits))
    if n >= n_test:
        return n_test, None
    return n, (
        f"scoring all {n_test:,} test examples would take ~{format_duration(cost)} here, "
        f"more than the {format_duration(allowed)} the {format_duration(budget_s)} budget "
        f"leaves for it: scoring a stratified subset of {n:,} (--test-size all scores every one)"
    )


def resolvable_gain(val_accuracy: float, n_val: int, noise_z: float) -> float:
    """The smallest lead over ``val_accuracy`` the ladder's :func:`choose` would keep."""
    se = math.sqrt(max(val_accuracy * (1 - val_accuracy), 1e-4) / max(1, n_val))
    return noise_z * se


def predicted_gain(
    val_accuracy: float,
    domain: str | None,
    curve_slope: float | None = None,
    *,
    whole_network: bool = False,
) -> float:
    """An optimistic upper bound on fine-tuning's validation gain over extraction.

    The smaller of two bounds: a share (:data:`RECOVERABLE`, by domain verdict) of the error
    extraction leaves; and, when the learning curve was measured, what extraction itself
    would gain from :data:`DOUBLINGS` more doublings of the labels at the curve's current
    slope (``curve_slope``, accuracy per doubling; a flat curve bounds the gain at 0). The
    slope bound is dropped for a ``whole_network`` rung on far data: that rung replaces the
    features the curve measures.
    """
    key = domain if domain in RECOVERABLE else "unknown"
    bound = RECOVERABLE[key] * max(0.0, 1.0 - val_accuracy)
    if curve_slope is not None and not (whole_network and domain == "far"):
        bound = min(bound, DOUBLINGS[key] * max(0.0, curve_slope))
    return bound


def finetune_estimate(
    *,
    step_s_per_example: float,
    eval_ms_per_example: float,
    n_train: int,
    n_val: int,
    epochs: int,
) -> float:
    """Seconds a fine-tuning rung would take: its epochs, validation after each, and the
    tuned backbone's features of validation (the test split's time is reserved by the caller,
    ``Context.n_score``).
    """
    train = step_s_per_example * n_train * epochs
    evaluate = eval_ms_per_example / 1000 * n_val * (epochs + 1)
    return train + evaluate


def epochs_that_fit(
    *,
    step_s_per_example: float,
    eval_ms_per_example: float,
    n_train: int,
    n_val: int,
    time_left_s: float,
) -> int:
    """The most whole epochs of a fine-tuning rung that fit in ``time_left_s``, by the same
    cost model as :func:`finetune_estimate` (0 when not even one does)."""
    start = eval_ms_per_example / 1000 * n_val  # the starting point's validation pass
    per_epoch = step_s_per_example * n_train + eval_ms_per_example / 1000 * n_val
    fits = (time_left_s - start) / max(per_epoch, 1e-12)
    return math.floor(min(max(0.0, fits), 1e9))  # no time limit: as many as asked for


#: Seconds to load a candidate and prepare its engine, charged per ranked candidate on top
#: of its extraction (measured here: 1-3 s to load; an ONNX export with its parity check,
#: once per backbone and input size, 4-11 s; the estimate takes a middle value).
LOAD_S = 6.0


def estimate_ms(
    measured_ms: float,
    measured_gflops: float,
    gflops: float | None,
    size: int,
    pretraining_size: int,
) -> float | None:
    """A backbone's milliseconds per example, from one measured backbone and model-card FLOPs.

    ``measured_gflops`` is the measured backbone's FLOPs *at the size it was measured at*.
    FLOPs of a convolutional network scale with the number of input pixels; ``size`` is the
    input the candidate would get, ``pretraining_size`` the one its FLOPs are quoted at.
    """
    if gflops is None or measured_gflops <= 0:
        return None
    return measured_ms * (gflops * (size / pretraining_size) ** 2) / measured_gflops


#: The shortest token window :func:`fit_window` gives a text backbone to fit a budget: the
#: window the paraphrase-* sentence encoders were trained at (their model cards). With
#: head+tail truncation that is ~31 tokens from the start and ~95 from the end, where reviews
#: and reports tend to state their verdict (Sun et al. 2019 measured head+tail the best
#: truncation on IMDB).
MIN_WINDOW = 128


#: How far a FLOPs-scaled speed estimate may be off before a candidate it rules out is
#: measured instead. Measured on the 2-core development machine, on IMDB: scaled by FLOPs
#: from all-MiniLM-L6-v2's probe, all-mpnet-base-v2 was estimated at 2.05 ms per token and
#: measured at 1.47 (1.4x); small encoders lose more of their time to overheads FLOPs do
#: not count, so the estimate errs against the large ones.
FLOPS_SLACK = 2.0


def effective_tokens(lengths: Any, window: int, batch: int = 1) -> float:
    """Mean tokens per example a text backbone processes at ``window``: texts are cut to the
    window, sorted by length and padded to the longest of each ``batch`` (as the feature
    extraction batches them), so a short text costs its own tokens plus its batch's padding.
    """
    import numpy as np

    n = np.sort(np.minimum(np.asarray(lengths, dtype=np.float64), window))
    if not n.size:
        return float(window)
    padded = sum(len(n[i : i + batch]) * n[i : i + batch].max() for i in range(0, n.size, batch))
    return float(padded / n.size)


def fit_window(
    ms_per_token: float | Callable[[int], float],
    lengths: Any,
    full: int,
    n_job: int,
    budget_s: float,
    batch: int = 1,
) -> int | None:
    """The longest token window, a multiple of 32 from ``full`` down to :data:`MIN_WINDOW`,
    at which extracting ``n_job`` examples fits ``budget_s``, at ``ms_per_token`` per token
    processed (:func:`effective_tokens` of the sample ``lengths`` in batches of ``batch``).
    ``full`` when it already fits (or the budget is unlimited); None when not even
    :data:`MIN_WINDOW` fits. ``ms_per_token`` may be a function of the window.

    A constant cost per token, measured at a long window, is conservative for the shorter
    ones: attention's share shrinks with the window (all-mpnet-base-v2 on IMDB, here: 1.47
    ms per token at 384, 1.11 at 128).
    """
    if not math.isfinite(budget_s):
        return full

    def job_s(window: int) -> float:
        rate = ms_per_token(window) if callable(ms_per_token) else ms_per_token
        return rate * effective_tokens(lengths, window, batch) * n_job / 1000

    if job_s(full) <= budget_s:
        return full
    window = 32 * ((full - 1) // 32)
    while window >= MIN_WINDOW:
        if job_s(window) <= budget_s:
            return window
        window -= 32
    return None


def plan_ranking(
    estimates: dict[str, float | None],
    *,
    default: str,
    n_job: int,
    sample: int,
    budget_s: float,
) -> tuple[list[str], list[Step]]:
    """Which candidates to rank, given estimated ms per example (None: unknown).

    A candidate whose extraction of the whole job (``n_job`` examples) would not fit the
    budget is left out with its estimate; the rest are ranked only if extracting ``sample``
    examples with each (plus :data:`LOAD_S` apiece) fits :data:`RANK_SHARE` of the budget,
    dropping the costliest first. Fewer than two left: no ranking, the default is used.
    Unknown costs are never ranked under a finite budget (they could be any size).
    """
    steps: list[Step] = []
    finite = math.isfinite(budget_s)
    fits: dict[str, float] = {}
    for name, ms in estimates.items():
        if ms is None:
            if finite and name != default:
                steps.append(Step(f"rank {name}", "skipped", "its speed here is unknown"))
                continue
            ms = 0.0
        job = ms * n_job / 1000
        if finite and name != default and job > budget_s:
            steps.append(
                Step(
                    f"rank {name}",
                    "skipped",
                    f"extracting the {n_job:,} examples with it would take "
                    f"~{format_duration(job)} here, over the {format_duration(budget_s)} budget",
                    estimated_s=round(job, 1),
                    flag=budget_flag(2 * job),
                )
            )
            continue
        fits[name] = ms
    order = sorted(fits, key=lambda n: (n != default, fits[n]))
    while len(order) > 1:
        cost = sum(fits[n] * sample / 1000 + LOAD_S for n in order)
        if not finite or cost <= RANK_SHARE * budget_s:
            return order, steps
        dropped = order.pop()
        steps.append(
            Step(
                f"rank {dropped}",
                "skipped",
                f"ranking {len(order) + 1} candidates on {sample} examples would take "
                f"~{format_duration(cost)}, over {RANK_SHARE:.0%} of the "
                f"{format_duration(budget_s)} budget",
                estimated_s=round(fits[dropped] * sample / 1000 + LOAD_S, 1),
                flag=budget_flag(cost / RANK_SHARE),
            )
        )
    return order, steps


def measured_ms(extractions: list[dict[str, Any]]) -> float | None:
    """Milliseconds per example over the extractions that computed their features (the
    ``extraction`` records of ``metrics.json``: ``n`` and ``examples_per_s``); None when
    every one was read from the cache."""
    done = [e for e in extractions if not e.get("cached") and e.get("examples_per_s")]
    if not done:
        return None
    seconds = sum(e["n"] / e["examples_per_s"] for e in done)
    return 1000 * seconds / sum(e["n"] for e in done)
