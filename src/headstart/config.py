"""One configuration tree for a fit: data → backbone → extraction → fine-tuning → ladder.

Each section is a dataclass whose fields carry their help text in ``metadata``; the
``headstart fit`` flags are generated from this tree (:mod:`headstart.cli.fit`), so a
default, a help line and a name are written once. One name per concept everywhere:

* Python and JSON use the field name, nested by section (``{"finetune": {"epochs": 5}}``;
  ``TransferClassifier(finetune=FinetuneConfig(epochs=5))``, tuned by scikit-learn as
  ``finetune__epochs``);
* the flag is ``--<field>`` with dashes, or ``--<section>-<field>`` where the field name
  appears in more than one section (``--extract-batch-size``, ``--finetune-batch-size``)
  or the section asks for its prefix (every ladder threshold: ``--ladder-min-gain``).

Files written by a newer headstart load with a warning naming the keys this version ignores
(PEFT's ``config.py`` does the same).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import ConfigError

STRATEGIES = ("auto", "extract", "finetune")
HEADS = ("logistic", "mlp")
ENGINES = ("auto", "torch", "onnx")
TRACKERS = ("none", "tensorboard", "mlflow")
BN_MODES = ("frozen", "train")
PRECISIONS = ("auto", "no", "bf16", "fp16")
PEFT_METHODS = ("none", "lora")
#: which epoch a fine-tuning run keeps (see FinetuneConfig.keep_epoch)
KEEP_EPOCHS = ("auto", "best", "last")
FIRST_RUNGS = ("domain", "fixed")


def opt(default: Any, help: str, **meta: Any) -> Any:
    """A config field with its help text (and CLI hints: ``choices``, ``flag``, ``metavar``)."""
    if isinstance(default, list | dict):
        return field(
            default_factory=lambda: type(default)(default), metadata={"help": help, **meta}
        )
    return field(default=default, metadata={"help": help, **meta})


def _bad(section: str, name: str, expected: str, got: Any) -> ConfigError:
    return ConfigError(
        f"The '{name}' parameter of {section} must be {expected}. Got {got!r} instead."
    )


class Section:
    """Shared behaviour of the config sections: validation, dicts, scikit-learn params."""

    #: the section's name in JSON and in nested parameter names (``finetune__epochs``).
    name: ClassVar[str] = ""
    #: every flag of this section takes the section name as prefix (``--ladder-min-gain``).
    prefix_flags: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices is not None and value not in choices:
                raise _bad(self.name, f.name, f"one of {tuple(choices)}", value)
            check = f.metadata.get("check")
            if check is not None and value is not None and not check[0](value):
                raise _bad(self.name, f.name, check[1], value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d) - names)
        if unknown:
            warnings.warn(
                f"ignoring unknown {cls.name or 'config'} keys {unknown} (written by a newer "
                "headstart?)",
                stacklevel=3,
            )
        return cls(**{k: v for k, v in d.items() if k in names})

    # scikit-learn's nested parameters: ``TransferClassifier(...).set_params(finetune__lr=1e-4)``
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def set_params(self, **params: Any) -> Any:
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        for key, value in params.items():
            if key not in names:
                raise ConfigError(
                    f"{type(self).__name__} has no parameter {key!r}; it has {sorted(names)}"
                )
            setattr(self, key, value)
        self.validate()
        return self


_POS = (lambda v: v > 0, "a positive number")
_POS_INT = (
    lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "a positive integer",
)
_FRACTION = (lambda v: 0.0 < v < 1.0, "a float in (0, 1)")
_NON_NEG = (lambda v: v >= 0, "a number >= 0")


@dataclass
class DataConfig(Section):
    """Where the labelled examples come from and how they are split."""

    name: ClassVar[str] = "data"
    data: str = opt(
        "fashion-mnist",
        "image folder, CSV/TSV/JSONL/Parquet file, audio folder, or a built-in data set",
        positional=True,
    )
    text_column: str | None = opt(None, "the table's text column (auto-detected when unambiguous)")
    image_column: str | None = opt(None, "the table's image-path column")
    label_column: str | None = opt(None, "the table's label column")
    val: str | None = opt(None, "explicit validation file or folder")
    test: str | None = opt(None, "explicit test file or folder")
    train_size: int | None = opt(
        None, "labelled budget: a stratified subset of N examples (train + val)", check=_POS_INT
    )
    test_size: int | str = opt(
        "auto",
        "test examples to score: N (a stratified subsample), all, or auto (all, unless scoring "
        "them would take over a third of the time budget: then a stated stratified subset)",
        check=(
            lambda v: v in ("auto", "all") or (isinstance(v, int) and v >= 1),
            "auto, all or a positive integer",
        ),
        parse=lambda v: v if v in ("auto", "all") else int(v),
    )
    val_fraction: float = opt(0.2, "share of the budget carved as validation", check=_FRACTION)
    test_fraction: float = opt(
        0.2, "share carved as test when the data has no test split", check=_FRACTION
    )
    skip_bad_files: bool = opt(
        False, "skip unreadable inputs and list them in config.json instead of stopping"
    )


@dataclass
class BackboneConfig(Section):
    """Which pretrained model, at what input size."""

    name: ClassVar[str] = "backbone"
    backbone: str = opt(
        "auto",
        "torchvision:<model>, timm:<model>, hf:<repo id>, local-dir:<path>; auto ranks the "
        "installed backbones of the data's modality on a sample and takes the best",
    )
    pretrained: bool = opt(True, "load pretrained weights (off: a from-scratch reference)")
    image_size: int | None = opt(None, "override the backbone's input size", check=_POS_INT)
    max_length: int | None = opt(None, "override the text backbone's token window", check=_POS_INT)
    rank_sample: int = opt(
        300,
        "--backbone auto: training examples to rank the candidates on",
        check=(lambda v: v >= 20, "an integer of at least 20"),
    )
    backbone_budget_ms: float | None = opt(
        None,
        "--backbone auto: only backbones that extract within this many ms per example",
        check=_POS,
    )


@dataclass
class ExtractConfig(Section):
    """Feature extraction: the frozen backbone, the feature cache and the head."""

    name: ClassVar[str] = "extract"
    head: str = opt("logistic", "the head trained on the features", choices=HEADS)
    engine: str = opt("auto", "auto: ONNX Runtime on CPU when it matches PyTorch", choices=ENGINES)
    batch_size: int | None = opt(
        None, "extraction batch size", check=_POS_INT, shown="the backbone's"
    )
    cache_dir: str | None = opt(None, "feature cache folder", shown="~/.cache/headstart/features")


@dataclass
class FinetuneConfig(Section):
    """Fine-tuning: the head (from the linear probe) and the top layer groups train.

    ``lr`` is the head's learning rate; the backbone's is ``lr / lr_ratio`` (the 10-100x rule),
    decaying by ``layer_decay`` per group toward the input.
    """

    name: ClassVar[str] = "finetune"
    unfreeze: int = opt(
        2,
        "top layer groups to train (-1: all)",
        check=(lambda v: v >= -1 and v != 0, "-1 (all) or a positive integer"),
    )
    epochs: int = opt(5, "fine-tuning epochs", check=_POS_INT)
    lr: float = opt(1e-3, "the head's learning rate", check=_POS)
    lr_ratio: float = opt(30.0, "head LR / backbone LR; the rule is 10-100", check=_POS)
    layer_decay: float = opt(
        1.0, "LR factor per group toward the input", check=(lambda v: 0 < v <= 1, "in (0, 1]")
    )
    weight_decay: float = opt(0.01, "AdamW weight decay (not on biases and norms)", check=_NON_NEG)
    warmup: float = opt(
        0.1,
        "share of the optimiser steps spent warming up",
        check=(lambda v: 0 <= v < 1, "in [0, 1)"),
    )
    grad_clip: float = opt(1.0, "gradient-norm clip (0: off)", check=_NON_NEG)
    label_smoothing: float = opt(
        0.0, "label smoothing of the loss", check=(lambda v: 0 <= v < 1, "in [0, 1)")
    )
    grad_accum: int = opt(1, "gradient accumulation steps", check=_POS_INT)
    batch_size: int = opt(32, "fine-tuning batch size", check=_POS_INT)
    mixed_precision: str = opt("auto", "auto: bf16 on GPUs that support it", choices=PRECISIONS)
    augment: bool | None = opt(None, "augment training images", shown="images yes, text no")
    patience: int = opt(
        2,
        "epochs without validation gain before stopping (--keep-epoch best)",
        check=_POS_INT,
    )
    keep_epoch: str = opt(
        "auto",
        "the weights a run keeps: best (the best validation epoch, early stopping after "
        "--patience), last (the whole schedule, cosine to zero: validation then "
        "scores the result without having chosen it); auto: last for the ladder's rungs, "
        "whose validation scores decide between them, best for --strategy finetune",
        choices=KEEP_EPOCHS,
    )
    l2sp: float = opt(0.0, "L2-SP strength toward the pretrained weights", check=_NON_NEG)
    bn: str = opt(
        "frozen",
        "BatchNorm: frozen pretrained statistics, or batch statistics in trainable groups",
        choices=BN_MODES,
    )
    keep_start: bool = opt(
        True, "score the starting point on validation and keep it when no epoch beats it"
    )
    strict: bool = opt(False, "refuse learning rates that break the 10-100x rule")
    peft: str = opt(
        "none",
        "lora: freeze the whole backbone and train low-rank adapters (at the head's learning "
        "rate) and the head; transformer backbones only, with --strategy finetune",
        choices=PEFT_METHODS,
    )
    lora_rank: int = opt(8, "--peft lora: rank of each adapter", check=_POS_INT)
    lora_alpha: int = opt(
        16, "--peft lora: scaling numerator (update × alpha / rank)", check=_POS_INT
    )
    lora_targets: str = opt(
        "auto",
        "--peft lora: linear layers to adapt, comma-separated (e.g. query,value); auto: the "
        "attention query and value projections (BERT-like and ViT: query,value; DINOv2 and "
        "Whisper: q_proj,v_proj; MPNet: q,v)",
    )


@dataclass
class LadderConfig(Section):
    """When ``--strategy auto`` climbs from extraction to fine-tuning (see strategies.ladder)."""

    name: ClassVar[str] = "ladder"
    prefix_flags: ClassVar[bool] = True
    target: float = opt(0.995, "validation accuracy at which extraction is good enough")
    min_gain: float = opt(0.005, "a rung must add this much validation accuracy to go on")
    min_examples: int = opt(1000, "labelled examples needed before fine-tuning")
    min_per_class: int = opt(20, "examples of the rarest class needed before fine-tuning")
    first_rung: str = opt(
        "domain",
        "the first fine-tuning rung: domain (far from the pretraining domain every group at "
        "lr/10 for ~1,000 steps, near it the top first-unfreeze groups at lr/100, unmeasured "
        "every group at lr/30), or fixed (the top first-unfreeze groups with the fine-tuning "
        "flags' values; the default when one of those flags is given)",
        choices=FIRST_RUNGS,
    )
    first_unfreeze: int = opt(2, "groups the first fine-tuning rung unfreezes (-1: all)")
    step: int = opt(2, "groups each further rung unfreezes")
    max_rungs: int = opt(3, "fine-tuning rungs at most", check=_POS_INT)
    noise_z: float = opt(
        2.0, "keep the cheapest rung within this many standard errors of the best", check=_NON_NEG
    )
    contend: bool = opt(
        True,
        "pit the non-transfer baseline (and, where it comes close, a stack of it with transfer) "
        "against the chosen transfer model on validation; keep one only when it wins beyond "
        "the noise",
    )
    contend_cnn: bool = opt(
        True,
        "images: also train the small CNN from scratch as a contender (and in the stack) when "
        "its measured cost fits half the time left after extraction",
    )

    @classmethod
    def from_overrides(cls, overrides: list[str] | None) -> LadderConfig:
        """``["min_gain=0.01", ...]`` (``headstart advise --ladder KEY=VALUE``) → a config."""
        cfg = cls()
        for item in overrides or []:
            key, sep, value = item.partition("=")
            names = [f.name for f in dataclasses.fields(cls)]
            if not sep or key not in names:
                raise ConfigError(f"--ladder takes KEY=VALUE with KEY in {names}; got {item!r}")
            kind = type(getattr(cfg, key))
            try:
                setattr(cfg, key, kind(value))
            except ValueError as exc:
                raise ConfigError(
                    f"--ladder {key} must be a {kind.__name__}, got {value!r}"
                ) from exc
        cfg.validate()
        return cfg


SECTIONS: tuple[type[Section], ...] = (
    DataConfig,
    BackboneConfig,
    ExtractConfig,
    FinetuneConfig,
    LadderConfig,
)


@dataclass
class FitConfig(Section):
    """Everything that decides what ``headstart fit`` does."""

    name: ClassVar[str] = "fit"
    out: str | None = opt(None, "run folder", shown="runs/<data name>")
    strategy: str = opt("auto", "extract, finetune, or auto: the ladder", choices=STRATEGIES)
    seed: int = opt(0, "seed of the splits, the heads and the training")
    baseline: bool = opt(True, "fit a no-transfer baseline beside the model")
    self_contained: bool = opt(
        False,
        "copy the backbone's weights and config/tokenizer files into the model bundle, so it "
        "predicts with no weights package and no network (a local-dir: backbone always is)",
    )
    time_budget_s: float = opt(
        60.0,
        "wall time to plan the fit within (ranking, extraction, fine-tuning, the test split); "
        "steps that would not fit are skipped and named with the budget that runs them "
        "(e.g. 20m, 1h; inf: no limit)",
        flag="--time-budget",
        duration=True,
        check=_POS,
        shown="60s",
    )
    track: str = opt("none", "also log the run to TensorBoard or MLflow", choices=TRACKERS)
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    ladder: LadderConfig = field(default_factory=LadderConfig)

    def validate(self) -> None:
        super().validate()
        for s in SECTIONS:
            part = getattr(self, s.name)
            if isinstance(part, dict):  # from_dict hands sections over as dicts
                setattr(self, s.name, s.from_dict(part))
            elif not isinstance(part, s):
                raise _bad("fit", s.name, f"a {s.__name__}", part)

    @classmethod
    def build(cls, **flat: Any) -> FitConfig:
        """A config from flat keywords named as the flags are (``epochs=3``,
        ``finetune_batch_size=16``, ``ladder_min_gain=0.01``, ``time_budget_s=600``)."""
        names = flat_names()
        top: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {s.name: {} for s in SECTIONS}
        for key, value in flat.items():
            if key not in names:
                from .errors import did_you_mean

                raise ConfigError(
                    f"FitConfig has no setting {key!r}{did_you_mean(key, list(names))}"
                )
            section, name = names[key]
            (top if section is None else parts[section])[name] = value
        sections: dict[str, Any] = {s.name: s(**parts[s.name]) for s in SECTIONS}
        return cls(**top, **sections)

    @property
    def run_dir(self) -> str:
        from pathlib import Path

        return self.out or str(Path("runs") / Path(self.data.data.rstrip("/")).stem)

    def to_dict(self) -> dict[str, Any]:
        """As JSON holds it: no limit (``inf``) is written as ``null``, not ``Infinity``
        (which standard JSON parsers outside Python refuse)."""
        d = super().to_dict()
        if d["time_budget_s"] == float("inf"):
            d["time_budget_s"] = None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitConfig:
        if "time_budget_s" in d and d["time_budget_s"] is None:
            d = {**d, "time_budget_s": float("inf")}
        cfg: FitConfig = super().from_dict(d)
        return cfg


def section_fields(section: type[Section]) -> list[dataclasses.Field[Any]]:
    """The plain (non-section) fields of a config class, in order."""
    return [
        f
        for f in dataclasses.fields(section)  # type: ignore[arg-type]
        if not (isinstance(f.type, str) and f.type.endswith("Config"))
    ]


def flat_names() -> dict[str, tuple[str | None, str]]:
    """Every setting's one flat name (the flag without dashes) → (section or None, field).

    ``--<field>``, or ``--<section>-<field>`` where the field name is used by two sections or
    the section prefixes its flags; a field's ``flag`` metadata overrides both.
    """
    sections: list[tuple[str | None, type[Section]]] = [(None, FitConfig)]
    sections += [(s.name, s) for s in SECTIONS]
    seen: dict[str, int] = {}
    for _, cls in sections:
        for f in section_fields(cls):
            seen[f.name] = seen.get(f.name, 0) + 1
    out: dict[str, tuple[str | None, str]] = {}
    for sec, cls in sections:
        for f in section_fields(cls):
            flag = f.metadata.get("flag")
            if flag:
                name = flag.lstrip("-").replace("-", "_")
            elif sec is not None and (seen[f.name] > 1 or cls.prefix_flags):
                name = f"{sec}_{f.name}"
            else:
                name = f.name
            out[name] = (sec, f.name)
    return out


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
