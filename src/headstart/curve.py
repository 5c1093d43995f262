"""The data-efficiency study: from scratch vs feature extraction vs fine-tuning, per label budget.

``headstart curve fashion-mnist --fractions 0.01,0.05,0.1,0.5,1.0 --seeds 3`` trains, for each
fraction of the training labels and each seed, every strategy on *the same* train/validation
split, and scores each on one fixed test split:

``extract``
    the linear probe of ``headstart fit --strategy extract``: a logistic head on frozen
    pretrained features, C chosen on validation, refitted on train + val;
``finetune``
    LP-FT as in ``headstart fit --strategy finetune``: the probe as the starting head, the top
    ``unfreeze`` layer groups trained at ``lr / lr_ratio``;
``scratch``
    the same architecture randomly initialised (``pretrained=False``), every layer trained
    at one learning rate suited to training from scratch (AdamW, ``scratch_lr``);
``cnn``
    a small network trained from scratch, the usual small-data reference: for images a CNN
    (5 conv layers, ~140k parameters) on the native-resolution pixels; for text a Kim (2014)
    text CNN on word ids (its vocabulary from the cell's training texts). Asking for
    ``scratch`` on image or text data adds it (on text it is the affordable from-scratch
    reference: the same transformer from scratch costs as much as fine-tuning it);
``baseline``
    pixels or TF-IDF + logistic regression (:mod:`headstart.baselines`).

Work is shared: the backbone's features of the whole label pool and the test split are
extracted once (through the feature cache), and each subset indexes into them. Each finished
cell (strategy × fraction × seed) is written atomically to ``out/cells/<cell>.json`` with a
key over everything that decides its result; an interrupted study run again reuses every
finished cell whose key matches and computes only the rest.

The result is ``curve.json`` (the table: mean ± std over seeds), ``results.md``, ``curve.png``
(the learning curve) and ``report.html``, with the headline: "with 1% of the labels,
fine-tuned transfer reaches X% of the from-scratch model trained on 100%".
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_write_bytes, atomic_write_json, stable_hash
from .data.base import Examples, Splits
from .errors import ConfigError, DataError

__all__ = [
    "CURVE_STRATEGIES",
    "STRATEGY_LABELS",
    "CurveConfig",
    "CurveResult",
    "SmallCNN",
    "image_pixels",
    "run_curve",
    "summarise_cells",
]

log = logging.getLogger("headstart")

CURVE_STRATEGIES = ("extract", "finetune", "scratch", "cnn", "baseline")
STRATEGY_LABELS = {
    "finetune": "fine-tuning",
    "extract": "feature extraction",
    "scratch": "from scratch (same architecture)",
    "cnn": "small CNN from scratch",
    "baseline": "pixels/TF-IDF + logistic regression",
}
#: Optimiser steps an epoch needs before fine-tuning cells checkpoint after each epoch.
CHECKPOINT_MIN_STEPS = 50
REFERENCE_NAMES = {"scratch": "the same architecture", "cnn": "a small CNN"}
#: The transfer-learning claim the study tests: with 1% of the labels, at least this share
#: (90-95% in the usual statement; its lower end) of the best from-scratch model on 100%.
CLAIM_RATIO = 0.90
_CELL_FORMAT = 1
_TRACKERS = ("none", "tensorboard", "mlflow")


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
    image_size: int | None = None
    max_length: int | None = None
    # extraction
    engine: str = "auto"
    batch_size: int | None = None
    cache_dir: str | None = None
    # fine-tuning (as `headstart fit --strategy finetune`)
    unfreeze: int = 2
    epochs: int = 5
    lr: float = 1e-3
    lr_ratio: float = 30.0
    finetune_batch_size: int = 32
    patience: int = 2
    mixed_precision: str = "auto"
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
        self.validate()

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
            (
                "unfreeze",
                self.unfreeze >= -1 and self.unfreeze != 0,
                "-1 (all) or a positive integer",
                self.unfreeze,
            ),
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
            ("track", self.track in _TRACKERS, f"one of {', '.join(_TRACKERS)}", self.track),
        ]
        for name in (
            "epochs",
            "scratch_epochs",
            "cnn_epochs",
            "finetune_batch_size",
            "cnn_batch_size",
            "patience",
            "scratch_patience",
            "cnn_patience",
        ):
            v = getattr(self, name)
            checks.append((name, isinstance(v, int) and v >= 1, "a positive integer", v))
        for name in ("lr", "lr_ratio", "cnn_lr"):
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


@dataclass
class CurveResult:
    """What :func:`run_curve` did and found."""

    out: Path
    rows: list[dict[str, Any]]
    headline: str
    computed: list[str]
    reused: list[str]
    complete: bool
    report: Path
    total: int = 0

    def table(self) -> str:
        """The mean ± std table as aligned plain text."""
        return _text_table(self.rows)


# ---------------------------------------------------------------------------------- splits
def _concat(a: Examples, b: Examples, name: str) -> Examples:
    if isinstance(a.inputs, np.ndarray) and isinstance(b.inputs, np.ndarray):
        inputs: Any = np.concatenate([a.inputs, b.inputs])
    else:
        inputs = [*a.inputs, *b.inputs]
    sources = (a.sources + b.sources) if a.sources is not None and b.sources is not None else None
    return Examples(
        a.modality,
        inputs,
        np.concatenate([a.labels, b.labels]),
        list(a.classes),
        name=name,
        sources=sources,
        meta=dict(a.meta),
    )


def _budget(n_pool: int, n_classes: int, fraction: float) -> int:
    """Labelled examples for a fraction: at least 2 per class (one to train, one to validate)."""
    return n_pool if fraction >= 1.0 else min(n_pool, max(2 * n_classes, round(fraction * n_pool)))


def _cell_split(
    pool: Examples, n: int, seed: int, val_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices into the pool: a stratified budget of n, then a stratified val carve.

    The same (n, seed) gives the same split for every strategy; budgets nest across fractions.
    """
    from .data.split import stratified_split, stratified_subset

    idx = (
        np.arange(len(pool))
        if n >= len(pool)
        else stratified_subset(pool.labels, n, seed, min_per_class=2)
    )
    rest, part = stratified_split(pool.labels[idx], val_fraction, seed + 1, keep_per_class=1)
    return idx[rest], idx[part]


# ----------------------------------------------------------------------------- the small CNN
def image_pixels(ex: Examples, side: int | None = None) -> tuple[Any, int]:
    """(uint8 tensor (N, C, H, W), side): the images, square, at a size a small CNN can afford.

    Arrays keep their channels and native size up to 64 px (larger ones are resized to 64);
    image files are decoded to RGB at ``side`` (default 64).
    """
    import torch
    import torch.nn.functional as F
    from PIL import Image

    if isinstance(ex.inputs, np.ndarray):
        x = np.asarray(ex.inputs)
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4:
            x = np.moveaxis(x[..., :3], -1, 1)
        else:
            raise DataError(f"Image arrays must be (N, H, W) or (N, H, W, C); got {x.shape}.")
        t = torch.from_numpy(np.ascontiguousarray(x))
        s = side or min(64, max(t.shape[2], t.shape[3]))
        if t.shape[2:] != (s, s):
            t = (
                F.interpolate(
                    t.float(), size=(s, s), mode="bilinear", antialias=True, align_corners=False
                )
                .round()
                .clamp(0, 255)
                .to(torch.uint8)
            )
        return t, s
    s = side or 64
    out = np.empty((len(ex), 3, s, s), dtype=np.uint8)
    for i, path in enumerate(ex.inputs):
        try:
            with Image.open(path) as im:
                im.draft("RGB", (s * 2, s * 2))
                out[i] = np.moveaxis(
                    np.asarray(im.convert("RGB").resize((s, s), Image.Resampling.BILINEAR)), -1, 0
                )
        except (OSError, ValueError) as exc:
            raise DataError(
                f"Cannot read image {ex.source_of(i)} for the CNN baseline: {exc}. "
                "Remove or replace the file."
            ) from exc
    return torch.from_numpy(out), s


def _cnn_module(in_ch: int, n_classes: int, width: int = 32) -> Any:
    from torch import nn

    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    w = width
    return nn.Sequential(
        *block(in_ch, w),
        *block(w, w),
        nn.MaxPool2d(2),
        *block(w, 2 * w),
        *block(2 * w, 2 * w),
        nn.MaxPool2d(2),
        *block(2 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(4 * w, n_classes),
    )


def _stretch(epochs: int, patience: int, min_steps: int, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, patience) so that training runs at least `min_steps` optimiser steps.

    Small budgets have one or two steps per epoch; their epochs are stretched, and patience
    with them, so that early stopping still waits the same share of training (a patience of
    a few one-step epochs would stop during the warm-up).
    """
    stretched = max(epochs, math.ceil(min_steps / max(1, steps_per_epoch)))
    return stretched, max(patience, math.ceil(patience * stretched / epochs))


def scratch_config(c: CurveConfig, n_train: int, lr: float, seed: int) -> Any:
    """The `FinetuneConfig` that trains a randomly initialised backbone and head from scratch.

    Every layer trains at one learning rate (``lr_ratio=1``: random weights have nothing to
    protect), and BatchNorm uses batch statistics (``bn="train"``): fine-tuning's default
    keeps the *pretrained* running statistics, which for a random network are the initial
    zeros and ones, so its activations are never normalised (measured: mobilenet_v2 from
    scratch on 480 Fashion-MNIST images predicted one class, 10 % accuracy).
    """
    from .finetune import FinetuneConfig

    steps = math.ceil(n_train / c.finetune_batch_size)
    epochs, patience = _stretch(c.scratch_epochs, c.scratch_patience, c.scratch_min_steps, steps)
    return FinetuneConfig(
        unfreeze=-1,
        epochs=epochs,
        head_lr=lr,
        lr_ratio=1.0,
        weight_decay=0.05,
        batch_size=c.finetune_batch_size,
        patience=patience,
        mixed_precision=c.mixed_precision,
        bn="train",
        keep_start=False,  # the start is a random network
        seed=seed,
    )


class SmallCNN:
    """A small CNN trained from scratch on raw pixels: AdamW, warm-up + cosine, random shifts,
    early stopping on validation accuracy with the best epoch restored."""

    def __init__(
        self,
        *,
        epochs: int = 30,
        lr: float = 2e-3,
        batch_size: int = 64,
        min_steps: int = 500,
        patience: int = 6,
        seed: int = 0,
    ) -> None:
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.min_steps = min_steps
        self.patience = patience
        self.seed = seed

    def fit(
        self, xt: Any, y_train: np.ndarray, xv: Any, y_val: np.ndarray, n_classes: int
    ) -> SmallCNN:
        """Train on uint8 pixels ``(N, C, H, W)`` (see :func:`image_pixels`) and class indices."""
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        self.device_ = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        yt = torch.as_tensor(y_train)
        self.model_ = self._build(xt, n_classes).to(self.device_)
        steps_per_epoch = math.ceil(len(yt) / self.batch_size)
        epochs, patience = _stretch(self.epochs, self.patience, self.min_steps, steps_per_epoch)
        total = epochs * steps_per_epoch
        warm = max(1, total // 20)
        opt = torch.optim.AdamW(self.model_.parameters(), lr=self.lr, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda s: (
                (s + 1) / warm
                if s < warm
                else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm)))
            ),
        )
        gen = torch.Generator().manual_seed(self.seed)
        loss_fn = nn.CrossEntropyLoss()
        best: tuple[float, float] = (-1.0, float("inf"))
        best_state, bad, self.history_ = None, 0, []
        for epoch in range(epochs):
            t0 = time.perf_counter()
            self.model_.train()
            order = torch.randperm(len(yt), generator=gen)
            loss_sum = 0.0
            for i in range(0, len(order), self.batch_size):
                b = order[i : i + self.batch_size]
                x = self._prep(self._augment(xt[b], gen))
                loss = loss_fn(self.model_(x), yt[b].to(self.device_))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += float(loss.detach()) * len(b)
            p = self.predict_proba(xv)
            val_acc = float((p.argmax(1) == y_val).mean())
            val_loss = float(-np.log(np.clip(p[np.arange(len(p)), y_val], 1e-12, 1)).mean())
            self.history_.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum / len(yt),
                    "val_accuracy": val_acc,
                    "val_loss": val_loss,
                    "seconds": time.perf_counter() - t0,
                }
            )
            if (val_acc, -val_loss) > (best[0], -best[1]):
                best, bad = (val_acc, val_loss), 0
                best_state = {k: v.detach().clone() for k, v in self.model_.state_dict().items()}
                self.best_epoch_ = epoch + 1
            else:
                bad += 1
                if bad >= patience:
                    break
        if best_state is not None:
            self.model_.load_state_dict(best_state)
        self.val_accuracy_ = best[0]
        self.n_params_ = sum(p.numel() for p in self.model_.parameters())
        return self

    def _build(self, xt: Any, n_classes: int) -> Any:
        """The network for training inputs ``xt``; also fixes the input normalisation."""
        f = xt.float() / 255.0
        self.mean_ = f.mean(dim=(0, 2, 3), keepdim=True)
        self.std_ = f.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
        return _cnn_module(xt.shape[1], n_classes)

    def _augment(self, x: Any, gen: Any) -> Any:
        return self._shift(x, gen)

    @staticmethod
    def _shift(x: Any, gen: Any, pad: int = 2) -> Any:
        """Random translations by up to `pad` pixels (edge pixels repeated)."""
        import torch
        import torch.nn.functional as F

        n, _, h, w = x.shape
        padded = F.pad(x.float(), (pad, pad, pad, pad), mode="replicate")
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])

    def _prep(self, x: Any) -> Any:
        return ((x.float() / 255.0 - self.mean_) / self.std_).to(self.device_)

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities for uint8 pixels ``(N, C, H, W)``."""
        import torch

        self.model_.eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), 512):
                out.append(
                    torch.softmax(self.model_(self._prep(x[i : i + 512])).float(), 1).cpu().numpy()
                )
        return np.concatenate(out).astype(np.float64)


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_TAG = re.compile(r"<[^>]{0,40}>")


def text_words(texts: Any) -> list[list[str]]:
    """Lower-cased word tokens of each text (HTML tags such as ``<br />`` dropped)."""
    return [_WORD.findall(_TAG.sub(" ", str(t).lower())) for t in texts]


def build_vocab(docs: list[list[str]], max_size: int = 30000, min_count: int = 2) -> dict[str, int]:
    """Word -> id for the ``max_size`` most frequent words seen ``min_count`` times (ties by
    first appearance); ids start at 2 (0: padding, 1: unknown word)."""
    from collections import Counter

    counts = Counter(w for d in docs for w in d)
    common = [w for w, c in counts.most_common(max_size) if c >= min_count]
    return {w: i + 2 for i, w in enumerate(common)}


def text_ids(docs: list[list[str]], vocab: dict[str, int], max_len: int = 400) -> Any:
    """(N, L) int64 token ids, zero-padded; a document longer than ``max_len`` keeps its first
    and last ``max_len / 2`` words (a review's verdict is often at its end)."""
    import torch

    rows = []
    for d in docs:
        if len(d) > max_len:
            d = d[: max_len // 2] + d[len(d) - (max_len - max_len // 2) :]
        rows.append([vocab.get(w, 1) for w in d] or [1])
    out = torch.zeros((len(rows), max(len(r) for r in rows)), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _text_cnn_module(vocab_size: int, n_classes: int, dim: int = 64, channels: int = 64) -> Any:
    """Kim (2014)'s CNN for sentence classification, small: word embeddings, convolutions of
    widths 3, 4 and 5, max over time, dropout, linear."""
    import torch
    from torch import nn

    class TextCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
            self.convs = nn.ModuleList(
                nn.Conv1d(dim, channels, k, padding=k // 2) for k in (3, 4, 5)
            )
            self.drop = nn.Dropout(0.5)
            self.fc = nn.Linear(3 * channels, n_classes)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            pad = (ids == 0).unsqueeze(1)  # (N, 1, L)
            e = self.embed(ids).transpose(1, 2)  # (N, dim, L)
            pooled = []
            for conv in self.convs:
                h = torch.relu(conv(e))[..., : ids.shape[1]]
                pooled.append(h.masked_fill(pad, 0.0).amax(dim=2))  # ReLU >= 0: 0 is neutral
            return self.fc(self.drop(torch.cat(pooled, dim=1)))

    return TextCNN()


class SmallTextCNN(SmallCNN):
    """The small-CNN reference for text: a Kim-style text CNN (~2 M parameters, mostly the
    word embeddings) on token ids from :func:`text_ids`, trained from scratch with the same
    loop, schedule and early stopping as :class:`SmallCNN` (no augmentation)."""

    def __init__(self, *, vocab_size: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.vocab_size = vocab_size

    def _build(self, xt: Any, n_classes: int) -> Any:
        return _text_cnn_module(self.vocab_size, n_classes)

    def _augment(self, x: Any, gen: Any) -> Any:
        return x

    def _prep(self, x: Any) -> Any:
        n = int((x != 0).sum(dim=1).max())  # trim the batch's padding
        return x[:, : max(n, 5)].to(self.device_)


# ------------------------------------------------------------------------------------ study
def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _short_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from .metrics import classification_metrics

    m = classification_metrics(y, proba, classes)
    return {
        k: m[k]
        for k in ("n", "accuracy", "macro_f1", "balanced_accuracy", "log_loss", "ece", "roc_auc")
    }


class _Study:
    """Loaded data, lazily extracted features, and one method per strategy."""

    def __init__(self, cfg: CurveConfig, progress: bool) -> None:
        from .backbones.registry import DEFAULT_BACKBONE, load_backbone
        from .data.load import load_data

        self.cfg = cfg
        self.progress = progress
        splits: Splits = load_data(
            cfg.data,
            text_column=cfg.text_column,
            image_column=cfg.image_column,
            label_column=cfg.label_column,
            test=cfg.test,
            train_size=cfg.train_size,
            test_size=cfg.test_size,
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
            seed=0,
        )
        if splits.test is None:  # pragma: no cover - load_data always makes a test split
            raise DataError(f"{cfg.data} has no test split; pass --test FILE.")
        self.description = splits.description
        self.classes = list(splits.classes)
        self.pool = _concat(splits.train, splits.val, name=f"{splits.train.name} (label pool)")
        self.test = splits.test
        self.modality = self.pool.modality
        self.backbone_name = (
            DEFAULT_BACKBONE.get(self.modality, "") if cfg.backbone == "auto" else cfg.backbone
        )
        if not self.backbone_name:
            raise ConfigError(f"No default backbone for {self.modality} data; pass --backbone.")
        self.backbone = load_backbone(
            self.backbone_name,
            pretrained=True,
            image_size=cfg.image_size,
            max_length=cfg.max_length,
        )
        self.backbone.eval()
        self.fingerprints = {"pool": self.pool.fingerprint(), "test": self.test.fingerprint()}
        self._features: dict[str, np.ndarray] | None = None
        self._pixels: dict[str, Any] = {}  # the small CNN's decoded images, once per study
        self._words: dict[str, list[list[str]]] = {}  # the text CNN's word tokens, once
        self.feature_info: dict[str, Any] = {}

    # ------------------------------------------------------------------------ bookkeeping
    def settings(self, strategy: str) -> dict[str, Any]:
        """Everything besides data, fraction and seed that decides a cell's result."""
        c = self.cfg
        bb = {
            "backbone": self.backbone_name,
            "weights": self.backbone.weights.sha256,
            "image_size": c.image_size,
            "max_length": c.max_length,
        }
        if strategy == "extract":
            return {**bb, "head": "logistic"}
        if strategy == "finetune":
            return {
                **bb,
                "unfreeze": c.unfreeze,
                "epochs": c.epochs,
                "lr": c.lr,
                "lr_ratio": c.lr_ratio,
                "batch_size": c.finetune_batch_size,
                "patience": c.patience,
            }
        if strategy == "scratch":
            return {
                **bb,
                "weights": "random",
                "bn": "train",
                "epochs": c.scratch_epochs,
                "lr": self.scratch_lr,
                "min_steps": c.scratch_min_steps,
                "patience": c.scratch_patience,
                "batch_size": c.finetune_batch_size,
            }
        if strategy == "cnn":
            model: dict[str, Any] = {}
            if self.modality == "text":
                model = {"model": "text-cnn", "vocabulary": 30000, "max_words": 400}
            return {
                **model,
                "epochs": c.cnn_epochs,
                "lr": c.cnn_lr,
                "min_steps": c.cnn_min_steps,
                "patience": c.cnn_patience,
                "batch_size": c.cnn_batch_size,
            }
        return {}

    @property
    def scratch_lr(self) -> float:
        if self.cfg.scratch_lr is not None:
            return self.cfg.scratch_lr
        return 1e-3 if self.modality == "image" else 5e-4

    def notes(self, strategies: list[str]) -> list[str]:
        c = self.cfg
        text = {
            "extract": f"feature extraction: {self.backbone_name} frozen, features extracted once for "
            "the whole label pool and the test split; logistic head, C chosen on validation "
            "log-loss, refitted on train + validation.",
            "finetune": f"fine-tuning: LP-FT from the linear probe; "
            f"{'all the' if c.unfreeze == -1 else f'the top {c.unfreeze}'} layer groups of "
            f"{self.backbone_name} "
            f"trained at {c.lr / c.lr_ratio:.2g} (head {c.lr:.2g}), AdamW, up to {c.epochs} "
            f"epochs, best validation epoch kept (patience {c.patience} epochs).",
            "scratch": f"from scratch: {self.backbone_name} randomly initialised, every layer trained at "
            f"{self.scratch_lr:.2g} (AdamW, warm-up + cosine, weight decay 0.05; BatchNorm on batch "
            f"statistics), at least "
            f"{c.scratch_epochs} epochs and {c.scratch_min_steps} steps, best validation epoch "
            f"kept (patience {c.scratch_patience} epochs, stretched with them).",
            "cnn": (
                "small CNN: a Kim-style text CNN (64-d word embeddings over the 30,000 most "
                "frequent words of the cell's training texts, convolutions of widths 3/4/5 with "
                "64 channels, max over time, dropout 0.5; the first and last 200 words of long texts), "
                if self.modality == "text"
                else "small CNN: 5 conv layers (~140k parameters) on the native pixels (at most "
                "64 px), random shifts of up to 2 px, "
            )
            + f"AdamW at {c.cnn_lr:.2g}, at least {c.cnn_epochs} epochs "
            f"and {c.cnn_min_steps} steps, best validation epoch kept (patience {c.cnn_patience} epochs, stretched with them).",
            "baseline": "baseline: pixels (28 x 28 grey) or TF-IDF + logistic regression, C chosen on "
            "validation.",
        }
        return [text[s] for s in strategies]

    def features(self) -> dict[str, np.ndarray]:
        """Pretrained features of the label pool and the test split: computed once, cached."""
        if self._features is None:
            from .extract import extract_features

            self._features = {}
            for name, ex in (("pool", self.pool), ("test", self.test)):
                fs = extract_features(
                    self.backbone,
                    ex,
                    batch_size=self.cfg.batch_size,
                    engine=self.cfg.engine,
                    cache_dir=self.cfg.cache_dir,
                    progress=self.progress,
                    fingerprint=self.fingerprints[name],
                )
                self._features[name] = fs.load()
                self.feature_info[name] = {
                    "n": fs.n,
                    "engine": fs.engine,
                    "seconds": round(fs.seconds, 3),
                    "cached": fs.computed_shards == 0,
                }
        return self._features

    # --------------------------------------------------------------------------- strategies
    def _probe(self, tr: np.ndarray, va: np.ndarray, seed: int) -> Any:
        from .heads import LogisticHead

        F = self.features()["pool"]
        y = self.pool.labels
        return LogisticHead(refit=False, random_state=seed).fit(F[tr], y[tr], F[va], y[va])

    def run_extract(self, tr: np.ndarray, va: np.ndarray, seed: int) -> dict[str, Any]:
        from .heads import LogisticHead

        F, y = self.features()["pool"], self.pool.labels
        probe = self._probe(tr, va, seed)
        both = np.concatenate([tr, va])
        head = LogisticHead(C=float(probe.C_), refit=False, random_state=seed).fit(F[both], y[both])
        proba = head.predict_proba(self.features()["test"])
        return {
            "proba": proba,
            "val_accuracy": float(np.mean(probe.predict(F[va]) == y[va])),
            "detail": {"C": float(probe.C_)},
        }

    def _tuned_proba(self, backbone: Any, head_module: Any) -> np.ndarray:
        import torch

        from .extract import features_in_memory

        F = features_in_memory(backbone, self.test, batch_size=self.cfg.batch_size or 64)
        head_module = head_module.cpu().eval()
        with torch.inference_mode():
            logits = head_module(torch.from_numpy(F)).numpy()
        return _softmax(logits)

    def _checkpoint(self, cell: str, key: str, n_train: int) -> Path | None:
        """Where a long cell checkpoints each epoch (to resume inside it), or None.

        Epochs of fewer than :data:`CHECKPOINT_MIN_STEPS` steps are not worth a checkpoint
        (writing it would cost more than redoing the epoch): such cells restart from scratch.
        """
        if math.ceil(n_train / self.cfg.finetune_batch_size) < CHECKPOINT_MIN_STEPS:
            return None
        return Path(self.cfg.out) / "checkpoints" / f"{cell}-{key[:12]}.pt"

    def run_finetune(
        self, tr: np.ndarray, va: np.ndarray, seed: int, cell: str, key: str
    ) -> dict[str, Any]:
        from .finetune import FinetuneConfig, finetune

        c = self.cfg
        probe = self._probe(tr, va, seed)
        backbone = copy.deepcopy(self.backbone)
        ft = FinetuneConfig(
            unfreeze=c.unfreeze,
            epochs=c.epochs,
            head_lr=c.lr,
            lr_ratio=c.lr_ratio,
            batch_size=c.finetune_batch_size,
            patience=c.patience,
            mixed_precision=c.mixed_precision,
            seed=seed,
        )
        ckpt = self._checkpoint(cell, key, len(tr))
        model, res = finetune(
            backbone,
            probe.to_torch(),
            self.pool.subset(tr),
            self.pool.subset(va),
            ft,
            checkpoint=ckpt,
            progress=False,
        )
        proba = self._tuned_proba(model.backbone, model.head)
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)
        return {
            "proba": proba,
            "val_accuracy": res.val_accuracy,
            "detail": _train_detail(res.to_dict()),
        }

    def run_scratch(
        self, tr: np.ndarray, va: np.ndarray, seed: int, cell: str, key: str
    ) -> dict[str, Any]:
        import torch
        from torch import nn

        from .backbones.registry import load_backbone
        from .finetune import finetune
        from .forgetting import ForgettingWarning
        from .heads import HeadModule

        c = self.cfg
        torch.manual_seed(seed)
        backbone = load_backbone(
            self.backbone_name, pretrained=False, image_size=c.image_size, max_length=c.max_length
        )
        d = backbone.feature_dim
        head = HeadModule(np.zeros(d), np.ones(d), nn.Linear(d, len(self.classes)))
        ft = scratch_config(c, len(tr), self.scratch_lr, seed)
        ckpt = self._checkpoint(cell, key, len(tr))
        with warnings.catch_warnings():
            # The 10-100x rule protects pretrained weights; random weights have none to protect.
            warnings.simplefilter("ignore", ForgettingWarning)
            model, res = finetune(
                backbone,
                head,
                self.pool.subset(tr),
                self.pool.subset(va),
                ft,
                checkpoint=ckpt,
                progress=False,
            )
        proba = self._tuned_proba(model.backbone, model.head)
        if ckpt is not None:
            ckpt.unlink(missing_ok=True)
        detail = _train_detail(res.to_dict())
        detail["guard"] = "not applicable: random initialisation"
        return {"proba": proba, "val_accuracy": res.val_accuracy, "detail": detail}

    def run_cnn(self, tr: np.ndarray, va: np.ndarray, seed: int) -> dict[str, Any]:
        c = self.cfg
        kw: dict[str, Any] = {
            "epochs": c.cnn_epochs,
            "lr": c.cnn_lr,
            "batch_size": c.cnn_batch_size,
            "min_steps": c.cnn_min_steps,
            "patience": c.cnn_patience,
            "seed": seed,
        }
        y = self.pool.labels
        if self.modality == "text":
            if not self._words:
                self._words["pool"] = text_words(self.pool.inputs)
                self._words["test"] = text_words(self.test.inputs)
            words = self._words["pool"]
            # The vocabulary comes from this cell's training texts only: from scratch.
            vocab = build_vocab([words[i] for i in tr])
            x_tr = text_ids([words[i] for i in tr], vocab)
            x_va = text_ids([words[i] for i in va], vocab)
            x_te = text_ids(self._words["test"], vocab)
            cnn: SmallCNN = SmallTextCNN(vocab_size=len(vocab) + 2, **kw)
            extra: dict[str, Any] = {"vocabulary": len(vocab)}
        else:
            if not self._pixels:
                self._pixels["pool"], side = image_pixels(self.pool)
                self._pixels["test"], _ = image_pixels(self.test, side)
            x = self._pixels["pool"]
            x_tr, x_va, x_te = x[tr], x[va], self._pixels["test"]
            cnn = SmallCNN(**kw)
            extra = {"side": int(x.shape[-1])}
        cnn.fit(x_tr, y[tr], x_va, y[va], len(self.classes))
        return {
            "proba": cnn.predict_proba(x_te),
            "val_accuracy": cnn.val_accuracy_,
            "detail": {
                "best_epoch": cnn.best_epoch_,
                "epochs_run": len(cnn.history_),
                "n_params": cnn.n_params_,
                **extra,
                "history": cnn.history_,
            },
        }

    def run_baseline(self, tr: np.ndarray, va: np.ndarray, seed: int) -> dict[str, Any]:
        from .baselines import fit_baseline

        base = fit_baseline(self.pool.subset(tr), self.pool.subset(va))
        return {
            "proba": base.predict_proba(self.test),
            "val_accuracy": base.val_accuracy,
            "detail": {"name": base.name, "C": base.C},
        }


def _train_detail(d: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "best_epoch",
        "epochs_run",
        "stopped",
        "n_trainable",
        "lrs",
        "examples_per_s",
        "start_val_accuracy",
        "kept_start",
        "history",
    )
    return {k: d[k] for k in keep if k in d}


def _cell_id(strategy: str, fraction: float, seed: int) -> str:
    return f"{strategy}-f{fraction:g}-seed{seed}"


def _read_cell(path: Path, key: str) -> dict[str, Any] | None:
    import json

    if not path.exists():
        return None
    try:
        cell = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return cell if isinstance(cell, dict) and cell.get("key") == key and "test" in cell else None


def _std(a: np.ndarray) -> float:
    """Sample standard deviation; 0 for a single value."""
    return float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarise_cells(
    cells: list[dict[str, Any]], strategies: list[str] | None = None
) -> list[dict[str, Any]]:
    """Mean ± std (sample std; 0 for one seed) over seeds for each (strategy, fraction).

    Rows come in the order of `strategies` (default :data:`CURVE_STRATEGIES`), then fraction.
    """
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["strategy"], c["fraction"]), []).append(c)
    rows = []
    for (s, f), cs in groups.items():
        acc = np.array([c["test"]["accuracy"] for c in cs])
        f1 = np.array([c["test"]["macro_f1"] for c in cs])
        rows.append(
            {
                "strategy": s,
                "fraction": f,
                "n_labelled": round(float(np.mean([c["n_labelled"] for c in cs]))),
                "n_seeds": len(cs),
                "seeds": sorted(c["seed"] for c in cs),
                "accuracy_mean": float(acc.mean()),
                "accuracy_std": _std(acc),
                "macro_f1_mean": float(f1.mean()),
                "macro_f1_std": _std(f1),
                "seconds_mean": float(np.mean([c["seconds"] for c in cs])),
                "accuracies": [float(a) for a in acc],
            }
        )
    order = {s: i for i, s in enumerate(strategies or CURVE_STRATEGIES)}
    return sorted(rows, key=lambda r: (order.get(r["strategy"], 99), r["fraction"]))


def headline(rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """'With 1% of the labels, fine-tuned transfer reaches X% of the from-scratch model ...'."""
    have = {r["strategy"] for r in rows}
    transfer = next((s for s in ("finetune", "extract") if s in have), None)
    refs = [s for s in ("scratch", "cnn") if s in have]
    if transfer is None or not refs:
        return (
            "No headline: the study needs a transfer strategy (finetune or extract) and a "
            "from-scratch one (scratch or cnn)."
        ), {}
    lo = min(r["fraction"] for r in rows if r["strategy"] == transfer)
    hi = max(r["fraction"] for r in rows if r["strategy"] in refs)
    t = next(r for r in rows if r["strategy"] == transfer and r["fraction"] == lo)
    ref = max(
        (r for r in rows if r["strategy"] in refs and r["fraction"] == hi),
        key=lambda r: r["accuracy_mean"],
    )
    ratio = t["accuracy_mean"] / ref["accuracy_mean"] if ref["accuracy_mean"] > 0 else float("nan")
    what = "fine-tuned transfer" if transfer == "finetune" else "transfer by feature extraction"
    text = (
        f"With {100 * lo:g}% of the labels ({t['n_labelled']:,} examples), {what} reaches "
        f"{100 * ratio:.0f}% of the test accuracy of the best from-scratch model trained on "
        f"{100 * hi:g}% ({ref['n_labelled']:,} examples; {REFERENCE_NAMES[ref['strategy']]}): "
        f"{100 * t['accuracy_mean']:.1f}% vs {100 * ref['accuracy_mean']:.1f}% (mean of "
        f"{t['n_seeds']} and {ref['n_seeds']} seeds)."
    )
    holds = None
    if math.isclose(lo, 0.01) and math.isclose(hi, 1.0):
        # The claim this study tests: "90-95% of a custom model's performance with ~1% of the data".
        holds = bool(ratio >= CLAIM_RATIO)
        text += (
            f" The claim '{100 * CLAIM_RATIO:.0f}-95% of a from-scratch model's accuracy with 1% "
            f"of the data' {'holds' if holds else 'does not hold'} here."
        )
    detail = {
        "transfer": transfer,
        "fraction": lo,
        "transfer_accuracy": t["accuracy_mean"],
        "reference": ref["strategy"],
        "reference_fraction": hi,
        "reference_accuracy": ref["accuracy_mean"],
        "ratio": ratio,
        "claim_holds": holds,
    }
    return text, detail


def _text_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    fracs = sorted({r["fraction"] for r in rows})
    by = {(r["strategy"], r["fraction"]): r for r in rows}
    head = ["labels", "examples", *(STRATEGY_LABELS.get(s, s) for s in strategies)]
    lines = []
    for f in fracs:
        n = next(r["n_labelled"] for r in rows if r["fraction"] == f)
        cells = [f"{100 * f:g}%", f"{n:,}"]
        for s in strategies:
            r = by.get((s, f))
            cells.append(
                "–"
                if r is None
                else f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f}"
            )
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join(fmt.format(*r) for r in [head, *lines])


def _run_cells(
    study: _Study, plan: list[tuple[float, int, str]], max_new_cells: int | None, progress: bool
) -> tuple[list[dict[str, Any]], list[str], list[str], bool]:
    """Compute or reuse each planned cell; (cells, computed ids, reused ids, stopped early)."""
    from .run import seed_everything

    cfg, out = study.cfg, Path(study.cfg.out)
    n_pool, k = len(study.pool), len(study.classes)
    cells: list[dict[str, Any]] = []
    computed: list[str] = []
    reused: list[str] = []
    stopped = False
    for j, (f, seed, strategy) in enumerate(plan, 1):
        n = _budget(n_pool, k, f)
        cell_id = _cell_id(strategy, f, seed)
        key = stable_hash(
            {
                "format": _CELL_FORMAT,
                "data": study.fingerprints,
                "strategy": strategy,
                "fraction": f,
                "seed": seed,
                "n": n,
                "val_fraction": cfg.val_fraction,
                "settings": study.settings(strategy),
            }
        )
        path = out / "cells" / f"{cell_id}.json"
        done = _read_cell(path, key)
        if done is not None:
            cells.append(done)
            reused.append(cell_id)
            continue
        if max_new_cells is not None and len(computed) >= max_new_cells:
            stopped = True  # keep scanning: later finished cells still count in the summary
            continue
        tr, va = _cell_split(study.pool, n, seed, cfg.val_fraction)
        if strategy in ("extract", "finetune"):
            study.features()  # once per study, not counted in the cell's time
        seed_everything(seed)
        t0 = time.perf_counter()
        if strategy in ("finetune", "scratch"):
            res = getattr(study, f"run_{strategy}")(tr, va, seed, cell_id, key)
        else:
            res = getattr(study, f"run_{strategy}")(tr, va, seed)
        seconds = time.perf_counter() - t0
        cell = {
            "format": _CELL_FORMAT,
            "cell": cell_id,
            "key": key,
            "strategy": strategy,
            "fraction": f,
            "seed": seed,
            "n_labelled": n,
            "n_train": len(tr),
            "n_val": len(va),
            "split": stable_hash({"train": tr, "val": va}),
            "test": _short_metrics(study.test.labels, res["proba"], study.classes),
            "val_accuracy": res["val_accuracy"],
            "seconds": round(seconds, 3),
            "detail": res["detail"],
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(path, cell)
        cells.append(cell)
        computed.append(cell_id)
        if progress:
            print(
                f"[{j}/{len(plan)}] {cell_id}: test accuracy {cell['test']['accuracy']:.4f} "
                f"({n:,} labels, {seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )

    return cells, computed, reused, stopped


def run_curve(
    data: str | CurveConfig,
    *,
    progress: bool = True,
    max_new_cells: int | None = None,
    command: str | None = None,
    **settings: Any,
) -> CurveResult:
    """Run (or resume) the data-efficiency study and write its folder.

    `data` is what `headstart fit` takes (a built-in name, a folder, a table) and `settings`
    are :class:`CurveConfig` fields (``fractions``, ``strategies``, ``seeds``, ``backbone``,
    ``out``, ...); or pass a ready :class:`CurveConfig`. ``max_new_cells`` stops after computing
    that many cells (run again to go on). Returns what was computed, what was reused, the
    table rows and the headline.
    """
    from ._env import machine, versions
    from .report import plot_learning_curve, write_report
    from .tracking import Tracker

    if isinstance(data, CurveConfig):
        if settings:
            raise ConfigError(
                "Pass either a CurveConfig or keyword settings to run_curve, not both."
            )
        cfg = data
    else:
        cfg = CurveConfig(data=data, **settings)
    out = Path(cfg.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    study = _Study(cfg, progress)
    strategies = list(cfg.strategies)
    if "cnn" in strategies and study.modality not in ("image", "text"):
        raise ConfigError(
            f"The 'cnn' strategy is a small CNN for images or text; {cfg.data} is "
            f"{study.modality} data. Leave 'cnn' out of --strategies."
        )
    if "scratch" in strategies and study.modality in ("image", "text") and "cnn" not in strategies:
        strategies.insert(strategies.index("scratch") + 1, "cnn")
    n_pool, k = len(study.pool), len(study.classes)
    if n_pool < 2 * k:
        raise DataError(
            f"The label pool has {n_pool} examples for {k} classes; a study needs at least "
            f"2 per class. Use more data."
        )
    # Opened first, so that a missing package is reported before hours of training.
    tracker = None if cfg.track == "none" else Tracker(cfg.track, out, run_name=f"curve {cfg.data}")
    seeds = list(range(cfg.seeds))
    plan = [(f, s, st) for f in cfg.fractions for s in seeds for st in strategies]
    t_study = time.perf_counter()
    try:
        cells, computed, reused, stopped = _run_cells(study, plan, max_new_cells, progress)
    except BaseException:
        if tracker is not None:
            tracker.close()
        raise
    ckpts = out / "checkpoints"
    if ckpts.is_dir() and not any(ckpts.iterdir()):
        ckpts.rmdir()
    rows = summarise_cells(cells, strategies)
    complete = not stopped and len(cells) == len(plan)
    text, detail = headline(rows) if rows else ("No finished cells yet.", {})
    if not complete:
        text = f"(partial: {len(cells)} of {len(plan)} cells) " + text
    doc = {
        "format": _CELL_FORMAT,
        "config": cfg.to_dict(),
        "command": command,
        "strategies": strategies,
        "fractions": cfg.fractions,
        "seeds": seeds,
        "data": {
            **study.description,
            "fingerprint": study.fingerprints,
            "pool": n_pool,
            "n_test": len(study.test),
        },
        "backbone": {"name": study.backbone_name, "weights": study.backbone.weights.source},
        "features": study.feature_info,
        "rows": rows,
        "headline": text,
        "headline_detail": detail,
        "notes": study.notes(strategies),
        "cells": {
            "total": len(plan),
            "done": len(cells),
            "computed": len(computed),
            "reused": len(reused),
        },
        "complete": complete,
        "seconds": round(time.perf_counter() - t_study, 1),
        "versions": versions(),
        "machine": machine(),
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    atomic_write_json(out / "curve.json", doc)
    if rows:
        atomic_write_bytes(
            out / "curve.png", plot_learning_curve(rows, f"{cfg.data}: {study.backbone_name}")
        )
    md = [
        f"# Data efficiency: {cfg.data}",
        "",
        text,
        "",
        "Test accuracy (%), mean ± std over "
        f"{cfg.seeds} seed(s), {len(study.test):,} test examples.",
        "",
        _text_table(rows, markdown=True) if rows else "",
        "",
    ]
    atomic_write_bytes(out / "results.md", "\n".join(md).encode())
    report = write_report(out)
    if tracker is not None:
        with tracker:
            tracker.log_params({k: v for k, v in cfg.to_dict().items() if v is not None})
            for r in rows:
                tracker.log_metrics(
                    {
                        f"{r['strategy']}/test_accuracy": r["accuracy_mean"],
                        f"{r['strategy']}/test_accuracy_std": r["accuracy_std"],
                        f"{r['strategy']}/macro_f1": r["macro_f1_mean"],
                    },
                    step=r["n_labelled"],
                )
    return CurveResult(out, rows, text, computed, reused, complete, report, total=len(plan))
