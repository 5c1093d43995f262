"""`TransferClassifier`: a scikit-learn-style estimator over a pretrained backbone.

    clf = TransferClassifier(backbone="torchvision:mobilenet_v2").fit(images, labels)
    clf.predict(new_images); clf.save("model/"); load_model("model/").predict_proba(...)

``X`` may be an :class:`~headstart.data.base.Examples`, a uint8 image array (N,H,W[,C]), a list
of image paths, or a list of texts; ``y`` holds labels of any hashable type.
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
from .data.base import Examples
from .errors import ConfigError, DataError, NotFittedError

log = logging.getLogger("headstart")

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


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
    """Feature extraction: a frozen pretrained backbone plus a trained head.

    Parameters
    ----------
    backbone: a registry name (``"torchvision:mobilenet_v2"``, ``"hf:..."``) or ``"auto"``
        (the default backbone for the data's modality).
    head: ``"logistic"`` (L2-regularised, strength chosen on validation data) or ``"mlp"``.
    pretrained: load real weights (False: random initialisation, for tests and baselines).
    engine: ``"auto"`` (ONNX Runtime on CPU when it matches PyTorch), ``"torch"`` or ``"onnx"``.
    cache: keep features in the on-disk cache so a second fit skips the backbone.
    """

    def __init__(
        self,
        backbone: str = "auto",
        head: str = "logistic",
        *,
        pretrained: bool = True,
        image_size: int | None = None,
        max_length: int | None = None,
        engine: str = "auto",
        batch_size: int | None = None,
        cache: bool = True,
        cache_dir: str | None = None,
        head_params: dict[str, Any] | None = None,
        random_state: int = 0,
        progress: bool = False,
    ) -> None:
        self.backbone = backbone
        self.head = head
        self.pretrained = pretrained
        self.image_size = image_size
        self.max_length = max_length
        self.engine = engine
        self.batch_size = batch_size
        self.cache = cache
        self.cache_dir = cache_dir
        self.head_params = head_params
        self.random_state = random_state
        self.progress = progress

    # ------------------------------------------------------------------ building blocks
    def _backbone_name(self, modality: str) -> str:
        from .backbones.registry import DEFAULT_BACKBONE

        if self.backbone == "auto":
            if modality not in DEFAULT_BACKBONE:
                raise ConfigError(f"no default backbone for {modality} data; pass backbone=...")
            return DEFAULT_BACKBONE[modality]
        return self.backbone

    def _load_backbone(self, modality: str) -> Backbone:
        from .backbones.registry import load_backbone

        return load_backbone(
            self._backbone_name(modality),
            pretrained=self.pretrained,
            image_size=self.image_size,
            max_length=self.max_length,
        )

    def features(self, examples: Examples, *, cache: bool | None = None) -> np.ndarray:
        """Backbone features of ``examples`` (through the cache unless ``cache=False``)."""
        from .extract import extract_features, features_in_memory

        self._check_fitted(backbone_only=True)
        use_cache = self.cache if cache is None else cache
        if use_cache:
            fs = extract_features(
                self.backbone_,
                examples,
                batch_size=self.batch_size,
                engine=self.engine,
                cache_dir=self.cache_dir,
                progress=self.progress,
            )
            self.last_feature_set_ = fs
            return fs.load()
        return features_in_memory(self.backbone_, examples, batch_size=self.batch_size or 32)

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
        from .heads import make_head

        train = as_examples(X, y)
        if train.labels.min(initial=0) < 0 or len(train) == 0:
            raise DataError("fit needs labels: pass y, or Examples with labels")
        if len(train.classes) < 2:
            raise DataError(
                f"the training data has only one class ({train.classes}); a classifier needs at "
                "least two. Add examples of the other classes."
            )
        val = as_examples(X_val, y_val, classes=train.classes) if X_val is not None else None
        t0 = time.perf_counter()
        self.backbone_ = self._load_backbone(train.modality)
        self.backbone_.eval()
        t1 = time.perf_counter()
        F = self.features(train)
        Fv = self.features(val) if val is not None else None
        t2 = time.perf_counter()
        head = make_head(self.head, random_state=self.random_state, **(self.head_params or {}))
        if Fv is not None and val is not None:
            head.fit(F, train.labels, X_val=Fv, y_val=val.labels)
        else:
            head.fit(F, train.labels)
        t3 = time.perf_counter()
        self.head_ = head
        self.classes_ = np.array(train.classes)
        self.modality_: str = train.modality
        self.fit_seconds_ = {"load_backbone": t1 - t0, "features": t2 - t1, "head": t3 - t2}
        return self

    def fit_features(
        self,
        F: np.ndarray,
        y: np.ndarray,
        classes: Sequence[str],
        *,
        F_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        backbone: Backbone | None = None,
        modality: str | None = None,
    ) -> TransferClassifier:
        """Train only the head on precomputed features (the run pipeline uses this)."""
        from .heads import make_head

        if backbone is not None:
            self.backbone_ = backbone
        head = make_head(self.head, random_state=self.random_state, **(self.head_params or {}))
        if F_val is not None:
            head.fit(F, y, X_val=F_val, y_val=y_val)
        else:
            head.fit(F, y)
        self.head_ = head
        self.classes_ = np.array(list(classes))
        self.modality_ = modality or (backbone.modality if backbone is not None else "image")
        return self

    # ------------------------------------------------------------------------ predicting
    def predict_proba(self, X: Any, *, cache: bool | None = None) -> np.ndarray:
        self._check_fitted()
        ex = as_examples(X, classes=list(self.classes_))
        F = self.features(ex, cache=cache if cache is not None else (self.cache and len(ex) > 256))
        return self.head_.predict_proba(F)

    def predict(self, X: Any, **kw: Any) -> np.ndarray:
        proba = self.predict_proba(X, **kw)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        ex = as_examples(X, y, classes=list(self.classes_))
        pred = np.argmax(self.predict_proba(ex), axis=1)
        return float(np.mean(pred == ex.labels))

    # ------------------------------------------------------------------------- bundles
    def save(self, path: str | Path) -> Path:
        from .bundle import save_bundle

        self._check_fitted()
        return save_bundle(self, Path(path))


def load_model(path: str | Path) -> TransferClassifier:
    """Rebuild a saved model bundle (``model/``) without the training data."""
    from .bundle import load_bundle

    return load_bundle(Path(path))
