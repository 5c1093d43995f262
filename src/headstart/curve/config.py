"""What a data-efficiency study computes: :class:`CurveConfig`, and what it found."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..config import ExtractConfig, FinetuneConfig, LadderConfig
from ..errors import ConfigError
from ..plan import DEFAULT_TIME_BUDGET_S

#: ``auto`` is the ladder as ``headstart fit`` runs it (one cell, one fits time budget).
CURVE_STRATEGIES = ("extract", "finetune", "auto", "scratch", "cnn", "baseline")
#: Optimiser steps an epoch needs before fine-tuning cells checkpoint after each epoch.
CHECKPOINT_MIN_STEPS = 50
CELL_FORMAT = 2  # 2: cells split as `fit` does and run its strategies
TRACKERS = ("none", "tensorboard", "mlflow")


@dataclass
class CurveConfig:
    """Everything that decides what `headstart curve` computes."""

    data: str = "fashion-mnist"
    out: str = "runs/curve"
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.1, 0.5, 1.0])
    strategies: list[str] = field(default_factory=lambda: ["scratch", "extract", "finetune"])
    seeds: int = 3
    backbone: str = "auto"
    # data
    text_column: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    test: str | None = None
    train_size: int | None = None  # the label pool that fraction 1.0 means (None: all)
    test_size: int | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    skip_bad_files: bool = False  # leave unreadable inputs out (each reported) instead of stopping
    image_size: int | None = None
    max_length: int | None = None
    # extraction and fine-tuning: the sections `headstart fit` uses, so a cell is a fit
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    # the ladder (``auto`` cells): the section `headstart fit` uses, and each cell's budget
    ladder: LadderConfig = field(default_factory=LadderConfig)
    time_budget_s: float = DEFAULT_TIME_BUDGET_S
    # from scratch (same architecture): all layers, one learning rate
    scratch_epochs: int = 15
    scratch_lr: float | None = None  # None: 1e-3 for images, 5e-4 for text
    scratch_min_steps: int = 300
    scratch_patience: int = 4
    # the small CNN (images)
    cnn_epochs: int = 30
    cnn_lr: float = 2e-3
    cnn_min_steps: int = 500
    cnn_patience: int = 6
    cnn_batch_size: int = 64
    track: str = "none"

    def __post_init__(self) -> None:
        self.fractions = sorted({float(f) for f in self.fractions})
        self.strategies = list(dict.fromkeys(self.strategies))
        if isinstance(self.extract, dict):
            self.extract = ExtractConfig.from_dict(self.extract)
        if isinstance(self.finetune, dict):
            self.finetune = FinetuneConfig.from_dict(self.finetune)
        if isinstance(self.ladder, dict):
            self.ladder = LadderConfig.from_dict(self.ladder)
        self.validate()

    @classmethod
    def build(cls, **settings: Any) -> CurveConfig:
        """A config from flat keywords: a field of the extraction or fine-tuning section
        (``epochs=2``, ``engine="torch"``) goes to that section (``finetune_batch_size`` is
        fine-tuning's ``batch_size``)."""
        own = {f.name for f in dataclasses.fields(cls)}
        parts: dict[str, dict[str, Any]] = {"extract": {}, "finetune": {}}
        top: dict[str, Any] = {}
        for key, value in settings.items():
            if key in own:
                top[key] = value
            elif key == "finetune_batch_size":
                parts["finetune"]["batch_size"] = value
            elif key in {f.name for f in dataclasses.fields(ExtractConfig)}:
                parts["extract"][key] = value
            elif key in {f.name for f in dataclasses.fields(FinetuneConfig)}:
                parts["finetune"][key] = value
            else:
                raise ConfigError(f"curve has no setting {key!r}")
        for name, section in (("extract", ExtractConfig), ("finetune", FinetuneConfig)):
            if parts[name]:
                base = top.get(name) or section()
                top[name] = section(**{**base.to_dict(), **parts[name]})
        return cls(**top)

    def validate(self) -> None:
        bad_f = [f for f in self.fractions if not 0.0 < f <= 1.0]
        unknown = [s for s in self.strategies if s not in CURVE_STRATEGIES]
        checks = [
            (
                "fractions",
                bool(self.fractions) and not bad_f,
                "a non-empty list of fractions in (0, 1], e.g. 0.01,0.1,1.0",
                bad_f or self.fractions,
            ),
            (
                "strategies",
                bool(self.strategies) and not unknown,
                f"a non-empty list of {', '.join(CURVE_STRATEGIES)}",
                unknown or self.strategies,
            ),
            ("seeds", self.seeds >= 1, "a positive integer (how many seeds: 0..N-1)", self.seeds),
            ("val_fraction", 0.0 < self.val_fraction < 1.0, "a float in (0, 1)", self.val_fraction),
            (
                "train_size",
                self.train_size is None or self.train_size > 0,
                "a positive integer",
                self.train_size,
            ),
            (
                "test_size",
                self.test_size is None or self.test_size > 0,
                "a positive integer",
                self.test_size,
            ),
            ("track", self.track in TRACKERS, f"one of {', '.join(TRACKERS)}", self.track),
            (
                "time_budget_s",
                self.time_budget_s > 0,
                "a positive number of seconds (inf: no limit)",
                self.time_budget_s,
            ),
        ]
        for name in (
            "scratch_epochs",
            "cnn_epochs",
            "cnn_batch_size",
            "scratch_patience",
            "cnn_patience",
        ):
            v = getattr(self, name)
            checks.append((name, isinstance(v, int) and v >= 1, "a positive integer", v))
        for name in ("cnn_lr",):
            v = getattr(self, name)
            checks.append((name, v > 0, "a positive number", v))
        checks.append(
            (
                "scratch_lr",
                self.scratch_lr is None or self.scratch_lr > 0,
                "a positive number",
                self.scratch_lr,
            )
        )
        for name, ok, expected, got in checks:
            if not ok:
                raise ConfigError(
                    f"The '{name}' parameter of curve must be {expected}. Got {got!r} instead."
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
