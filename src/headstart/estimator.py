"""`TransferClassifier`: the scikit-learn estimator that is headstart's engine.

    clf = TransferClassifier(backbone="torchvision:mobilenet_v2").fit(images, labels)
    clf.predict(new_images); clf.save("model/"); load_model("model/").predict_proba(...)
    TransferClassifier(strategy="finetune", finetune=FinetuneConfig(epochs=3)).fit(X, y)
    GridSearchCV(TransferClassifier(strategy="finetune"), {"finetune__lr_ratio": [10, 30]})
    TransferClassifier(backbone="precomputed").fit(features, labels)   # X already features

``X`` may be an :class:`~headstart.data.base.Examples`, an image array (uint8, or float with
``value_range`` stated or inferred; (N,H,W), (N,H,W,C) or (N,C,H,W)), a list of PIL images,
image or audio file paths, texts, a pandas Series or one-column DataFrame, or a Hugging Face
``datasets.Dataset`` (rules: :mod:`headstart.data.inmemory`). A 2-D numeric array is read as
features only with ``backbone="precomputed"`` and refused otherwise (it could be flattened
images as well as features). ``y`` holds labels of any one type; ``classes_`` keeps it (integer
labels predict integers), and saved models record it. ``fit`` runs a strategy
(:func:`headstart.strategies.run_strategy`): ``extract``, ``finetune`` or ``auto`` (the
ladder); ``headstart fit`` and ``headstart curve`` run the same code.
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
from .backbones.precomputed import PRECOMPUTED, PrecomputedFeatures
from .config import STRATEGIES, ExtractConfig, FinetuneConfig, LadderConfig
from .data.base import Examples
from .data.inmemory import read_inputs, unwrap_table
from .errors import ConfigError, DataError, NotFittedError
from .metrics import classification_metrics

log = logging.getLogger("headstart")

#: Nested config parameters (``finetune__epochs``) and the class a ``None`` default stands for.
_SECTIONS: dict[str, type] = {"finetune": FinetuneConfig, "ladder": LadderConfig}
#: What ``fit`` says when y is missing (the first words are scikit-learn's, which its checks
#: and users' except clauses match).
_NO_Y = (
    "TransferClassifier requires y to be passed, but the target y is None: pass the labels, "
    "or Examples with labels"
)


def label_array(y: Any) -> np.ndarray:
    """``y`` as a 1-D array of one label type, checked to be class labels (not continuous)."""
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import column_or_1d

    arr = np.asarray(y)
    if isinstance(y, str) or arr.ndim == 0:
        raise DataError(f"y must be a sequence of labels, one per example, not {y!r:.60}")
    if arr.dtype == object or isinstance(y, list | tuple):  # numpy would make [0, "a"] strings
        values = list(y) if isinstance(y, list | tuple) else list(arr.ravel())
        kinds = {"number" if isinstance(v, int | float | np.number) else "text" for v in values}
        if len(kinds) > 1:
            raise DataError(
                "y mixes label types (numbers and text, e.g. 0 and 'pos'): each "
                "class must have one spelling. Convert the labels to one type first."
            )
    try:
        arr = column_or_1d(arr, warn=True)  # a (n, 1) column warns, as scikit-learn's do
    except ValueError as exc:
        raise DataError(f"y must be one label per example: {exc}") from exc
    check_classification_targets(arr)  # ValueError "Unknown label type: continuous ..."
    return arr


def encode_labels(
    y: Any,
    n: int,
    classes: Sequence[Any] | np.ndarray | None = None,
    *,
    unknown_ok: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(class indices, the classes in their own type) for labels ``y`` of ``n`` examples.

    Without ``classes`` they are ``y``'s sorted unique values; with them (a fitted model's),
    each label must be one of them, compared by value, or by name for string classes.
    ``unknown_ok`` (scoring): a label outside ``classes`` gets index -2 (never predicted, so
    scored wrong), unless no label at all is known, which is a mistake of label type.
    """
    if y is None:
        return np.full(n, -1, dtype=np.int64), np.asarray(classes if classes is not None else [])
    arr = label_array(y)
    if len(arr) != n:
        raise DataError(f"X has {n} examples but y has {len(arr)} labels")
    if classes is None:
        try:
            uniq, idx = np.unique(arr, return_inverse=True)
        except TypeError as exc:
            raise DataError(f"the labels in y cannot be sorted together: {exc}") from exc
        return idx.astype(np.int64), uniq
    cls = np.asarray(classes)
    index = {c: i for i, c in enumerate(cls.tolist())}
    names = {str(c): i for i, c in enumerate(cls.tolist())}
    out = np.empty(n, dtype=np.int64)
    for j, v in enumerate(arr.tolist()):
        i = index.get(v, names.get(str(v)) if cls.dtype.kind in "USO" else None)
        if i is None and not unknown_ok:
            raise DataError(f"label {v!r} is not one of the classes {cls.tolist()}")
        out[j] = -2 if i is None else i
    if unknown_ok and n and (out == -2).all():
        raise DataError(
            f"none of the labels in y ({arr[:3].tolist()}, ...; {arr.dtype}) is one of the "
            f"model's classes {cls.tolist()[:10]} ({cls.dtype}): pass labels of the type fit got"
        )
    return out, cls


def as_examples(
    X: Any,
    y: Any = None,
    classes: Sequence[Any] | np.ndarray | None = None,
    *,
    value_range: tuple[float, float] | None = None,
) -> Examples:
    """Wrap user inputs as :class:`Examples`; labels mapped to indices of ``classes``."""
    return _examples(X, y, classes, value_range=value_range)[0]


def _examples(
    X: Any,
    y: Any,
    classes: Sequence[Any] | np.ndarray | None,
    *,
    value_range: tuple[float, float] | None = None,
    unknown_ok: bool = False,
) -> tuple[Examples, np.ndarray]:
    """:func:`as_examples` plus the classes in the labels' own type."""
    if isinstance(X, Examples):
        return X, np.asarray(X.classes)
    X, y = unwrap_table(X, y)
    modality, inputs = read_inputs(X, value_range=value_range)
    labels, cls = encode_labels(y, len(inputs), classes, unknown_ok=unknown_ok)
    names = [str(c) for c in cls.tolist()]
    ex = Examples(modality=modality, inputs=inputs, labels=labels, classes=names, name="input")
    return ex, cls


def restore_labels(names: Sequence[str], dtype: Any) -> np.ndarray:
    """Class names as a saved model stores them (strings) back in the labels' own type
    (``dtype``: the bundle's ``label_dtype``, e.g. ``"<i8"``; absent in older bundles)."""
    if not dtype:
        return np.array(names)
    try:
        dt = np.dtype(str(dtype))
        if dt.kind == "b" and set(names) <= {"True", "False"}:
            return np.array([n == "True" for n in names])
        if dt.kind in "iuf":
            out = np.array(names).astype(dt)
            if [str(v) for v in out] == list(names):  # nothing lost or reinterpreted
                return out
        elif dt.kind not in "b":
            return np.array(names)
    except (TypeError, ValueError, OverflowError):
        pass
    from .errors import BundleError

    raise BundleError(
        f"headstart.json: label_dtype {dtype!r} does not fit the class names {list(names)[:5]}; "
        "the bundle was edited or damaged. Save the model again, or delete label_dtype to "
        "read the classes as strings"
    )


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """A pretrained backbone plus a trained head, fitted by a strategy.

    Parameters
    ----------
    backbone: a registry name (``"torchvision:mobilenet_v2"``, ``"hf:..."``), a loaded
        :class:`~headstart.backbones.base.Backbone`, ``"auto"`` (the modality's default), or
        ``"precomputed"``: X is already a 2-D numeric feature array (N, D), validated as
        scikit-learn validates it; only ``strategy="extract"``; not savable as a bundle.
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
    value_range: ``(low, high)`` of the pixel values of a non-uint8 image array X, e.g.
        ``(0, 1)`` or ``(-1, 1)`` (None: inferred from the values and logged; uint8 is 0..255).
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
        value_range: tuple[float, float] | None = None,
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
        self.value_range = value_range

    def set_params(self, **params: Any) -> TransferClassifier:
        # A nested parameter of a section left at None (its defaults) makes the section first.
        for key in params:
            section, sep, _ = key.partition("__")
            if sep and section in _SECTIONS and getattr(self, section, None) is None:
                setattr(self, section, _SECTIONS[section]())
        super().set_params(**params)
        return self

    # ------------------------------------------------------------------ building blocks
    def _precomputed(self) -> bool:
        return isinstance(self.backbone, str) and self.backbone == PRECOMPUTED

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
        ex, _ = self._read(examples)
        if ex.modality == "features":
            return np.asarray(ex.inputs)
        return self._extract_features(backbone or self.backbone_, ex, cache=cache)

    def _read(
        self, X: Any, y: Any = None, classes: Any = None, *, reset: bool = False, **kw: Any
    ) -> tuple[Examples, np.ndarray]:
        """Examples for ``X`` (and the classes in the labels' own type). With
        ``backbone="precomputed"`` X is validated as scikit-learn validates a feature matrix
        (``reset``: in ``fit``, which records ``n_features_in_``)."""
        if not self._precomputed() or isinstance(X, Examples):
            return _examples(X, y, classes, value_range=self.value_range, **kw)
        from sklearn.utils.validation import validate_data

        F = validate_data(self, X, reset=reset, dtype=(np.float64, np.float32))
        labels, cls = encode_labels(y, len(F), classes, **kw)
        names = [str(c) for c in cls.tolist()]
        return Examples("features", F, labels, names, name="input"), cls

    def _check_modality(self, ex: Examples, takes: str, name: str) -> None:
        if ex.modality != takes:
            raise DataError(
                f"X was read as {ex.modality} ({type(ex.inputs).__name__} of {len(ex)}), but "
                f"the backbone {name!r} takes {takes}. Pass {takes} inputs, or choose a "
                f"{ex.modality} backbone (backbone='auto' picks the default one)"
            )

    def _check_fitted(self, backbone_only: bool = False) -> None:
        if not hasattr(self, "backbone_") or (not backbone_only and not hasattr(self, "head_")):
            raise NotFittedError(
                "This TransferClassifier is not fitted yet: call fit(X, y) first, or load a "
                "saved model with headstart.load_model(path)."
            )

    # --------------------------------------------------------------------------- fitting
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        X_val: Any = None,
        y_val: Any = None,
        sample_weight: Any = None,
    ) -> TransferClassifier:
        """Fit with ``self.strategy``; validation from ``X_val`` or carved from ``X``.

        ``sample_weight`` multiplies each training example's loss in the head (``extract``
        only: fine-tuning trains on unweighted batches, so other strategies refuse it)."""
        from .data.split import stratified_split
        from .strategies import Context, run_strategy
        from .strategies.auto import deadline

        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"The 'strategy' parameter of TransferClassifier must be one of {STRATEGIES}. "
                f"Got {self.strategy!r} instead."
            )
        precomputed = self._precomputed()
        if self.strategy != "extract" and (precomputed or sample_weight is not None):
            raise ConfigError(
                f"strategy={self.strategy!r} fine-tunes a backbone on unweighted batches: it "
                f"cannot take {'precomputed features' if precomputed else 'sample_weight'}. "
                "Use strategy='extract'."
            )
        t0 = time.perf_counter()
        train, classes = self._read(X, y, reset=True)
        if train.labels.min(initial=0) < 0 or len(train) == 0:
            raise DataError(_NO_Y)
        if len(train.classes) < 2:
            raise DataError(
                f"the training data has only one class ({train.classes}); a classifier needs at "
                "least two. Add examples of the other classes."
            )
        weights = None
        if sample_weight is not None:
            from .heads.base import check_sample_weights

            weights = check_sample_weights("TransferClassifier", sample_weight, len(train))
        val = self._read(X_val, y_val, classes)[0] if X_val is not None else None
        if val is None and self.strategy != "extract":
            rest, part = stratified_split(
                train.labels, self.val_fraction, self.random_state + 1, keep_per_class=1
            )
            train, val = train.subset(rest, name="train"), train.subset(part, name="val")
        record: list[dict[str, Any]] = []
        backbone: Backbone
        if precomputed:
            backbone = PrecomputedFeatures(np.shape(train.inputs)[1])
        else:
            backbone = self._load_backbone(train.modality)
            self._check_modality(train, backbone.modality, backbone.name)
        backbone.eval()
        t1 = time.perf_counter()

        def features(b: Backbone, ex: Examples) -> np.ndarray:
            if precomputed:
                return np.asarray(ex.inputs)
            return self._extract_features(b, ex, record=record)

        ctx = Context(
            backbone=backbone,
            train=train,
            val=val,
            classes=list(train.classes),
            features=features,
            seed=self.random_state,
            progress=self.progress,
            checkpoint_dir=None if self.checkpoint_dir is None else Path(self.checkpoint_dir),
            deadline=deadline(self.time_budget_s, t0),
            budget_s=self.time_budget_s,
            n_score=self.score_reserve,
            sample_weight=weights,
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
        self.classes_ = classes
        self.modality_: str = train.modality
        self.strategy_ = chosen.strategy
        self.unfrozen_ = chosen.unfreeze
        self.tuned_state_ = chosen.tuned_state
        self.val_metrics_ = chosen.val_metrics
        self.contest_ = c = result.contest  # auto: the baseline / stack against transfer
        self.predictor_ = "transfer" if c is None else c.chosen
        if c is not None and c.chosen != "transfer" and val is not None and c.val_proba is not None:
            self.val_metrics_ = classification_metrics(val.labels, c.val_proba, train.classes)
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
        """Class probabilities (n, n_classes), columns in the order of ``classes_``."""
        contest = getattr(self, "contest_", None)
        if contest is None or contest.chosen == "transfer":
            return self.transfer_proba(X, cache=cache)
        ex = X if isinstance(X, Examples) else self._read(X)[0]
        self._check_modality(ex, self.modality_, self.backbone_.name)
        transfer = self.transfer_proba(ex, cache=cache) if contest.needs_transfer else None
        return np.asarray(contest.predict_proba(transfer, ex))

    def transfer_proba(self, X: Any, *, cache: bool | None = None) -> np.ndarray:
        """The transfer model's own probabilities (backbone + head), whichever predictor
        ``auto`` kept (``predictor_``: transfer, the baseline or their stack)."""
        self._check_fitted()
        ex = X if isinstance(X, Examples) else self._read(X)[0]
        if ex.modality == "features":
            F = np.asarray(ex.inputs)
        else:
            self._check_modality(ex, self.modality_, self.backbone_.name)
            use_cache = cache if cache is not None else (self.cache and len(ex) > 256)
            F = self._extract_features(self.backbone_, ex, cache=use_cache)
        proba: np.ndarray = self.head_.predict_proba(F)
        return proba

    def predict(self, X: Any, **kw: Any) -> np.ndarray:
        """The most probable class of each input, in the labels' own type (``classes_``)."""
        proba = self.predict_proba(X, **kw)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy on (X, y), weighted by ``sample_weight``; y may come with X (Examples,
        a ``datasets.Dataset`` with a label column). A label the model never saw counts wrong."""
        self._check_fitted()
        ex, _ = self._read(X, y, self.classes_, unknown_ok=True)
        if len(ex) == 0 or ex.labels.min() == -1:
            raise DataError(
                "score needs labels: pass y (one label per example), or Examples with labels"
            )
        weights = None
        if sample_weight is not None:
            from .heads.base import check_sample_weights

            weights = check_sample_weights("TransferClassifier.score", sample_weight, len(ex))
        pred = np.argmax(self.predict_proba(ex), axis=1)
        return float(np.average(pred == ex.labels, weights=weights))

    # ------------------------------------------------------------------------- bundles
    def save(self, path: str | Path, *, self_contained: bool | None = None) -> Path:
        """Write the model bundle. ``self_contained=True`` also copies the backbone's
        weights and files into it, so it predicts with no weights package and no network
        (None: only a ``local-dir:`` backbone is copied)."""
        from .bundle import write_bundle

        self._check_fitted()
        contest = getattr(self, "contest_", None)
        if self.modality_ == "features":
            raise ConfigError(
                "a model fitted on precomputed features (backbone='precomputed') has no "
                "backbone to bundle: save the features' backbone with the model by fitting "
                "TransferClassifier(backbone=<its name>) on the raw inputs instead"
            )
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
            # classes are stored as names; their dtype brings integer (bool, float) labels back
            extra={"label_dtype": self.classes_.dtype.str},
            contest=contest if contest is not None and contest.chosen != "transfer" else None,
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
        clf.classes_ = restore_labels(b.meta["classes"], b.meta.get("label_dtype"))
        clf.modality_ = b.meta["modality"]
        clf.strategy_ = b.meta.get("strategy", "extract")
        clf.bundle_meta_ = b.meta
        clf.contest_ = b.contest
        clf.predictor_ = "transfer" if b.contest is None else b.contest.chosen
        return clf


def load_model(path: str | Path, *, trusted_paths: Sequence[str | Path] = ()) -> TransferClassifier:
    """Rebuild a saved model bundle (``model/``) without the training data."""
    return TransferClassifier.load(path, trusted_paths=trusted_paths)
