"""The small CNN from scratch as a fitted, saved and reloadable baseline: ``auto``'s second
image contender.

Pixels + logistic regression is the cheap image baseline; a small CNN trained from scratch
(:class:`~headstart.baselines.cnn.SmallCNN`, ~140k parameters on native-resolution pixels up
to 64 px) is the reference small-data practitioners actually reach for, and on small images
far from ImageNet it can beat transfer outright (issue 5's study: 92.0 against 88.2 on all of
Fashion-MNIST). :func:`plan_cnn` prices it before it runs (a measured training step times
the schedule) and :func:`fit_cnn` trains it under a deadline; ``auto`` fits it before the
fine-tuning ladder, so the ladder plans with the time that is really left, and stacks it with
transfer in :mod:`headstart.strategies.contend`.

:class:`ScratchCNN` has :class:`~headstart.baselines.linear.Baseline`'s interface
(``predict_proba(examples)``, ``val_proba``, ``state()`` / ``from_state()``), so the bundle,
``predict``, ``evaluate`` and the report treat both alike. It is saved as numeric arrays in
safetensors plus a JSON description (:mod:`headstart.baselines.store`): no pickle.

The CNN's validation probabilities come from its best epoch on that same validation split
(early stopping), as a fine-tuned rung's do: they are slightly optimistic, the usual price of
early stopping without a third split; the contender stage's paired noise margin absorbs it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from headstart.baselines.cnn import SmallCNN, cnn_module, image_pixels
from headstart.baselines.linear import BASELINE_FORMAT
from headstart.data.base import Examples
from headstart.errors import ConfigError, DataError

__all__ = ["CNN_NAME", "CNN_SHARE", "CnnPlan", "ScratchCNN", "fit_cnn", "plan_cnn"]

CNN_NAME = "small-cnn"
#: The most of the time left the CNN contender may take when it starts. Transfer is the
#: model headstart exists to deliver and the contender is its check: the contender may not
#: take most of the time, and a run that cannot spare half for it skips it (saying which
#: ``--time-budget`` runs it).
CNN_SHARE = 0.5
#: Network width (channels of the first block; see :func:`~headstart.baselines.cnn.cnn_module`).
WIDTH = 32
_REFIT = "Re-run headstart fit to train the CNN baseline again."


class ScratchCNN:
    """A fitted small CNN from scratch, with the :class:`~headstart.baselines.Baseline` interface.

    Attributes: ``name`` (``"small-cnn"``), ``modality`` (``"image"``), ``classes``, ``side``
    (the square input side, pixels), ``in_channels``, ``val_proba`` (best epoch, trained on
    train only), ``val_accuracy``, ``refit`` (always False: the validation split chose the
    epoch), ``fit_seconds``, ``n_params``, ``epochs_run``, ``best_epoch``.
    """

    name = CNN_NAME
    modality = "image"
    refit = False

    def __init__(self, net: SmallCNN, classes: list[str], side: int, in_channels: int) -> None:
        self._net = net
        self.classes = list(classes)
        self.side = int(side)
        self.in_channels = int(in_channels)
        self.val_proba: np.ndarray | None = None
        self.val_accuracy = float("nan")
        self.fit_seconds = float("nan")
        self.epochs_run = 0
        self.best_epoch = 0
        self.stopped_early = False

    @property
    def n_params(self) -> int:
        return int(sum(p.numel() for p in self._net.model_.parameters()))

    def _pixels(self, examples: Examples) -> Any:
        if examples.modality != "image":
            raise DataError(
                f"This {self.name} baseline was trained on images but got {examples.modality} "
                f"data ({examples.name or 'unnamed split'})."
            )
        if list(examples.classes) != self.classes:
            raise DataError(
                f"Class names of {examples.name or 'the split'} ({examples.classes[:5]}...) "
                f"differ from the training split's ({self.classes[:5]}...). Score splits of "
                "the same data set, whose label indices mean the same classes."
            )
        x, _ = image_pixels(examples, self.side)
        if x.shape[1] != self.in_channels:
            raise DataError(
                f"{examples.name or 'These images'} have {x.shape[1]} channel(s); the {self.name} "
                f"baseline was trained on {self.in_channels}. Give images like the training ones."
            )
        return x

    def predict_proba(self, examples: Examples) -> np.ndarray:
        """Probabilities, shape (len(examples), len(classes)), columns in ``classes`` order."""
        if len(examples) == 0:
            return np.zeros((0, len(self.classes)))
        return self._net.predict_proba(self._pixels(examples))

    def predict(self, examples: Examples) -> np.ndarray:
        return self.predict_proba(examples).argmax(axis=1).astype(np.int64)

    def describe(self) -> str:
        stop = ", stopped at the deadline" if self.stopped_early else ""
        return (
            f"{self.name}: a {self.n_params:,}-parameter CNN trained from scratch on "
            f"{self.side}x{self.side} pixels ({self.in_channels} channel(s)), AdamW + cosine, "
            f"random 2-px shifts, best of {self.epochs_run} epochs on validation (epoch "
            f"{self.best_epoch}{stop}); val accuracy {self.val_accuracy:.4f}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.describe(),
            "val_accuracy": self.val_accuracy,
            "n_params": self.n_params,
            "side": self.side,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
            "refit": False,
            "fit_seconds": self.fit_seconds,
        }

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """A JSON-able description and numeric arrays (``net.<tensor>``, ``norm.mean``,
        ``norm.std``, ``val_proba``) for :meth:`from_state` and
        :func:`~headstart.baselines.store.save_baseline`."""
        net = self._net
        arrays = {f"net.{k}": v.detach().cpu().numpy() for k, v in net.model_.state_dict().items()}
        arrays["norm.mean"] = net.mean_.cpu().numpy()
        arrays["norm.std"] = net.std_.cpu().numpy()
        if self.val_proba is not None:
            arrays["val_proba"] = self.val_proba
        meta = {
            "format": BASELINE_FORMAT,
            "name": self.name,
            "modality": self.modality,
            "classes": list(self.classes),
            "side": self.side,
            "in_channels": self.in_channels,
            "width": WIDTH,
            "refit": False,
            "val_accuracy": self.val_accuracy,
            "fit_seconds": self.fit_seconds,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
        }
        return meta, {k: np.ascontiguousarray(v) for k, v in arrays.items()}

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> ScratchCNN:
        """Rebuild from :meth:`state`; predictions equal the original's. ConfigError says what
        is wrong when ``meta`` and ``arrays`` do not describe this network."""
        import torch

        if meta.get("format") != BASELINE_FORMAT or meta.get("name") != CNN_NAME:
            raise ConfigError(f"Not a saved {CNN_NAME} baseline of format {BASELINE_FORMAT}.")
        classes = meta.get("classes")
        if not isinstance(classes, list) or not classes or not all(
            isinstance(c, str) for c in classes
        ):  # fmt: skip
            raise ConfigError(f"'classes' must be a non-empty list of names. {_REFIT}")
        ints: dict[str, Any] = {k: meta.get(k) for k in ("side", "in_channels", "width")}
        bad = {k: v for k, v in ints.items() if not isinstance(v, int) or isinstance(v, bool)}
        if bad or not (1 <= ints["side"] <= 64 and 1 <= ints["in_channels"] <= 3):
            raise ConfigError(
                f"side (1-64), in_channels (1-3) and width must be integers; got {ints}. {_REFIT}"
            )
        side, in_ch, width = (int(ints[k]) for k in ("side", "in_channels", "width"))
        net = SmallCNN()
        net.device_ = torch.device("cpu")
        net.model_ = cnn_module(in_ch, len(classes), width)
        tensors = {
            k[4:]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("net.")
        }
        try:
            net.model_.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise ConfigError(f"The saved network does not fit its description: {exc}") from exc
        shape = (1, in_ch, 1, 1)
        for key in ("norm.mean", "norm.std"):
            if key not in arrays or np.asarray(arrays[key]).shape != shape:
                raise ConfigError(f"{key} must have shape {shape}. {_REFIT}")
        net.mean_ = torch.from_numpy(np.array(arrays["norm.mean"], dtype=np.float32))
        net.std_ = torch.from_numpy(np.array(arrays["norm.std"], dtype=np.float32))
        if float(net.std_.min()) <= 0:
            raise ConfigError(f"norm.std must be positive. {_REFIT}")
        out = cls(net, classes, side, in_ch)
        out.val_accuracy = float(meta.get("val_accuracy", float("nan")))
        out.fit_seconds = float(meta.get("fit_seconds", float("nan")))
        out.epochs_run = int(meta.get("epochs_run", 0))
        out.best_epoch = int(meta.get("best_epoch", 0))
        out.stopped_early = bool(meta.get("stopped_early", False))
        if "val_proba" in arrays:
            vp = np.asarray(arrays["val_proba"], dtype=np.float64)
            if vp.ndim != 2 or vp.shape[1] != len(classes):
                raise ConfigError(f"val_proba needs one column per class. {_REFIT}")
            out.val_proba = vp.copy()
        return out


@dataclass
class CnnPlan:
    """What training the CNN contender would cost, and whether it runs."""

    run: bool
    estimate_s: float
    step_s: float
    steps: int
    reason: str
    #: the pixels already decoded (train, val) and the side, for :func:`fit_cnn`
    pixels: tuple[Any, Any, int] | None = None


def plan_cnn(
    train: Examples, val: Examples, *, seed: int = 0, time_left_s: float | None = None
) -> CnnPlan:
    """Price the CNN contender: a measured training step times its whole schedule (every
    epoch, as early stopping may not come), plus scoring the validation split each epoch
    (a forward pass, ~1/3 of a step per example). It runs when there is no deadline or when
    that fits :data:`CNN_SHARE` of ``time_left_s``."""
    xt, side = image_pixels(train)
    xv, _ = image_pixels(val, side)
    net = SmallCNN(seed=seed)
    epochs, _, per_epoch = net.schedule(len(train))
    step_s = net.measure_step(xt, train.labels, len(train.classes))
    steps = epochs * per_epoch
    eval_s = epochs * step_s * len(val) / net.batch_size / 3
    estimate = steps * step_s + eval_s
    pixels = (xt, xv, side)
    what = (
        f"the small CNN from scratch ({steps:,} steps at {1000 * step_s:.0f} ms, ~{estimate:.0f} s)"
    )
    if time_left_s is None:
        return CnnPlan(True, estimate, step_s, steps, f"{what}: no time budget", pixels)
    allowed = CNN_SHARE * max(0.0, time_left_s)
    if estimate <= allowed:
        return CnnPlan(
            True, estimate, step_s, steps,
            f"{what} fits {CNN_SHARE:.0%} of the {time_left_s:.0f} s left", pixels,
        )  # fmt: skip
    return CnnPlan(
        False, estimate, step_s, steps,
        f"{what} would take more than {CNN_SHARE:.0%} of the {time_left_s:.0f} s left: "
        "not trained, the contender stage uses pixels + logistic regression only",
    )  # fmt: skip


def fit_cnn(
    train: Examples, val: Examples, plan: CnnPlan, *, seed: int = 0, deadline: float | None = None
) -> ScratchCNN:
    """Train the CNN contender on ``train`` (early stopping on ``val``) with ``plan``'s pixels.

    ``deadline`` (``time.perf_counter()``): no epoch starts after it; the best one is kept.
    """
    t0 = time.perf_counter()
    if plan.pixels is None:
        raise ValueError("plan_cnn did not plan to run the CNN")
    xt, xv, side = plan.pixels
    net = SmallCNN(seed=seed).fit(
        xt, train.labels, xv, val.labels, len(train.classes), deadline=deadline
    )
    out = ScratchCNN(net, train.classes, side, int(xt.shape[1]))
    out.val_proba = net.predict_proba(xv)
    out.val_accuracy = float(np.mean(out.val_proba.argmax(1) == val.labels))
    out.epochs_run = len(net.history_)
    out.best_epoch = int(getattr(net, "best_epoch_", 0))
    out.stopped_early = bool(net.stopped_early_)
    out.fit_seconds = time.perf_counter() - t0
    if not math.isfinite(out.val_accuracy):
        raise DataError("The CNN baseline produced no validation score.")
    return out
