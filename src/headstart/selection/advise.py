"""`headstart advise`: extract or fine-tune? A recommendation from measured facts, with reasons.

:func:`advise` measures, on a stratified sample of the training data (through the feature
cache that ``fit`` reads afterwards):

* **data**: labelled examples, examples per class, class balance;
* **domain**: :func:`headstart.selection.domain.domain_distance` (source-classifier entropy and the
  feature shift from the shipped natural-photo reference);
* **transferability**: LogME and a cross-validated linear probe;
* **a learning curve** of the linear probe (:class:`~headstart.heads.LogisticHead`, the
  head ``fit`` trains) on nested subsets of the sample;
* **compute**: extraction milliseconds per example, and one timed optimiser step on a few
  examples with the top layer groups unfrozen.

The decision is the auto ladder's own: the measured facts are handed to
:func:`headstart.strategies.ladder.next_step` as the extraction rung it would see, with the same
:class:`~headstart.config.LadderConfig`, so ``advise`` recommends fine-tuning exactly when
``fit --strategy auto`` would go on to fine-tune (up to the noise of estimating the
validation accuracy from the sample). The domain distance cannot overrule the ladder; it
sets how much fine-tuning is expected to add, how deep the ladder is expected to climb and
where in the 10-100x learning-rate range to start, and it names the rule that fired:

================================  ===========  ============================================
rule                              action       when
================================  ===========  ============================================
``small-data/near-domain``        extract      fewer than ``min_examples`` labelled or a
``small-data/far-domain``                      class under ``min_per_class`` (ladder stops)
``extraction-at-target``          extract      the probe already reaches ``target``
``no-time-for-finetuning``        extract      the budget is spent by extraction
``enough-data/far-domain``        finetune     far from the pretraining domain: large gain
                                               expected, deeper unfreezing likely
``enough-data/near-domain``       finetune     near: the ladder tries the top groups and
                                               keeps extraction unless they add >= min_gain
================================  ===========  ============================================

(``unknown-domain`` replaces the domain part when the backbone has neither a source head
nor a shipped reference.)

Expected accuracies, and how they are estimated. *Extraction*: from the probe's 5-fold
accuracy on the sample minus one fold standard deviation, up to the learning curve's
extrapolation to the training-set size plus one standard deviation. The extrapolation
fits the error as a power law of the examples each probe was trained on (log error linear
in log n, the usual shape of learning curves; the exponent is never positive) and goes at
most three doublings beyond the sample. *Fine-tuning*: not measured (that would
cost the fine-tuning itself). Its lower end is the extraction estimate (the ladder keeps
extraction when fine-tuning does not beat it on validation); its upper end assumes
fine-tuning removes at most a share of the probe's remaining error: half far from the
pretraining domain, a fifth near it. These shares are priors from the transfer literature
(Kornblith, Shlens & Le, CVPR 2019: fine-tuning gains most on data sets unlike ImageNet),
not measurements on the user's data, and the report says so.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones.base import Backbone
from ..config import LadderConfig
from ..data.base import Examples, Splits
from ..errors import ConfigError, DataError
from ..strategies.ladder import Decision, FirstRung, Rung, first_rung, next_step
from .domain import DomainReport, domain_distance

__all__ = ["FAR_GAIN_SHARE", "NEAR_GAIN_SHARE", "Advice", "DataFacts", "advise", "decide"]

#: Share of the probe's remaining error that fine-tuning is assumed to remove at most.
FAR_GAIN_SHARE = 0.5
NEAR_GAIN_SHARE = 0.2
#: Learning-curve extrapolation reaches at most this many doublings beyond the sample.
MAX_DOUBLINGS = 3.0
#: Class-count ratio (largest / smallest) from which the data is called imbalanced.
IMBALANCE = 3.0


@dataclass
class DataFacts:
    """What the decision needs to know about the labelled data."""

    n_labelled: int  # train + validation
    n_classes: int
    class_counts: list[int]
    n_val: int
    n_test: int = 0

    @property
    def min_class(self) -> int:
        return int(min(self.class_counts)) if self.class_counts else 0

    @property
    def per_class(self) -> float:
        return self.n_labelled / max(1, self.n_classes)

    @property
    def imbalance(self) -> float:
        lo = self.min_class
        return float(max(self.class_counts)) / lo if lo > 0 else math.inf

    @property
    def n_train(self) -> int:
        return self.n_labelled - self.n_val


@dataclass
class Advice:
    """A recommendation ('extract' or 'finetune'), the rule that fired and the facts behind it."""

    recommendation: str
    rule: str
    reasons: list[str]
    backbone: str
    facts: dict[str, Any]
    domain: dict[str, Any]
    transferability: dict[str, Any]
    learning_curve: dict[str, Any]
    expected: dict[str, Any]
    unfreeze: int  # the ladder's first fine-tuning rung (0 when extracting)
    unfreeze_max: int  # how deep the ladder is expected to go
    n_groups: int
    lr: dict[str, Any]
    compute: dict[str, Any]
    ladder: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """The advice as text: recommendation, rule, reasons, then the numbers."""
        e, c = self.expected, self.compute
        rec = (
            "feature extraction (frozen backbone + linear head)"
            if self.recommendation == "extract"
            else (
                f"fine-tuning: start with all {self.n_groups} layer groups"
                if self.unfreeze >= self.n_groups
                else f"fine-tuning: start with the top {self.unfreeze} of {self.n_groups} layer groups"
            )
            + (f", expect up to {self.unfreeze_max}" if self.unfreeze_max > self.unfreeze else "")
            + f", backbone LR {self.lr['backbone']:.2g}"
        )
        lines = [f"recommendation: {rec}", f"rule: {self.rule}", "because:"]
        lines += [f"  - {r}" for r in self.reasons]
        lines.append("expected accuracy:")
        lines.append(
            f"  extraction   {e['extract'][0]:.3f} - {e['extract'][1]:.3f}  ({e['extract_how']})"
        )
        lines.append(
            f"  fine-tuning  {e['finetune'][0]:.3f} - {e['finetune'][1]:.3f}  ({e['finetune_how']})"
        )
        lines.append("compute on this machine:")
        lines.append(
            f"  extraction   {_dur(c['extract_s'])} ({c['ms_per_example']:.1f} ms/example x "
            f"{c['n_extract']:,} examples)"
        )
        lines.append(
            f"  fine-tuning  {_dur(c['finetune_s'])} for the first rung ({c['epochs']} epochs, "
            f"{c['finetune_ms_per_example']:.1f} ms/example per training step), up to "
            f"{_dur(c['ladder_max_s'])} if the ladder climbs {self.ladder['config']['max_rungs']} rungs"
        )
        lr = self.lr
        lines.append(
            f"learning rates: head {lr['head']:g}, backbone {lr['backbone']:.2g} "
            f"(range {lr['backbone_range'][0]:g} - {lr['backbone_range'][1]:g}; {lr['note']})"
        )
        return "\n".join(lines)


def _dur(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


# ------------------------------------------------------------------------ the decision
def decide(
    facts: DataFacts,
    domain_verdict: str,
    extract_range: tuple[float, float],
    extract_point: float,
    *,
    n_groups: int,
    extract_s: float,
    finetune_s: float,
    budget_s: float | None = None,
    curve_slope: float | None = None,
    cfg: LadderConfig | None = None,
    first: FirstRung | None = None,
) -> tuple[str, str, list[str], Decision]:
    """(recommendation, rule, reasons, the ladder's decision) from measured facts.

    A pure function: the ladder's :func:`~headstart.strategies.ladder.next_step` is asked what it
    would do after an extraction rung scoring ``extract_point`` on validation, with the
    budget left after extraction; the domain verdict ('near', 'far' or 'unknown') names
    the rule and shapes the reasons.
    """
    cfg = cfg or LadderConfig()
    if domain_verdict not in ("near", "far", "unknown"):
        raise ConfigError(
            f"domain_verdict must be 'near', 'far' or 'unknown', got {domain_verdict!r}."
        )
    time_left = None if budget_s is None else budget_s - extract_s
    decision = next_step(
        [Rung(0, float(extract_point), float(extract_s))],
        n_labelled=facts.n_labelled,
        min_class_count=facts.min_class,
        n_classes=facts.n_classes,
        n_groups=n_groups,
        n_val=max(1, facts.n_val),
        cfg=cfg,
        time_left_s=time_left,
        curve_slope=curve_slope,
        first=first,
    )
    dom = {"near": "near-domain", "far": "far-domain", "unknown": "unknown-domain"}[domain_verdict]
    small = facts.n_labelled < cfg.min_examples or facts.min_class < cfg.min_per_class
    reasons = [
        f"{facts.n_labelled:,} labelled examples in {facts.n_classes} classes "
        f"({facts.per_class:.0f} per class on average, smallest class {facts.min_class}); "
        f"the ladder fine-tunes from {cfg.min_examples:,} examples and {cfg.min_per_class} per class"
    ]
    if facts.imbalance >= IMBALANCE:
        reasons.append(
            f"the classes are imbalanced (largest / smallest = {facts.imbalance:.1f}): the head "
            "weights classes by inverse frequency; judge the result by macro-F1"
        )
    if decision.action == "finetune":
        recommendation = "finetune"
        rule = f"enough-data/{dom}"
        if domain_verdict == "far":
            reasons.append(
                "the data is far from the pretraining domain: the frozen features miss "
                "what separates these classes, so fine-tuning is expected to add most here"
            )
        elif domain_verdict == "near":
            reasons.append(
                "the data is near the pretraining domain: the frozen features already "
                f"fit, so the ladder will keep extraction unless fine-tuning adds "
                f"{100 * cfg.min_gain:.1f} points on validation"
            )
        if budget_s is not None and extract_s + finetune_s > budget_s:
            frac = max(0.0, budget_s - extract_s) / max(finetune_s, 1e-9)
            reasons.append(
                f"the budget of {_dur(budget_s)} covers about {100 * frac:.0f} % of the first "
                "fine-tuning rung; the ladder stops when it is spent and keeps the best so far"
            )
    else:
        recommendation = "extract"
        if small:
            rule = f"small-data/{dom}"
            if domain_verdict == "far":
                reasons.append(
                    "the data is far from the pretraining domain, so fine-tuning could help, "
                    "but too few labelled examples to fine-tune safely or to measure its gain"
                )
            elif domain_verdict == "near":
                reasons.append(
                    "the data is near the pretraining domain: the frozen features fit it"
                )
        elif extract_point >= cfg.target:
            rule = "extraction-at-target"
        elif time_left is not None and time_left <= 0:
            rule = "no-time-for-finetuning"
            reasons.append(
                f"extraction alone takes about {_dur(extract_s)} of the {_dur(budget_s or 0)} budget"
            )
        else:  # pragma: no cover - next_step has no other reason to stop after extraction
            rule = "ladder-stop"
    reasons.append("ladder: " + decision.reason)
    return recommendation, rule, reasons, decision


# ------------------------------------------------------------------------ measurements
def _facts(data: Examples | Splits, val_fraction: float) -> tuple[Examples, DataFacts]:
    if isinstance(data, Splits):
        counts = data.train.class_counts() + data.val.class_counts()
        n_test = len(data.test) if data.test is not None else 0
        return data.train, DataFacts(
            len(data.train) + len(data.val),
            len(data.classes),
            [int(c) for c in counts],
            len(data.val),
            n_test,
        )
    if isinstance(data, Examples):
        if (data.labels < 0).any():
            raise DataError(
                f"{int((data.labels < 0).sum())} examples have no label; advise needs "
                "labelled examples. Drop the unlabelled ones first."
            )
        counts = data.class_counts()
        n_val = max(round(val_fraction * len(data)), int((counts > 0).sum()))
        return data, DataFacts(
            len(data), int((counts > 0).sum()), [int(c) for c in counts if c > 0], n_val
        )
    raise ConfigError(f"advise needs Examples or Splits, got {type(data).__name__}.")


def learning_curve(
    features: np.ndarray, labels: np.ndarray, *, seed: int = 0, cv: int = 5, probe: str = "logistic"
) -> dict[str, Any]:
    """CV probe accuracy on nested stratified subsets (1/4, 1/2, all) of the sample."""
    from ..data.split import stratified_subset
    from .cost import one_blas_thread
    from .rank import probe_cv

    n = len(labels)
    k = len(np.unique(labels))
    sizes = sorted({max(2 * k * 2, n // 4), max(2 * k * 2, n // 2), n})
    points = []
    with one_blas_thread():
        for m in sizes:
            if m > n:
                continue
            idx = np.arange(n) if m >= n else stratified_subset(labels, m, seed, min_per_class=2)
            try:
                acc, std, folds = probe_cv(
                    features[idx], labels[idx], cv=cv, seed=seed, probe=probe
                )
            except DataError:
                continue
            n_fit = m * (folds - 1) / folds  # examples each fold's probe was trained on
            points.append(
                {"n": int(m), "n_fit": n_fit, "accuracy": acc, "std": std, "folds": folds}
            )
    slope, exponent = 0.0, 0.0
    if len(points) >= 2:
        x = np.log2([p["n_fit"] for p in points])
        y = np.array([p["accuracy"] for p in points])
        slope = float(np.polyfit(x, y, 1)[0])
        # Power law of the error, err ~ n^b: log2(err) is linear in log2(n). An error of
        # zero is floored at half an example of the held-out folds.
        err = np.array([max(1 - p["accuracy"], 0.5 / p["n"]) for p in points])
        exponent = min(0.0, float(np.polyfit(x, np.log2(err), 1)[0]))
    return {
        "points": points,
        "slope_per_doubling": slope,
        "error_exponent": exponent,
        "probe": probe,
    }


def _extract_estimate(
    curve: dict[str, Any], n_train: int
) -> tuple[tuple[float, float], float, str]:
    """(low, high), point estimate and a description of the extraction accuracy at n_train."""
    last = curve["points"][-1]
    acc, std, n_fit = last["accuracy"], last["std"], last["n_fit"]
    doublings = min(MAX_DOUBLINGS, max(0.0, math.log2(max(n_train, 1) / n_fit)))
    err = max(1.0 - acc, 0.5 / last["n"])
    point = acc if doublings == 0 else 1.0 - err * 2.0 ** (curve["error_exponent"] * doublings)
    point = max(acc, point)
    lo, hi = max(0.0, acc - std), min(1.0, point + std)
    how = f"{last['folds']}-fold linear probe on {last['n']} examples: {acc:.3f} ± {std:.3f}" + (
        f", error extrapolated {doublings:.1f} doublings to {n_train:,} training examples "
        f"(power law, exponent {curve['error_exponent']:.2f})"
        if doublings > 0
        else ""
    )
    return (lo, hi), point, how


def _train_step_ms(backbone: Backbone, sample: Examples, k: int, n: int = 8) -> float:
    """Milliseconds per example of one training step with the top ``k`` groups unfrozen."""
    import torch
    from torch import nn

    from ..backbones.base import ImagePreprocess
    from ..features import preprocess as P
    from ..strategies.training import TransferModel, apply_freeze, select_groups, set_train_mode

    n = max(2, min(n, len(sample)))
    bb = copy.deepcopy(backbone)
    pre = bb.preprocess
    if isinstance(pre, ImagePreprocess):
        inputs = {"pixel_values": P.image_tensor(sample.inputs[:n], pre)}
    elif isinstance(pre, P.TextPreprocess):
        seqs = P.tokenize([str(t) for t in list(sample.inputs)[:n]], pre)
        inputs = P.pad_batch(seqs, P.get_tokenizer(pre).pad_token_id or 0)
    else:  # audio
        from ..backbones.audio import audio_batch

        inputs = audio_batch(list(sample.inputs)[:n], pre)
    y = torch.as_tensor(sample.labels[:n], dtype=torch.long)
    trainable, _ = select_groups(bb, k)
    apply_freeze(bb, trainable)
    head = nn.Linear(bb.feature_dim, max(2, int(sample.labels.max()) + 1))
    model = TransferModel(bb, head)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    set_train_mode(model)
    times = []
    for _ in range(3):  # the first step pays one-time allocation; keep the fastest of the rest
        t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(**inputs), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    del model, bb
    return 1000.0 * min(times[1:]) / n


def advise(
    examples_or_splits: Examples | Splits,
    backbone: str | Backbone | None = None,
    *,
    budget_s: float | None = None,
    sample: int = 500,
    seed: int = 0,
    ladder: LadderConfig | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    engine: str = "auto",
    val_fraction: float = 0.2,
    epochs: int | None = None,
) -> Advice:
    """Recommend extraction or fine-tuning for this data and backbone, from measurements.

    ``backbone`` defaults to the modality's default backbone. ``budget_s`` is the time the
    user can spend (fit's ``--time-budget``). For :class:`Examples` (all labelled data), the
    validation size is the ``val_fraction`` that ``load_data`` would carve; for
    :class:`Splits` it is the real one. The sample is drawn from the training split; when
    it is the whole split, its features are the very cache entry ``fit`` reads (the cache
    is keyed by content). ``epochs`` defaults to :class:`~headstart.config.FinetuneConfig`'s.
    """
    from ..backbones.registry import DEFAULT_BACKBONE, load_backbone
    from ..config import FinetuneConfig
    from ..features.cache import extract_features
    from ..forgetting import MAX_RATIO, MIN_RATIO
    from .cost import extraction_cost, one_blas_thread
    from .rank import probe_cv, take_sample
    from .transferability import logme

    cfg = ladder or LadderConfig()
    ft = FinetuneConfig()
    if budget_s is not None and not (isinstance(budget_s, int | float) and budget_s > 0):
        raise ConfigError(f"budget_s must be a positive number of seconds, got {budget_s!r}.")
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 8:
        raise ConfigError(f"sample must be a whole number >= 8, got {sample!r}.")
    train, facts = _facts(examples_or_splits, val_fraction)
    if facts.n_classes < 2:
        raise DataError("advise needs at least two classes in the labelled data.")
    if backbone is None:
        backbone = DEFAULT_BACKBONE.get(train.modality)
        if backbone is None:
            raise ConfigError(
                f"No default backbone for {train.modality} data: pass --backbone NAME."
            )
    bb = load_backbone(backbone) if isinstance(backbone, str) else backbone
    bb.eval()

    sub = take_sample(train, sample, seed, cv=5)
    fs = extract_features(bb, sub, cache_dir=cache_dir, progress=progress, engine=engine)
    feats = fs.load()
    ms, cost_from = extraction_cost(bb, fs, sub, engine, None)
    dom: DomainReport = domain_distance(bb, feats)
    with one_blas_thread():
        lm = logme(feats.astype(np.float64), sub.labels)
        r_acc, r_std, _ = probe_cv(feats, sub.labels, seed=seed, probe="ridge")
    curve = learning_curve(feats, sub.labels, seed=seed)
    if not curve["points"]:
        raise DataError(
            "The sample is too small for a cross-validated probe: every class needs "
            "at least 2 examples in it. Add examples or raise --sample."
        )
    (e_lo, e_hi), e_point, e_how = _extract_estimate(curve, facts.n_train)

    n_groups = len(bb.layer_groups())
    first = (
        first_rung(
            verdict=dom.verdict,
            distance=dom.distance,
            n_train=facts.n_train,
            batch_size=ft.batch_size * ft.grad_accum,
            n_groups=n_groups,
            ladder_cfg=cfg,
            finetune_cfg=ft,
        )
        if cfg.first_rung == "domain" and epochs is None
        else None
    )
    k_first = first.unfreeze if first is not None else min(cfg.first_unfreeze, n_groups)
    step_ms = _train_step_ms(bb, sub, k_first)
    n_epochs = epochs or (first.epochs if first is not None else ft.epochs)
    lr_ratio = first.lr_ratio if first is not None else ft.lr_ratio
    n_extract = facts.n_labelled + facts.n_test
    extract_s = ms * n_extract / 1000.0
    finetune_s = n_epochs * (facts.n_train * step_ms + facts.n_val * ms) / 1000.0

    rec, rule, reasons, decision = decide(
        facts,
        dom.verdict,
        (e_lo, e_hi),
        e_point,
        n_groups=n_groups,
        extract_s=extract_s,
        finetune_s=finetune_s,
        budget_s=budget_s,
        curve_slope=curve["slope_per_doubling"],
        cfg=cfg,
        first=first,
    )
    reasons[1:1] = [f"domain ({dom.verdict}): " + r for r in dom.reasons]
    reasons.insert(
        len(dom.reasons) + 1,
        f"transferability: LogME {lm:.3f}, linear probe {curve['points'][-1]['accuracy']:.3f} "
        f"on {len(sub)} examples, learning curve {100 * curve['slope_per_doubling']:+.1f} "
        "points per doubling",
    )

    share = FAR_GAIN_SHARE if dom.verdict != "near" else NEAR_GAIN_SHARE
    f_lo, f_hi = e_lo, min(1.0, e_hi + share * (1.0 - e_hi))
    deep = max(k_first, min(n_groups, cfg.first_unfreeze + cfg.step * (cfg.max_rungs - 1)))
    unfreeze_max = deep if dom.verdict == "far" else k_first
    head_lr = ft.lr
    lr_note = (
        "far domain: start toward the top of the range, the features must move"
        if dom.verdict == "far"
        else "near domain: the default or lower protects features that already fit"
        if dom.verdict == "near"
        else "the 10-100x rule"
    )
    return Advice(
        recommendation=rec,
        rule=rule,
        reasons=reasons,
        backbone=bb.name,
        facts={
            "n_labelled": facts.n_labelled,
            "n_train": facts.n_train,
            "n_val": facts.n_val,
            "n_test": facts.n_test,
            "n_classes": facts.n_classes,
            "class_counts": facts.class_counts,
            "min_class": facts.min_class,
            "per_class": facts.per_class,
            "imbalance": facts.imbalance,
        },
        domain=dom.to_dict(),
        transferability={"logme": lm, "ridge_probe": [r_acc, r_std], "n_sample": len(sub)},
        learning_curve=curve,
        expected={
            "extract": [e_lo, e_hi],
            "extract_point": e_point,
            "extract_how": e_how,
            "finetune": [f_lo, f_hi],
            "finetune_how": (
                f"not measured: from the extraction estimate (the ladder keeps "
                f"extraction if fine-tuning does not beat it) up to removing "
                f"{100 * share:.0f} % of its remaining error, a prior for "
                f"{'far' if dom.verdict != 'near' else 'near'}-domain data"
            ),
        },
        unfreeze=decision.unfreeze if rec == "finetune" else 0,
        unfreeze_max=unfreeze_max if rec == "finetune" else 0,
        n_groups=n_groups,
        lr={
            "head": head_lr,
            "backbone": head_lr / lr_ratio,
            "backbone_range": [head_lr / MAX_RATIO, head_lr / MIN_RATIO],
            "note": lr_note,
        },
        compute={
            "ms_per_example": ms,
            "cost_from": cost_from,
            "n_extract": n_extract,
            "extract_s": extract_s,
            "finetune_ms_per_example": step_ms,
            "epochs": n_epochs,
            "finetune_s": finetune_s,
            "ladder_max_s": finetune_s * cfg.max_rungs,
            "finetune_how": (
                f"{n_epochs} epochs x ({facts.n_train:,} training examples at "
                f"one timed step with the top {k_first} of {n_groups} groups unfrozen + "
                f"{facts.n_val:,} validation examples at the extraction cost)"
            ),
        },
        ladder={
            "action": decision.action,
            "unfreeze": decision.unfreeze,
            "reason": decision.reason,
            "config": cfg.to_dict(),
        },
    )
