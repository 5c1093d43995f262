"""One study's data, features and one method per strategy (extraction and fine-tuning run the
strategies of :mod:`headstart.strategies`, as ``headstart fit`` does)."""

from __future__ import annotations

import logging
import math
import shutil
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..baselines.cnn import (
    SmallCNN,
    SmallTextCNN,
    build_vocab,
    image_pixels,
    stretch_epochs,
    text_ids,
    text_words,
)
from ..config import FinetuneConfig
from ..data.base import Examples, Splits
from ..errors import ConfigError, DataError
from .config import CHECKPOINT_MIN_STEPS, CurveConfig

log = logging.getLogger("headstart")


def scratch_config(c: CurveConfig, n_train: int, lr: float) -> FinetuneConfig:
    """The `FinetuneConfig` that trains a randomly initialised backbone and head from scratch.

    Every layer trains at one learning rate (``lr_ratio=1``: random weights have nothing to
    protect), and BatchNorm uses batch statistics (``bn="train"``): fine-tuning's default
    keeps the *pretrained* running statistics, which for a random network are the initial
    zeros and ones, so its activations are never normalised (measured: mobilenet_v2 from
    scratch on 480 Fashion-MNIST images predicted one class, 10 % accuracy).
    """
    steps = math.ceil(n_train / c.finetune.batch_size)
    epochs, patience = stretch_epochs(
        c.scratch_epochs, c.scratch_patience, c.scratch_min_steps, steps
    )
    return FinetuneConfig(
        unfreeze=-1,
        epochs=epochs,
        lr=lr,
        lr_ratio=1.0,
        weight_decay=0.05,
        batch_size=c.finetune.batch_size,
        patience=patience,
        mixed_precision=c.finetune.mixed_precision,
        bn="train",
        keep_start=False,  # the start is a random network
    )


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def short_metrics(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from ..metrics import classification_metrics

    m = classification_metrics(y, proba, classes)
    return {
        k: m[k]
        for k in ("n", "accuracy", "macro_f1", "balanced_accuracy", "log_loss", "ece", "roc_auc")
    }


class Study:
    """Loaded data, lazily extracted features, and one method per strategy."""

    def __init__(self, cfg: CurveConfig, progress: bool) -> None:
        from ..backbones.registry import DEFAULT_BACKBONE, load_backbone
        from ..data.load import load_data

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
            on_error="skip" if cfg.skip_bad_files else "raise",
        )
        if splits.test is None:  # pragma: no cover - load_data always makes a test split
            raise DataError(f"{cfg.data} has no test split; pass --test FILE.")
        self.description = splits.description
        self.classes = list(splits.classes)
        # the pool in the order `fit` carves it, so a cell (n, seed) is `fit --train-size n --seed seed`
        assert splits.pool is not None  # no --val file: load_data kept the pool
        self.pool = replace(splits.pool, name=f"{splits.train.name} (label pool)")
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
            return {**bb, "head": c.extract.head}
        if strategy == "finetune":
            return {**bb, "head": c.extract.head, "finetune": c.finetune.to_dict()}
        if strategy == "auto":
            return {
                **bb,
                "head": c.extract.head,
                "finetune": c.finetune.to_dict(),
                "ladder": c.ladder.to_dict(),
                "time_budget_s": c.time_budget_s,
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
                "batch_size": c.finetune.batch_size,
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
        ft = c.finetune
        text = {
            "extract": f"feature extraction: {self.backbone_name} frozen, features extracted once for "
            "the whole label pool and the test split; logistic head, C chosen on validation "
            "log-loss, refitted on train + validation.",
            "finetune": f"fine-tuning: LP-FT from the linear probe; "
            f"{'all the' if ft.unfreeze == -1 else f'the top {ft.unfreeze}'} layer groups of "
            f"{self.backbone_name} "
            f"trained at {ft.lr / ft.lr_ratio:.2g} (head {ft.lr:.2g}), AdamW, up to {ft.epochs} "
            f"epochs, best validation epoch kept (patience {ft.patience} epochs); the same code "
            "and settings as `headstart fit --strategy finetune`.",
            "auto": f"auto: the ladder as `headstart fit` runs it on {self.backbone_name} "
            "(extraction, then a fine-tuning rung only where the validation split can resolve its "
            "expected gain and its measured cost fits; then the non-transfer contenders (the small "
            "CNN where it fits, pixels or TF-IDF) and their stack with transfer: the stack kept only "
            "when it wins on validation beyond noise, the baseline also when it leads within "
            f"noise), within {_budget_text(c.time_budget_s)} per "
            "cell, not counting the study's shared feature extraction. One backbone serves the "
            "whole study: `fit --backbone auto` ranks candidates on each run's labels, the study "
            "does not.",
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
            from ..features.cache import extract_features

            self._features = {}
            for name, ex in (("pool", self.pool), ("test", self.test)):
                fs = extract_features(
                    self.backbone,
                    ex,
                    batch_size=self.cfg.extract.batch_size,
                    engine=self.cfg.extract.engine,
                    cache_dir=self.cfg.extract.cache_dir,
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
    def _context(self, tr: np.ndarray, va: np.ndarray, seed: int, ckpt: Path | None = None) -> Any:
        """The strategies' view of a cell: the pool's cached features sliced, no re-extraction."""
        from ..features.cache import extract_features
        from ..strategies import Context

        c = self.cfg.extract

        def features(backbone: Any, ex: Examples) -> np.ndarray:  # a tuned backbone's
            return extract_features(
                backbone,
                ex,
                batch_size=c.batch_size,
                engine=c.engine,
                cache_dir=c.cache_dir,
                progress=False,
            ).load()

        F = self.features()["pool"]
        return Context(
            backbone=self.backbone,
            train=self.pool.subset(tr),
            val=self.pool.subset(va),
            classes=self.classes,
            features=features,
            seed=seed,
            checkpoint_dir=ckpt,
            train_features=F[tr],
            val_features=F[va],
        )

    def _run(self, strategy: str, ctx: Any) -> Any:
        from ..strategies import run_strategy

        return run_strategy(
            ctx,
            strategy,
            extract=self.cfg.extract,
            finetune=self.cfg.finetune,
            measure_forgetting=False,
        )

    def run_extract(self, tr: np.ndarray, va: np.ndarray, seed: int) -> dict[str, Any]:
        res = self._run("extract", self._context(tr, va, seed)).chosen
        proba = res.head.predict_proba(self.features()["test"])
        detail = {"C": float(res.probe.C_)} if hasattr(res.probe, "C_") else {}
        return {"proba": proba, "val_accuracy": res.val_accuracy, "detail": detail}

    def _tuned_proba(self, backbone: Any, head_module: Any) -> np.ndarray:
        import torch

        from ..features.cache import features_in_memory

        F = features_in_memory(backbone, self.test, batch_size=self.cfg.extract.batch_size or 64)
        head_module = head_module.cpu().eval()
        with torch.inference_mode():
            logits = head_module(torch.from_numpy(F)).numpy()
        return _softmax(logits)

    def _checkpoint(self, cell: str, key: str, n_train: int) -> Path | None:
        """Where a long cell checkpoints each epoch (to resume inside it), or None.

        Epochs of fewer than :data:`CHECKPOINT_MIN_STEPS` steps are not worth a checkpoint
        (writing it would cost more than redoing the epoch): such cells restart from scratch.
        """
        if math.ceil(n_train / self.cfg.finetune.batch_size) < CHECKPOINT_MIN_STEPS:
            return None
        return Path(self.cfg.out) / "checkpoints" / f"{cell}-{key[:12]}"

    def run_finetune(
        self, tr: np.ndarray, va: np.ndarray, seed: int, cell: str, key: str
    ) -> dict[str, Any]:
        ckpt = self._checkpoint(cell, key, len(tr))
        res = self._run("finetune", self._context(tr, va, seed, ckpt)).chosen
        proba = self._tuned_proba(res.backbone, res.head.to_torch())
        if ckpt is not None:
            shutil.rmtree(ckpt, ignore_errors=True)
        return {
            "proba": proba,
            "val_accuracy": res.val_accuracy,
            "detail": _train_detail(res.detail),
        }

    def run_auto(
        self, tr: np.ndarray, va: np.ndarray, seed: int, cell: str, key: str
    ) -> dict[str, Any]:
        """The ladder, as ``headstart fit --strategy auto`` runs it, within one fit's budget."""
        import math
        import time

        from ..strategies import run_strategy
        from ..strategies.auto import deadline

        c = self.cfg
        ckpt = self._checkpoint(cell, key, len(tr))
        ctx = self._context(tr, va, seed, ckpt)
        budget = c.time_budget_s if math.isfinite(c.time_budget_s) else None
        ctx.deadline = deadline(budget, time.perf_counter())
        ctx.budget_s = budget
        ctx.n_score = len(self.test)  # a tuned backbone must extract the test split again
        out = run_strategy(
            ctx,
            "auto",
            extract=c.extract,
            finetune=c.finetune,
            ladder=c.ladder,
            measure_forgetting=False,
        )
        res = out.chosen
        if res.unfreeze == 0:
            proba = res.head.predict_proba(self.features()["test"])
        else:
            proba = self._tuned_proba(res.backbone, res.head.to_torch())
        val_accuracy = res.val_accuracy
        chosen = res.label
        if out.contest is not None and out.contest.chosen != "transfer":
            # auto kept the baseline or the stack: score what a fit would predict with
            proba = out.contest.predict_proba(proba, self.test)
            val_accuracy = out.contest.val_accuracy[out.contest.chosen]
            chosen = f"{out.contest.chosen} ({out.contest.baseline.name}" + (
                f" + {res.label})" if out.contest.chosen == "stack" else ")"
            )
        if ckpt is not None:
            shutil.rmtree(ckpt, ignore_errors=True)
        detail = {
            "chosen": chosen,
            "rungs": [r.label for r in out.results],
            "skipped": [s["step"] for s in out.skipped],
            "reasons": list(out.reasons),
        }
        return {"proba": proba, "val_accuracy": val_accuracy, "detail": detail}

    def run_scratch(
        self, tr: np.ndarray, va: np.ndarray, seed: int, cell: str, key: str
    ) -> dict[str, Any]:
        import torch
        from torch import nn

        from ..backbones.registry import load_backbone
        from ..forgetting import ForgettingWarning
        from ..heads import HeadModule
        from ..strategies.training import finetune

        c = self.cfg
        torch.manual_seed(seed)
        backbone = load_backbone(
            self.backbone_name, pretrained=False, image_size=c.image_size, max_length=c.max_length
        )
        d = backbone.feature_dim
        head = HeadModule(np.zeros(d), np.ones(d), nn.Linear(d, len(self.classes)))
        ft = scratch_config(c, len(tr), self.scratch_lr)
        ckpt = self._checkpoint(cell, key, len(tr))
        ckpt = None if ckpt is None else ckpt.with_suffix(".pt")
        with warnings.catch_warnings():
            # The 10-100x rule protects pretrained weights; random weights have none to protect.
            warnings.simplefilter("ignore", ForgettingWarning)
            model, res = finetune(
                backbone,
                head,
                self.pool.subset(tr),
                self.pool.subset(va),
                ft,
                seed=seed,
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
        from ..baselines import fit_baseline

        base = fit_baseline(self.pool.subset(tr), self.pool.subset(va))
        return {
            "proba": base.predict_proba(self.test),
            "val_accuracy": base.val_accuracy,
            "detail": {"name": base.name, "C": base.C},
        }


def _budget_text(seconds: float) -> str:
    from ..plan import format_duration

    return "no time limit" if seconds == float("inf") else f"a {format_duration(seconds)} budget"


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
        "val_metrics",
        "history",
    )
    return {k: d[k] for k in keep if k in d}
