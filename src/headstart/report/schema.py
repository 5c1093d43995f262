"""What a run folder and a study folder hold: file names and the structure of each JSON file.

The writers (`headstart fit`, `headstart curve`) and the reader (:mod:`headstart.report`) share
these definitions, so a key renamed on one side is a type error on the other. They are
:class:`~typing.TypedDict`\\ s: at run time the files are plain dicts, as :func:`json.load`
returns them. Keys marked ``NotRequired`` are present only in some runs (a test split, a
fine-tuned rung, a baseline); a file may hold keys that are not listed here.

This module imports nothing heavy (no torch, no numpy), so any module may import it. It has
no ``from __future__ import annotations``: with it, Python 3.11 cannot see ``NotRequired`` at
run time (``__required_keys__`` would list every key).
"""

import json
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from ..errors import DataError

__all__ = [
    "CONFIG_FILE",
    "CURVE_FILE",
    "DECISIONS_FILE",
    "ERRORS_FILE",
    "METRICS_FILE",
    "REPORT_FILE",
    "STRATEGY_LABELS",
    "BackboneChoice",
    "BaselineResult",
    "ClassScores",
    "CurveCells",
    "CurveDoc",
    "CurveRow",
    "DataDescription",
    "Decisions",
    "EpochRecord",
    "ErrorRow",
    "ErrorsDoc",
    "ExtractionInfo",
    "FinetuneDetail",
    "Forgetting",
    "HeadSelection",
    "LearningCurve",
    "LearningCurvePoint",
    "LrGuard",
    "Metrics",
    "ReliabilityBin",
    "ResolvedConfig",
    "RunConfig",
    "Rung",
    "ShortMetrics",
    "SplitMetrics",
    "Timings",
    "read_json",
    "strategy_label",
]

# ------------------------------------------------------------------------------- file names
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
DECISIONS_FILE = "decisions.json"
ERRORS_FILE = "errors.json"
REPORT_FILE = "report.html"
CURVE_FILE = "curve.json"

#: What each strategy of a `curve` study is called in tables, plots and the report.
STRATEGY_LABELS = {
    "auto": "auto (the default ladder)",
    "finetune": "fine-tuning",
    "extract": "feature extraction",
    "scratch": "from scratch (same architecture)",
    "cnn": "small CNN from scratch",
    "baseline": "pixels/TF-IDF + logistic regression",
}
#: What ``cnn`` and ``baseline`` are on each modality (the generic names cover them all).
_MODALITY_LABELS = {
    "image": {"baseline": "pixels + logistic regression"},
    "text": {"cnn": "text CNN from scratch", "baseline": "TF-IDF + logistic regression"},
    "audio": {"baseline": "log-mel statistics + logistic regression"},
}


def strategy_label(strategy: str, modality: str | None = None) -> str:
    """A study strategy's name for tables and plots, specific to ``modality`` when given."""
    return _MODALITY_LABELS.get(modality or "", {}).get(strategy) or STRATEGY_LABELS.get(
        strategy, strategy
    )


# ------------------------------------------------------------------- metrics of one split
class ClassScores(TypedDict):
    precision: float
    recall: float
    f1: float
    support: int


class ReliabilityBin(TypedDict):
    """One confidence bin of the reliability diagram; confidence and accuracy are None when
    the bin is empty."""

    lower: float
    upper: float
    confidence: float | None
    accuracy: float | None
    count: int


class SplitMetrics(TypedDict):
    """:func:`headstart.metrics.classification_metrics` of one split."""

    n: int
    accuracy: float
    macro_f1: float
    balanced_accuracy: float
    log_loss: float
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]
    roc_auc: float | None
    ece: float
    reliability: list[ReliabilityBin]
    accuracy_se: NotRequired[float]  # binomial standard error (the test split of a fit)
    majority_rate: NotRequired[float]  # share of the largest class (a baseline's splits)


class ShortMetrics(TypedDict, total=False):
    """The validation scores a ladder rung keeps (a subset of :class:`SplitMetrics`)."""

    accuracy: float
    macro_f1: float
    log_loss: float


# ------------------------------------------------------------------------------ metrics.json
class HeadSelection(TypedDict, total=False):
    """How the head chose its hyper-parameters on validation data (its fitted attributes
    without the trailing underscore). ``val_scores`` maps each C tried, as a string, to its
    validation ``log_loss`` and ``accuracy``."""

    C: float
    val_scores: dict[str, dict[str, float]]
    n_iter: int
    best_epoch: int


class ExtractionInfo(TypedDict):
    """Feature extraction of one split (``examples_per_s`` only when something was computed)."""

    n: int
    engine: str
    seconds: float
    cached: bool
    cache_key: str
    examples_per_s: NotRequired[float]


class Timings(TypedDict):
    """Seconds spent; ``finetune_s`` (all fine-tuned rungs) is absent from older run folders."""

    features_s: float
    head_s: float
    finetune_s: NotRequired[float]
    total_s: float


class EpochRecord(TypedDict):
    """One epoch of fine-tuning."""

    epoch: int
    train_loss: float
    val_accuracy: float
    val_loss: float
    seconds: float
    lr_head: float


class LrGuard(TypedDict):
    """The 10-100x rule on the head's and the backbone's learning rates."""

    head_lr: float
    backbone_lr: float
    ratio: float
    ok: bool
    message: str


class Forgetting(TypedDict):
    """How far fine-tuning moved the pretrained model, on ``probe_size`` validation examples.

    ``source_top1_agreement`` needs a backbone that kept its original classifier; the
    ``*_source`` measures are taken on natural photos (image backbones only).
    """

    probe_size: int
    cka: float
    weight_drift: dict[str, float]
    source_top1_agreement: NotRequired[float]
    cka_source: NotRequired[float]
    source_top1_agreement_source: NotRequired[float]


class FinetuneDetail(TypedDict):
    """``metrics.json["finetune"]``: the chosen fine-tuned rung's training, in full."""

    val_accuracy: float
    val_loss: float
    best_epoch: int
    epochs_run: int
    unfrozen: list[str]
    n_trainable: int
    lrs: dict[str, float]
    lr_ratio: NotRequired[float]  # head LR / backbone LR (absent from older run folders)
    epochs: NotRequired[int]  # planned epochs (absent from older run folders)
    guard: LrGuard
    history: list[EpochRecord]
    stopped: str
    seconds: float
    examples_per_s: float
    start_val_accuracy: float | None
    kept_start: bool
    forgetting: Forgetting
    val_metrics: ShortMetrics
    resumed_from: NotRequired[int | None]  # epochs a killed run had finished, when resumed


class BaselineResult(TypedDict):
    """The no-transfer baseline (pixels or TF-IDF + logistic regression)."""

    name: str
    val: SplitMetrics
    test: NotRequired[SplitMetrics]
    seconds: float


class PlanStep(TypedDict):
    """One step of a fit under its time budget (:class:`headstart.plan.Step`): what ran,
    was shrunk or was skipped, its seconds or estimated cost, and the flag that runs it."""

    name: str
    action: str
    reason: str
    seconds: NotRequired[float]
    estimated_s: NotRequired[float]
    expected_gain: NotRequired[float]
    flag: NotRequired[str]


class SkippedRung(TypedDict):
    """A fine-tuning rung (or the CNN contender) the cost model did not start."""

    step: str
    reason: str
    estimated_s: float | None
    expected_gain: float | None
    flag: str | None
    #: the time left the step needs to start, where more than its cost (the CNN contender
    #: takes at most half of it)
    needs_s: NotRequired[float]


class TestSubset(TypedDict):
    """The stratified test subset a budgeted fit scored instead of the whole split."""

    n: int
    of: int
    reason: str
    stratified: bool
    seed: int


class Contender(TypedDict):
    """``--strategy auto``: the non-transfer baseline (and the stack of it with transfer)
    pitted against the chosen transfer model on validation (strategies.contend)."""

    chosen: str  # "transfer" | "baseline" | "stack"
    reason: str
    baseline: str
    val_accuracy: dict[str, float]  # per candidate; the stack's is cross-validated
    #: {"weights": [transfer, baseline, *others], "bias": per class}
    stack: dict[str, list[float]] | None
    seconds: float
    #: the stack's other non-transfer models after ``baseline`` (images: the small CNN or
    #: pixels + logistic regression, whichever is not the best single one)
    others: NotRequired[list[str]]
    stack_folds: NotRequired[int]
    val_log_loss: NotRequired[dict[str, float]]  # cross-validated, each model recalibrated
    baselines_val_accuracy: NotRequired[dict[str, float]]  # every non-transfer model
    scratch_seconds: NotRequired[dict[str, float]]  # training time of the small CNN


class Metrics(TypedDict):
    """``metrics.json`` of a fit. ``val`` and ``test`` are the final model's scores;
    ``extract_*`` the linear probe's beside a fine-tuned model."""

    backbone: str
    head: str
    strategy: str
    train_size: int
    n_train: int
    n_val: int
    n_test: int
    head_selection: HeadSelection
    val: SplitMetrics
    test: NotRequired[SplitMetrics]
    finetune: NotRequired[FinetuneDetail]
    extract_val: NotRequired[SplitMetrics]
    extract_test: NotRequired[SplitMetrics]
    baseline: NotRequired[BaselineResult]
    timings: Timings
    extraction: dict[str, ExtractionInfo]
    test_subset: NotRequired[TestSubset]
    steps: NotRequired[list[PlanStep]]
    time_budget_s: NotRequired[float]
    #: what predicts: "transfer", or the "baseline" / "stack" auto kept over it
    predictor: NotRequired[str]
    contender: NotRequired[Contender]
    transfer_test: NotRequired[SplitMetrics]  # transfer alone, beside a kept baseline / stack


# ---------------------------------------------------------------------------- decisions.json
class Rung(TypedDict):
    """One rung of the ladder: extraction (``unfreeze`` 0) or fine-tuning the top groups.

    Rung 0 carries ``head_selection``; a fine-tuned rung carries its training detail.
    """

    unfreeze: int
    label: str
    val_accuracy: float
    seconds: float
    val: ShortMetrics
    head_selection: NotRequired[HeadSelection]
    unfrozen: NotRequired[list[str]]
    n_trainable: NotRequired[int]
    lr_ratio: NotRequired[float]  # head LR / backbone LR of this rung
    lrs: NotRequired[dict[str, float]]
    epochs: NotRequired[int]  # planned (a time cut included); epochs_run: how many ran
    best_epoch: NotRequired[int]
    epochs_run: NotRequired[int]
    stopped: NotRequired[str]
    examples_per_s: NotRequired[float]
    start_val_accuracy: NotRequired[float | None]
    kept_start: NotRequired[bool]
    forgetting: NotRequired[Forgetting]
    guard: NotRequired[LrGuard]
    history: NotRequired[list[EpochRecord]]


class BackboneChoice(TypedDict):
    """``--backbone auto``: the backbone chosen, why, and the ranking table (None when
    there was nothing to rank)."""

    chosen: str
    reason: str
    table: dict[str, Any] | None


class LearningCurvePoint(TypedDict):
    n: int
    val_accuracy: float


class LearningCurve(TypedDict):
    """The linear probe on growing parts of the training split (``--strategy auto``)."""

    points: list[LearningCurvePoint]
    slope_per_doubling: float


class Decisions(TypedDict):
    """``decisions.json`` of a fit: the ladder's rungs and the reason for every step."""

    strategy: str
    rungs: list[Rung]
    reasons: list[str]
    chosen: str
    backbone: NotRequired[BackboneChoice]
    ladder: NotRequired[dict[str, Any]]
    learning_curve: NotRequired[LearningCurve]
    domain: NotRequired[dict[str, Any]]
    #: how the first fine-tuning rung was chosen ("domain" or "fixed"), its settings and why
    first_rung: NotRequired[dict[str, Any]]
    skipped: NotRequired[list[SkippedRung]]
    steps: NotRequired[list[PlanStep]]
    budget: NotRequired[dict[str, Any]]
    contender: NotRequired[Contender]


# ------------------------------------------------------------------------------- config.json
class DataDescription(TypedDict, total=False):
    """What :func:`headstart.data.load_data` says about the splits (and more keys)."""

    source: str
    summary: str
    classes: list[str]
    class_counts: dict[str, dict[str, int] | None]
    sizes: dict[str, int]
    fingerprint: dict[str, str]


class ResolvedConfig(TypedDict):
    """What the settings resolved to: the backbone (``Backbone.describe()``), the data's
    modality and the run folder (``out``, absent from older run folders)."""

    backbone: dict[str, Any]
    modality: str
    out: NotRequired[str]
    image_size: NotRequired[int | None]  # the input size the fit used (images)
    native_size: NotRequired[int | None]  # the data's own image size (median longer side)
    n_test: NotRequired[int]  # test examples scored (a stated subset under a budget)


class RunConfig(TypedDict):
    """``config.json`` of a fit: the settings as given (``config``), what they resolved to,
    the data, and the library versions and machine."""

    config: dict[str, Any]
    resolved: ResolvedConfig
    data: DataDescription
    versions: dict[str, Any]
    machine: dict[str, Any]


# -------------------------------------------------------------------------------- errors.json
class ErrorRow(TypedDict):
    """One confidently wrong example. ``input`` is ``{"kind": "image", "png", "width",
    "height"}``, ``{"kind": "text", "text", "chars"}`` or ``{"kind": "file", "text"}``."""

    index: int
    source: str
    true: str
    pred: str
    true_index: int
    pred_index: int
    confidence: float
    input: dict[str, Any]


class ErrorsDoc(TypedDict):
    format: int
    split: str
    n: NotRequired[int]
    n_wrong: NotRequired[int]
    k: NotRequired[int]
    errors: list[ErrorRow]


# -------------------------------------------------------------------------------- curve.json
class CurveRow(TypedDict):
    """One (strategy, fraction) of a study: mean ± sample std over its seeds."""

    strategy: str
    fraction: float
    n_labelled: int
    n_seeds: int
    seeds: list[int]
    accuracy_mean: float
    accuracy_std: float
    macro_f1_mean: float
    macro_f1_std: float
    seconds_mean: float
    accuracies: list[float]


class CurveCells(TypedDict):
    total: int
    done: int
    computed: int
    reused: int


class CurveDoc(TypedDict):
    """``curve.json`` of a `headstart curve` study."""

    format: int
    config: dict[str, Any]
    command: str | None
    strategies: list[str]
    fractions: list[float]
    seeds: list[int]
    data: dict[str, Any]
    backbone: dict[str, Any]
    features: dict[str, Any]
    rows: list[CurveRow]
    headline: str
    headline_detail: dict[str, Any]
    notes: list[str]
    cells: CurveCells
    complete: bool
    seconds: float
    versions: dict[str, Any]
    machine: dict[str, Any]
    written: str


def read_json(path: Path) -> Any:
    """The JSON document at `path`; a :class:`~headstart.errors.DataError` that says how to
    recover when it is not valid JSON (a run interrupted while writing it)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not valid JSON ({exc}); the run that wrote it was probably "
            "interrupted. Re-run the command that made this folder."
        ) from None
