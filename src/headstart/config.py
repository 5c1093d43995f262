"""Typed run configuration that round-trips to JSON and reads files from newer versions."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

STRATEGIES = ("extract", "finetune", "auto")
HEADS = ("logistic", "mlp")


@dataclass
class FitConfig:
    """Everything that decides what `headstart fit` does. Defaults are documented in README."""

    data: str = "fashion-mnist"
    out: str = "runs/latest"
    backbone: str = "auto"
    strategy: str = "extract"
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
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"The '{name}' parameter must be {expected}. Got {getattr(self, name)!r} instead."
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            warnings.warn(f"ignoring unknown config keys {unknown} (written by a newer headstart?)",
                          stacklevel=2)
        return cls(**{k: v for k, v in d.items() if k in names})
