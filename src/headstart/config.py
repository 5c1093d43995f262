"""Typed run configuration that round-trips to JSON and reads files from newer versions."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .finetune import FinetuneConfig

STRATEGIES = ("extract", "finetune", "auto")
HEADS = ("logistic", "mlp")


@dataclass
class FitConfig:
    """Everything that decides what `headstart fit` does. Defaults are documented in README."""

    data: str = "fashion-mnist"
    out: str = "runs/latest"
    backbone: str = "auto"
    strategy: str = "auto"
    head: str = "logistic"
    text_column: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    val: str | None = None
    test: str | None = None
    train_size: int | None = None
    test_size: int | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    pretrained: bool = True
    image_size: int | None = None
    max_length: int | None = None
    engine: str = "auto"
    batch_size: int | None = None
    baseline: bool = True
    on_error: str = "raise"
    cache_dir: str | None = None
    #: ``backbone="auto"``: rank the installed candidates and keep the best whose extraction
    #: costs at most this many milliseconds per example here (None: no limit).
    backbone_budget_ms: float | None = None
    #: rank sample size for ``backbone="auto"``.
    rank_sample: int = 300
    #: experiment tracking after the run: "none", "tensorboard" or "mlflow".
    track: str = "none"
    # fine-tuning (strategy finetune / auto)
    unfreeze: int = 2
    epochs: int = 5
    lr: float = 1e-3
    lr_ratio: float = 30.0
    layer_decay: float = 1.0
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    grad_accum: int = 1
    finetune_batch_size: int = 32
    mixed_precision: str = "auto"
    augment: bool | None = None
    patience: int = 2
    l2sp: float = 0.0
    bn: str = "frozen"
    strict: bool = False
    time_budget_s: float | None = None
    ladder: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        checks = [
            ("strategy", self.strategy in STRATEGIES, f"one of {STRATEGIES}"),
            ("head", self.head in HEADS, f"one of {HEADS}"),
            ("val_fraction", 0.0 < self.val_fraction < 1.0, "a float in (0, 1)"),
            ("test_fraction", 0.0 < self.test_fraction < 1.0, "a float in (0, 1)"),
            ("train_size", self.train_size is None or self.train_size > 0, "a positive integer"),
            ("test_size", self.test_size is None or self.test_size > 0, "a positive integer"),
            ("on_error", self.on_error in ("raise", "skip"), "'raise' or 'skip'"),
            ("engine", self.engine in ("auto", "torch", "onnx"), "'auto', 'torch' or 'onnx'"),
            ("batch_size", self.batch_size is None or self.batch_size > 0, "a positive integer"),
            (
                "backbone_budget_ms",
                self.backbone_budget_ms is None or self.backbone_budget_ms > 0,
                "positive milliseconds",
            ),
            ("rank_sample", self.rank_sample >= 20, "an integer of at least 20"),
            (
                "track",
                self.track in ("none", "tensorboard", "mlflow"),
                "none, tensorboard or mlflow",
            ),
            (
                "unfreeze",
                self.unfreeze >= -1 and self.unfreeze != 0,
                "-1 (all) or a positive integer",
            ),
            ("epochs", self.epochs >= 1, "a positive integer"),
            ("lr", self.lr > 0, "a positive float"),
            ("lr_ratio", self.lr_ratio > 0, "a positive float"),
            (
                "time_budget_s",
                self.time_budget_s is None or self.time_budget_s > 0,
                "positive seconds",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"The '{name}' parameter must be {expected}. Got {getattr(self, name)!r} instead."
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def finetune_config(self, unfreeze: int | None = None) -> FinetuneConfig:
        from .finetune import FinetuneConfig

        return FinetuneConfig(
            unfreeze=self.unfreeze if unfreeze is None else unfreeze,
            epochs=self.epochs,
            head_lr=self.lr,
            lr_ratio=self.lr_ratio,
            layer_decay=self.layer_decay,
            weight_decay=self.weight_decay,
            label_smoothing=self.label_smoothing,
            grad_accum=self.grad_accum,
            batch_size=self.finetune_batch_size,
            mixed_precision=self.mixed_precision,
            augment=self.augment,
            patience=self.patience,
            l2sp=self.l2sp,
            bn=self.bn,
            strict=self.strict,
            seed=self.seed,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            warnings.warn(
                f"ignoring unknown config keys {unknown} (written by a newer headstart?)",
                stacklevel=2,
            )
        return cls(**{k: v for k, v in d.items() if k in names})


def parse_duration(text: str) -> float:
    """'90', '90s', '20m', '1.5h' → seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            return float(t[:-1]) * units[t[-1]]
        return float(t)
    except ValueError as exc:
        raise ConfigError(f"a duration looks like 90s, 20m or 1.5h; got {text!r}") from exc
