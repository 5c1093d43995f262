"""`TransferClassifier`: the scikit-learn estimator that is headstart's engine.

    clf = TransferClassifier(backbone="torchvision:mobilenet_v2").fit(images, labels)
    clf.predict(new_images); clf.save("model/"); load_model("model/").predict_proba(...)
    TransferClassifier(strategy="finetune", finetune=FinetuneConfig(epochs=3)).fit(X, y)
    GridSearchCV(TransferClassifier(strategy="finetune"), {"finetune__lr_ratio": [10, 30]})

``X`` may be an :class:`~headstart.data.base.Examples`, a uint8 image array (N,H,W[,C]), a list
of image paths, or a list of texts; ``y`` holds labels of any hashable type. ``fit`` runs a
strategy (:func:`headstart.strategies.run_strategy`): ``extract``, ``finetune`` or ``auto``
(the ladder); ``headstart fit`` and ``headstart curve`` run the same code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from .backbones.base import Backbone
from .config import STRATEGIES, ExtractConfig, FinetuneConfig, LadderConfig
from .data.base import Examples
from .errors import ConfigError, DataError, NotFittedError

log = logging.getLogger("headstart")

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
#: Nested config parameters (``finetune__epochs``) and the class a ``None`` default stands for.
_SECTIONS: dict[str, type] = {"finetune": FinetuneConfig, "ladder": LadderConfig}


def as_examples(X: Any, y: Any = None, classes: Sequence[str] | None = None) -> Examples:
    """Wrap user inputs as :class:`Examples`; labels mapped to indices of ``classes``."""
    if isinstance(X, Examples):
        return X
    modality: Any
    inputs: Any
    if isinstance(X, np.ndarray) and X.dtype == np.uint8 and X.ndim in (3, 4):
        modality, inputs = "image", X
    elif isinstance(X, str | Path) or (isinstance(X, np.ndarray) and X.ndim == 0):
        raise DataError(
            "X must be a sequence of inputs (texts, image paths or an image array), "
            f"not a single {type(X).__name__}; wrap it in a list"
        )
    else:
        inputs = list(X)
        if not inputs:
            raise DataError("X is empty: nothing to fit or predict on")
        first = inputs[0]
        is_path = isinstance(first, Path) or (
            isinstance(first, str)
            and Path(first).suffix.lower() in _IMAGE_EXT
            and Path(first).exists()
        )
        modality = "image" if is_path else "text"
    n = len(inputs)
    if y is None:
        labels = np.full(n, -1, dtype=np.int64)
        cls = list(classes or [])
    else:
        y = np.asarray(y)
        if len(y) != n:
            raise DataError(f"X has {n} examples but y has {len(y)} labels")
        if classes is None:
            uniq = np.unique(y)
            cls = [str(c) for c in uniq]
            labels = np.searchsorted(uniq, y)
        else:
            cls = list(classes)
            index = {c: i for i, c in enumerate(cls)}
            try:
                labels = np.array([index[str(v)] for v in y], dtype=np.int64)
            except KeyError as exc:
                raise DataError(f"label {exc.args[0]!r} is not one of the classes {cls}") from exc
    return Examples(modality=modality, inputs=inputs, labels=labels, classes=cls, name="input")


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """A pretrained backbone plus a trained head, fitted by a strategy.

    Parameters
    ----------
    backbone: a registry name (``"torchvision:mobilenet_v2"``, ``"hf:..."``), a loaded
        :class:`~headstart.backbones.base.Backbone`, or ``"auto"`` (the modality's default).
    head: ``"logistic"`` (L2-regularised, strength chosen on validation data) or ``"mlp"``.
    strategy: ``"extract"`` (frozen backbone), ``"finetune"`` (LP-FT of the top
        ``finetune.unfreeze`` groups) or ``"auto"`` (the ladder: extraction, then fine-tuning
        while the data supports it and it pays on validation).
    finetune, ladder: :class:`~headstart.config.FinetuneConfig` /
        :class:`~headstart.config.LadderConfig` (None: their defaults); their fields are
        nested parameters (``finetune__epochs``) for ``set_params`` and ``GridSearchCV``.
    val_fraction: share of the training data held out for validation when ``fit`` gets no
        ``X_val`` and the strategy needs one (``finetune``, ``auto``).
    time_budget_s: the ladder (``auto``) starts a fine-tuning rung only when its estimated
        cost, from a short measured probe, fits in what is left of this many seconds of
        ``fit`` (None: no limit); refused rungs are listed in ``decisions_["skipped"]``.
    score_reserve: examples to be scored after ``fit`` (a test split): their extraction time
        is kept out of ``time_budget_s``.
    pretrained: load real weights (False: random initialisation, for tests and baselines).
    engine: ``"auto"`` (ONNX Runtime on CPU when it matches PyTorch), ``"torch"`` or ``"onnx"``.
    cache: keep features in the on-disk cache so a second fit skips the backbone.
    checkpoint_dir: fine-tuning rungs checkpoint each epoch here (a killed fit resumes).
    """

    def __init__(
        self,
        backbone: str | Backbone = "auto",
        head: str = "logistic",
        strategy: str = "extract",
        *,
        finetune: FinetuneConfig | None = None,
        ladder: LadderConfig | None = None,
        val_fraction: float = 0.2,
        time_budget_s: float | None = None,
        pretrained: bool = True,
        image_size: int | None = None,
        max_length: int | None = None,
        engine: str = "auto",
        batch_size: int | None = None,
        cache: bool = True,
        cache_dir: str | None = None,
        head_params: dict[str, Any] | None = None,
        checkpoint_dir: str | Path | None = None,
        measure_forgetting: bool = True,
        score_reserve: int = 0,
        random_state: int = 0,
        progress: bool = False,
    ) -> None:
        self.backbone = backbone
        self.head = head
        self.strategy = strategy
        self.finetune = finetune
        self.ladder = ladder
        self.val_fraction = val_fraction
        self.time_budget_s = time_budget_s
        self.pretrained = pretrained
        self.image_size = image_size
        self.max_length = max_length
        self.engine = engine
        self.batch_size = batch_size
        self.cache = cache
        self.cache_dir = cache_dir
        self.head_params = head_params
        self.checkpoint_dir = checkpoint_dir
        self.measure_forgetting = measure_forgetting
        self.score_reserve = score_reserve
        self.random_state = random_state
        self.progress = progress

    def set_params(self, **params: Any) -> TransferClassifier:
        # A nested parameter of a section left at None (its defaults) makes the section first.
        for key in params:
            section, sep, _ = key.partition("__")
            if sep and section in _SECTIONS and getattr(self, section, None) is None:
                setattr(self, section, _SECTIONS[section]())
        super().set_params(**params)
        return self

    # ------------------------------------------------------------------ building blocks
    def _backbone_name(self, modality: str) -> str:
        from .backbones.registry import DEFAULT_BACKBONE

        if isinstance(self.backbone, Backbone):
            return self.backbone.name
        if self.backbone == "auto":
            if modality not in DEFAULT_BACKBONE:
                raise ConfigError(f"no default backbone for {modality} data; pass backbone=...")
            return DEFAULT_BACKBONE[modality]
        return self.backbone

    def _load_backbone(self, modality: str) -> Backbone:
        from .backbones.registry import load_backbone

        if isinstance(self.backbone, Backbone):
            return self.backbone
        return load_backbone(
            self._backbone_name(modality),
            pretrained=self.pretrained,
            image_size=self.image_size,
            max_length=self.max_length,
        )

    def _extract_features(
        self,
        backbone: Backbone,
        examples: Examples,
        *,
        cache: bool | None = None,
        record: list[dict[str, Any]] | None = None,
    ) -> np.ndarray:
        """Features through the cache (or in memory); ``record`` gets what it cost."""
        from .features.cache import extract_features, features_in_memory

        use_cache = self.cache if cache is None else cache
        if not use_cache:
            return features_in_memory(backbone, examples, batch_size=self.batch_size or 32)
        t0 = time.perf_counter()
        fs = extract_features(
            backbone,
            examples,
            batch_size=self.batch_size,
            engine=self.engine,
            cache_dir=self.cache_dir,
            progress=self.progress,
        )
        info: dict[str, Any] = {
            "examples": examples.name,
            "backbone": "tuned" if backbone.weights.tuned_sha256 else "pretrained",
            "n": fs.n,
            "engine": fs.engine,
            "seconds": round(fs.seconds, 3),
            "cached": fs.computed_shards == 0,
            "cache_key": fs.key,
        }
        if fs.seconds > 0:
            done = fs.computed_shards / max(1, fs.computed_shards + fs.cached_shards)
            info["examples_per_s"] = round(fs.n * done / fs.seconds, 1)
        if record is not None:
            record.append(info)
        log.debug("features of %s in %.1f s", examples.name, time.perf_counter() - t0)
        return fs.load()

    def features(
        self, examples: Any, *, backbone: Backbone | None = None, cache: bool | None = None
    ) -> np.ndarray:
        """Features of ``examples`` under the fitted (possibly tuned) backbone, or ``backbone``
        (e.g. ``self.extraction_.backbone``, the pretrained one beside a fine-tuned model)."""
        self._check_fitted(backbone_only=True)
        ex = as_examples(examples, classes=[str(c) for c in getattr(self, "classes_", [])] or None)
        return self._extract_features(backbone or self.backbone_, ex, cache=cache)

    def _check_fitted(self, backbone_only: bool = False) -> None:
        if not hasattr(self, "backbone_") or (not backbone_only and not hasattr(self, "head_")):
            raise NotFittedError(
                "This TransferClassifier is not fitted yet: call fit(X, y) first, or load a "
                "saved model with headstart.load_model(path)."
            )

    # --------------------------------------------------------------------------- fitting
    def fit(
        self, X: Any, y: Any = None, *, X_val: Any = None, y_val: Any = None
    ) -> TransferClassifier:
        """Fit with ``self.strategy``; validation from ``X_val`` or carved from ``X``."""
        from .data.split import stratified_split
        from .strategies import Context, run_strategy
        from .strategies.auto import deadline

        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"The 'strategy' parameter of TransferClassifier must be one of {STRATEGIES}. "
                f"Got {self.strategy!r} instead."
            )
        t0 = time.perf_counter()
        train = as_examples(X, y)
        if train.labels.min(initial=0) < 0 or len(train) == 0:
            raise DataError("fit needs labels: pass y, or Examples with labels")
        if len(train.classes) < 2:
            raise DataError(
                f"the training data has only one class ({train.classes}); a classifier needs at "
                "least two. Add examples of the other classes."
            )
        val = as_examples(X_val, y_val, classes=train.classes) if X_val is not None else None
        if val is None and self.strategy != "extract":
            rest, part = stratified_split(
                train.labels, self.val_fraction, self.random_state + 1, keep_per_class=1
            )
            train, val = train.subset(rest, name="train"), train.subset(part, name="val")
        record: list[dict[str, Any]] = []
        backbone = self._load_backbone(train.modality)
        backbone.eval()
        t1 = time.perf_counter()
        ctx = Context(
            backbone=backbone,
            train=train,
            val=val,
            classes=list(train.classes),
            features=lambda b, ex: self._extract_features(b, ex, record=record),
            seed=self.random_state,
            progress=self.progress,
            checkpoint_dir=None if self.checkpoint_dir is None else Path(self.checkpoint_dir),
            deadline=deadline(self.time_budget_s, t0),
            budget_s=self.time_budget_s,
            n_score=self.score_reserve,
        )
        result = run_strategy(
            ctx,
            self.strategy,
            extract=ExtractConfig(
                head=self.head,
                engine=self.engine,
                batch_size=self.batch_size,
                cache_dir=self.cache_dir,
            ),
            finetune=self.finetune,
            ladder=self.ladder,
            head_params=self.head_params,
            measure_forgetting=self.measure_forgetting,
        )
        chosen = result.chosen
        self.backbone_ = chosen.backbone
        self.head_ = chosen.head
        # the user's own label values and type (ints stay ints), in the order of the heads' outputs
        self.classes_ = (
            np.array(train.classes)
            if isinstance(X, Examples) or y is None
            else np.unique(np.asarray(y))
        )
        self.modality_: str = train.modality
        self.strategy_ = chosen.strategy
        self.unfrozen_ = chosen.unfreeze
        self.tuned_state_ = chosen.tuned_state
        self.val_metrics_ = chosen.val_metrics
        self.extraction_ = result.extraction  # the pristine backbone and its probe, beside
        self.finetune_detail_ = chosen.detail if chosen.unfreeze else None
        self.decisions_ = result.decisions(self.strategy)
        self.extraction_log_ = record
        self.n_train_, self.n_val_ = len(train), 0 if val is None else len(val)
        self.fit_seconds_ = {
            "load_backbone": t1 - t0,
            "features": sum(e["seconds"] for e in record),
            "total": time.perf_counter() - t0,
        }
        return self

    # ------------------------------------------------------------------------ predicting
    def predict_proba(self, X: Any, *, cache: bool | None = None) -> np.ndarray:
        self._check_fitted()
        ex = as_examples(X, classes=[str(c) for c in self.classes_])
        use_cache = cache if cache is not None else (self.cache and len(ex) > 256)
        F = self._extract_features(self.backbone_, ex, cache=use_cache)
        proba: np.ndarray = self.head_.predict_proba(F)
        return proba

    def predict(self, X: Any, **kw: Any) -> np.ndarray:
        proba = self.predict_proba(X, **kw)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        ex = as_examples(X, y, classes=[str(c) for c in self.classes_])
        pred = np.argmax(self.predict_proba(ex), axis=1)
        return float(np.mean(pred == ex.labels))

    # ------------------------------------------------------------------------- bundles
    def save(self, path: str | Path, *, self_contained: bool | None = None) -> Path:
        """Write the model bundle. ``self_contained=True`` also copies the backbone's
        weights and files into it, so it predicts with no weights package and no network
        (None: only a ``local-dir:`` backbone is copied)."""
        from .bundle import write_bundle

        self._check_fitted()
        return write_bundle(
            Path(path),
            backbone=self.backbone_,
            head_name=self.head,
            head=self.head_,
            classes=[str(c) for c in self.classes_],
            modality=self.modality_,
            strategy=getattr(self, "strategy_", "extract"),
            tuned_state=getattr(self, "tuned_state_", None),
            image_size=self.image_size,
            max_length=self.max_length,
            self_contained=self_contained,
        )

    @classmethod
    def load(
        cls, path: str | Path, *, trusted_paths: Sequence[str | Path] = ()
    ) -> TransferClassifier:
        """Rebuild a saved model bundle (``model/``) without the training data.

        ``trusted_paths``: folders outside the bundle its backbone may be read from (a bundle
        pointing anywhere else is refused)."""
        from .bundle import read_bundle

        b = read_bundle(Path(path), trusted_paths=trusted_paths)
        clf = cls(
            backbone=b.meta["backbone"]["name"],
            head=b.meta["head"]["name"],
            strategy=b.meta.get("strategy", "extract"),
            pretrained=b.meta["backbone"]["pretrained"],
            image_size=b.meta["backbone"].get("image_size"),
            max_length=b.meta["backbone"].get("max_length"),
        )
        clf.backbone_ = b.backbone
        clf.head_ = b.head
        clf.classes_ = np.array(b.meta["classes"])
        clf.modality_ = b.meta["modality"]
        clf.strategy_ = b.meta.get("strategy", "extract")
        clf.bundle_meta_ = b.meta
        return clf


def load_model(path: str | Path, *, trusted_paths: Sequence[str | Path] = ()) -> TransferClassifier:
    """Rebuild a saved model bundle (``model/``) without the training data."""
    return TransferClassifier.load(path, trusted_paths=trusted_paths)
