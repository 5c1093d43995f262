"""What every strategy takes (:class:`Context`) and gives back (:class:`StrategyResult`).

A strategy turns a pretrained backbone and the train / validation splits into a fitted
model (a backbone, possibly tuned, plus a head) and its validation scores. ``fit``, ``curve``
and :class:`~headstart.TransferClassifier` all run strategies through this contract, so a
study cell, a fit and an estimator with the same settings compute the same thing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones.base import Backbone
from ..data.base import Examples

#: (backbone, examples) → features; the caller decides how (feature cache, in memory).
FeatureFn = Callable[[Backbone, Examples], np.ndarray]


@dataclass
class Context:
    """The inputs of a strategy: data, the pristine backbone and how to get features.

    ``backbone`` is never modified: a strategy that trains copies it. Features of the
    pristine backbone on ``train`` / ``val`` are computed once (or handed in precomputed,
    as the data-efficiency study does) and shared by every rung.
    """

    backbone: Backbone
    train: Examples
    val: Examples | None
    classes: list[str]
    features: FeatureFn
    seed: int = 0
    progress: bool = False
    checkpoint_dir: Path | None = None
    deadline: float | None = None  # time.perf_counter() value after which no rung starts
    budget_s: float | None = None  # the whole budget the deadline came from (for messages)
    #: examples the caller scores after the fit (a test split): their extraction time, at the
    #: speed measured on train and validation, is kept out of the ladder's time
    n_score: int = 0
    reserve_s: float = 0.0  # set by run_strategy once the extraction speed is measured
    train_features: np.ndarray | None = None
    val_features: np.ndarray | None = None
    #: per-example loss weights of ``train`` (None: all 1); only extraction honours them
    sample_weight: np.ndarray | None = None

    def pristine(self, split: str) -> np.ndarray:
        """Features of the pretrained backbone on ``"train"`` or ``"val"`` (computed once)."""
        attr = f"{split}_features"
        if getattr(self, attr) is None:
            ex = self.train if split == "train" else self.val
            if ex is None:
                raise ValueError("this context has no validation split")
            setattr(self, attr, self.features(self.backbone, ex))
        value: np.ndarray = getattr(self, attr)
        return value

    def time_left(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - self.reserve_s - time.perf_counter()


@dataclass
class StrategyResult:
    """A fitted model and what it measured.

    ``unfreeze`` is 0 for feature extraction, else the number of layer groups trained.
    ``head`` is the final head; ``probe`` (extraction only) is the head fitted on the
    training split alone, the starting point of fine-tuning (LP-FT) and the fair
    "extraction" reference beside a fine-tuned model. ``tuned_state`` holds the backbone
    tensors that differ from the pretrained ones (what a bundle must store).
    """

    strategy: str
    unfreeze: int
    backbone: Backbone
    head: Any
    val_metrics: dict[str, Any] | None
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)
    tuned_state: dict[str, Any] = field(default_factory=dict)
    probe: Any = None
    #: class probabilities on the validation split of the model ``val_metrics`` scores (trained
    #: without the validation split): what the contender stage compares and stacks on
    val_proba: np.ndarray | None = None

    @property
    def val_accuracy(self) -> float:
        return float((self.val_metrics or {}).get("accuracy", float("nan")))

    @property
    def label(self) -> str:
        return rung_label(self.unfreeze, self.detail)


def rung_label(unfreeze: int, detail: dict[str, Any] | None = None) -> str:
    """'feature extraction', 'fine-tuning the top 2 groups', or 'LoRA (rank 8) on query,
    value': a LoRA rung trains adapters in every block, not the top groups."""
    if unfreeze == 0:
        return "feature extraction"
    peft = (detail or {}).get("peft")
    if peft:
        method = {"lora": "LoRA"}.get(peft.get("method", "lora"), str(peft.get("method")))
        return f"{method} (rank {peft.get('rank')}) on " + ",".join(peft.get("targets", []))
    return f"fine-tuning the top {unfreeze} groups"


def short_metrics(m: dict[str, Any] | None) -> dict[str, Any]:
    """The few scores a decision or a rung summary shows."""
    return {k: m[k] for k in ("accuracy", "macro_f1", "log_loss") if m and k in m}
