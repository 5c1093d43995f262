"""A cheap non-transfer baseline, trained on the same split as every transfer result.

A transfer-learning result means little without the number a model that knows nothing
pretrained gets on the same data. :func:`fit_baseline` picks one by modality:

* text: TF-IDF (hashed word 1-2 grams, sublinear tf, min_df=2, at most 200,000 terms) + logistic
  regression (``"tfidf+logreg"``);
* images: the pixels of a small greyscale thumbnail (28 x 28, or the native size when the
  images are smaller), scaled to [0, 1] and standardised, + logistic regression
  (``"pixels+logreg"``);
* audio: log-mel statistics (40 mel bands, 25 ms windows every 10 ms at 16 kHz; per band the
  mean and standard deviation over time of the log-mel energy and of its frame-to-frame
  difference, 160 numbers per clip), standardised, + logistic regression
  (``"logmel-stats+logreg"``).

In all, the inverse L2 strength C is chosen on the validation split by class-weighted
validation log-loss (ties: higher accuracy, then smaller C), classes are weighted 'balanced'
like the default heads, and (with ``refit=True``, the default, as for
:class:`~headstart.heads.LogisticHead`) the final model is refitted on train + val.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from PIL import Image, UnidentifiedImageError
from threadpoolctl import threadpool_limits

from headstart.data.base import Examples
from headstart.errors import ConfigError, DataError
from headstart.heads import LogisticHead
from headstart.heads.solver import (
    SoftmaxObjective,
    choose_C,
    class_weight_vector,
    minimize_lbfgs,
    walk_C_path,
)

__all__ = [
    "AUDIO_MELS",
    "IMAGE_SIDE",
    "TEXT_CS",
    "Baseline",
    "fit_baseline",
    "log_mel_statistics",
]

#: Grid of C for the TF-IDF model (rows are L2-normalised, so useful C are around 1-30).
TEXT_CS: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: Side of the square greyscale thumbnail the pixel baseline reads.
IMAGE_SIDE = 28
_MAX_TERMS = 200_000
_MAX_ITER = 500
_TOL = 1e-4
_PATH_PATIENCE = 2


class Baseline:
    """A fitted baseline. Use :func:`fit_baseline` to make one.

    Attributes
    ----------
    name: ``"tfidf+logreg"``, ``"pixels+logreg"`` or ``"logmel-stats+logreg"``.
    modality, classes: those of the training split; probability columns follow `classes`.
    C: the chosen inverse L2 strength.
    val_scores: ``{C: {"log_loss", "accuracy"}}`` of models trained on train only.
    val_accuracy: validation accuracy at the chosen C (trained on train only, so honest even
        when the final model was refitted on train + val).
    n_features: input dimension of the logistic regression.
    refit: whether the final model saw the validation split too.
    val_proba: probabilities on the validation split (columns in `classes` order) of the model
        trained on train only, at the chosen C: scored before any refit, so an honest
        validation score even when the final model has seen the validation split.
    fit_seconds: wall-clock time of :func:`fit_baseline`.
    """

    def __init__(
        self,
        *,
        name: str,
        modality: str,
        classes: list[str],
        featurizer: _Featurizer,
        model: Any,
        C: float,
        val_scores: dict[float, dict[str, float]],
        refit: bool,
    ) -> None:
        self.name = name
        self.modality = modality
        self.classes = list(classes)
        self._featurizer = featurizer
        self._model = model
        self.C = float(C)
        self.val_scores = val_scores
        self.val_accuracy = float(val_scores[self.C]["accuracy"]) if val_scores else float("nan")
        self.n_features = featurizer.n_features
        self.refit = refit
        self.fit_seconds = float("nan")
        self.val_proba: np.ndarray | None = None

    def _check(self, examples: Examples) -> None:
        if examples.modality != self.modality:
            raise DataError(
                f"This {self.name} baseline was trained on {self.modality} data but got "
                f"{examples.modality} data ({examples.name or 'unnamed split'})."
            )
        if list(examples.classes) != self.classes:
            raise DataError(
                f"Class names of {examples.name or 'the split'} ({examples.classes[:5]}...) "
                f"differ from the training split's ({self.classes[:5]}...). Score splits of "
                "the same data set, whose label indices mean the same classes."
            )

    def predict_proba(self, examples: Examples) -> np.ndarray:
        """Probabilities, shape (len(examples), len(classes)), columns in `classes` order.

        A class that had no training example gets probability 0.
        """
        self._check(examples)
        return _all_columns(
            self._model, self._model.predict_proba(self._featurizer.transform(examples)),
            len(self.classes),
        )  # fmt: skip

    def predict(self, examples: Examples) -> np.ndarray:
        """Predicted class indices (into `classes`), int64."""
        return self.predict_proba(examples).argmax(axis=1).astype(np.int64)

    def describe(self) -> str:
        """One line for reports: what the baseline is and how it was tuned."""
        trained = "train + val" if self.refit else "train"
        return (
            f"{self.name}: {self._featurizer.describe()} + logistic regression "
            f"(C={self.C:g} chosen on val log-loss from {len(self.val_scores)} values, "
            f"class_weight='balanced', trained on {trained}; val accuracy "
            f"{self.val_accuracy:.4f} before refit)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary for run records."""
        return {
            "name": self.name,
            "description": self.describe(),
            "C": self.C,
            "val_accuracy": self.val_accuracy,
            "val_scores": [{"C": C, **s} for C, s in self.val_scores.items()],
            "n_features": int(self.n_features),
            "refit": self.refit,
            "fit_seconds": self.fit_seconds,
        }

    def __repr__(self) -> str:
        return f"Baseline({self.describe()})"


# --------------------------------------------------------------------------------------------
# Featurizers
# --------------------------------------------------------------------------------------------


def _all_columns(model: Any, proba: np.ndarray, n_classes: int) -> np.ndarray:
    """`model`'s probabilities spread over every class (0 for a class it never saw)."""
    out = np.zeros((len(proba), n_classes))
    out[:, np.asarray(model.classes_, dtype=np.int64)] = proba
    return out


class _Featurizer:
    n_features: int

    def transform(self, examples: Examples) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class _TfidfFeaturizer(_Featurizer):
    """TF-IDF over hashed word 1-2 grams, restricted to the terms kept by min_df/max_features.

    Hashing (2**22 buckets) instead of a vocabulary dict makes the pass over the texts about
    five times faster (measured on 10,000 reviews: no Python dict of millions of n-grams to
    build and sort); then, as
    TfidfVectorizer would, only n-grams in at least `min_df` training documents are kept, at
    most the 200,000 most frequent.
    """

    def __init__(self, train_texts: Sequence[str]) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

        self.hasher = HashingVectorizer(
            ngram_range=(1, 2),
            n_features=2**22,
            alternate_sign=False,
            norm=None,
            dtype=np.float32,
        )
        counts = self.hasher.transform(train_texts).tocsr()
        if counts.nnz == 0:
            raise DataError(
                "The training texts contain no words (tokens of 2+ letters or digits) to build "
                "TF-IDF features from. Check that the text column holds the documents."
            )
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        self.min_df = 2 if (df >= 2).any() else 1  # tiny data sets may share no term
        keep = np.flatnonzero(df >= self.min_df)
        if len(keep) > _MAX_TERMS:
            total = np.asarray(counts.sum(axis=0)).ravel()
            keep = np.sort(keep[np.argsort(-total[keep], kind="stable")[:_MAX_TERMS]])
        self.keep = keep
        kept = counts[:, keep]
        self.tfidf = TfidfTransformer(sublinear_tf=True).fit(kept)
        self.train_matrix: sp.csr_matrix | None = self.tfidf.transform(kept).astype(np.float32)
        self.n_features = len(keep)

    def transform(self, examples: Examples) -> sp.csr_matrix:
        counts = self.hasher.transform([str(t) for t in examples.inputs]).tocsr()
        return self.tfidf.transform(counts[:, self.keep]).astype(np.float32)

    def describe(self) -> str:
        return (
            f"TF-IDF (hashed word 1-2 grams, sublinear tf, min_df={self.min_df}, "
            f"{self.n_features:,} terms)"
        )


def _grey_array(inputs: np.ndarray) -> np.ndarray:
    """(N, H, W[, C]) uint8 -> (N, H, W) float32 luminance in [0, 255] (ITU-R 601 weights)."""
    x = np.asarray(inputs)
    if x.ndim == 3:
        return x.astype(np.float32)
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4):
        if x.shape[-1] == 1:
            return x[..., 0].astype(np.float32)
        rgb = x[..., :3].astype(np.float32)
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    raise DataError(
        f"Image arrays must be shaped (N, H, W) or (N, H, W, C) with C in 1, 3, 4; got "
        f"{x.shape}. Store images channels-last."
    )


class _PixelFeaturizer(_Featurizer):
    def __init__(self, train: Examples, side: int) -> None:
        if isinstance(train.inputs, np.ndarray):
            h, w = train.inputs.shape[1:3]
            self.size = (h, w) if h <= side and w <= side else (side, side)
        else:
            self.size = (side, side)
        self.n_features = self.size[0] * self.size[1]

    def transform(self, examples: Examples) -> np.ndarray:
        h, w = self.size
        if isinstance(examples.inputs, np.ndarray):
            out = np.empty((len(examples), h * w), dtype=np.float32)
            for start in range(0, len(examples), 4096):
                grey = _grey_array(examples.inputs[start : start + 4096])
                out[start : start + len(grey)] = self._resize(grey).reshape(len(grey), -1)
            return out / 255.0
        out = np.empty((len(examples), h * w), dtype=np.float32)
        for i, path in enumerate(examples.inputs):
            out[i] = self._load(path, examples.source_of(i)).ravel()
        return out / 255.0

    def _resize(self, grey: np.ndarray) -> np.ndarray:
        if grey.shape[1:] == self.size:
            return grey
        import torch
        import torch.nn.functional as F

        t = torch.from_numpy(np.ascontiguousarray(grey)).unsqueeze(1)
        small = F.interpolate(
            t, size=self.size, mode="bilinear", antialias=True, align_corners=False
        )
        return small.squeeze(1).numpy()

    def _load(self, path: str | os.PathLike[str], source: str) -> np.ndarray:
        where = str(path) if source == str(path) else f"{path} ({source})"
        try:
            with Image.open(path) as im:
                im.draft("L", (self.size[1] * 2, self.size[0] * 2))  # fast JPEG decode
                small = im.convert("L").resize(
                    (self.size[1], self.size[0]), Image.Resampling.BILINEAR
                )
                return np.asarray(small, dtype=np.float32)
        except FileNotFoundError as e:
            raise DataError(
                f"Image file {where} does not exist. Fix the path or remove the entry."
            ) from e
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
            raise DataError(
                f"Cannot read image {where} for the pixel baseline: {e or type(e).__name__}. "
                "The file is corrupt or not an image; remove or replace it."
            ) from e

    def describe(self) -> str:
        h, w = self.size
        return f"greyscale {h}x{w} pixels scaled to [0, 1], standardised"


#: Mel bands of the audio baseline's log-mel spectrogram.
AUDIO_MELS = 40
_AUDIO_SR, _AUDIO_FFT, _AUDIO_HOP = 16000, 400, 160  # 25 ms windows every 10 ms
_AUDIO_RANGE_DB = 80.0  # log-mel floor: the clip's loudest band energy minus 80 dB


def _mel_filters(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters on the HTK mel scale from 0 Hz to sr/2, shape (n_mels, n_fft//2+1)."""
    top = 2595.0 * np.log10(1.0 + (sr / 2) / 700.0)
    hz = 700.0 * (10.0 ** (np.linspace(0.0, top, n_mels + 2) / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    rising = (freqs[None, :] - hz[:-2, None]) / (hz[1:-1, None] - hz[:-2, None])
    falling = (hz[2:, None] - freqs[None, :]) / (hz[2:, None] - hz[1:-1, None])
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel_statistics(wave: np.ndarray, n_mels: int = AUDIO_MELS) -> np.ndarray:
    """Summary of a 16 kHz mono clip: per mel band, the mean and standard deviation over time
    of the log-mel energy (in tens of dB) and of its frame-to-frame difference.

    Returns float32 of length ``4 * n_mels``: [mean, std, delta mean, delta std], each per band.
    A clip shorter than one 25 ms window is padded with silence to one window.
    """
    from scipy.signal import get_window

    x = np.asarray(wave, dtype=np.float64)
    if len(x) < _AUDIO_FFT:
        x = np.pad(x, (0, _AUDIO_FFT - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, _AUDIO_FFT)[::_AUDIO_HOP]
    power = np.abs(np.fft.rfft(frames * get_window("hann", _AUDIO_FFT), axis=1)) ** 2
    mel = power @ _mel_filters(_AUDIO_SR, _AUDIO_FFT, n_mels).T  # (frames, n_mels)
    log_mel = np.log10(np.maximum(mel, 1e-10))
    log_mel = np.maximum(log_mel, log_mel.max() - _AUDIO_RANGE_DB / 10)
    delta = np.diff(log_mel, axis=0) if len(log_mel) > 1 else np.zeros_like(log_mel)
    stats = [log_mel.mean(0), log_mel.std(0), delta.mean(0), delta.std(0)]
    return np.concatenate(stats).astype(np.float32)


class _LogMelStatsFeaturizer(_Featurizer):
    """:func:`log_mel_statistics` of each clip, read by :func:`headstart.data.audio.read_audio`
    (mono, 16 kHz, at most its first 30 s). Each file is decoded once per featurizer."""

    def __init__(self, n_mels: int = AUDIO_MELS) -> None:
        self.n_mels = n_mels
        self.n_features = 4 * n_mels
        self._done: dict[str, np.ndarray] = {}

    def transform(self, examples: Examples) -> np.ndarray:
        from headstart.data.audio import read_audio

        out = np.empty((len(examples), self.n_features), dtype=np.float32)
        for i, path in enumerate(examples.inputs):
            key = os.fspath(path)
            if key not in self._done:
                wave = read_audio(key, _AUDIO_SR, source=examples.source_of(i))
                self._done[key] = log_mel_statistics(wave, self.n_mels)
            out[i] = self._done[key]
        return out

    def describe(self) -> str:
        return (
            f"log-mel statistics ({self.n_mels} mel bands; mean and std over time of the "
            "log energy and of its frame-to-frame difference), standardised"
        )


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------


def _labelled(split: Examples, what: str) -> Examples:
    keep = np.flatnonzero(split.labels >= 0)
    if len(keep) == 0:
        raise DataError(f"The {what} split ({split.name or 'unnamed'}) has no labelled examples.")
    return split if len(keep) == len(split) else split.subset(keep)


class _LinearSoftmax:
    """softmax(X @ coef.T + intercept) over the class indices in `classes_` (dense or sparse X)."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray) -> None:
        self.coef_, self.intercept_, self.classes_ = coef, intercept, classes

    def predict_proba(self, X: Any) -> np.ndarray:
        z = np.asarray(X @ self.coef_.T) + self.intercept_
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        return z / z.sum(axis=1, keepdims=True)


def _fit_sparse_logreg(
    X_tr: sp.csr_matrix, y_tr: np.ndarray, X_va: sp.csr_matrix, y_va: np.ndarray, refit: bool
) -> tuple[_LinearSoftmax, float, dict[float, dict[str, float]], np.ndarray]:
    """Multinomial logistic regression on sparse features, C chosen on val (as LogisticHead).

    Uses the head's solver: the C grid is walked from strong to weak regularisation with warm
    starts, C is chosen by balanced validation log-loss, then (refit) the model is refitted on
    train + val from the chosen solution.
    """
    present = np.unique(y_tr)
    k, d = len(present), X_tr.shape[1]
    yi_tr, yi_va = np.searchsorted(present, y_tr), np.searchsorted(present, y_va)

    def objective(X: sp.csr_matrix, y: np.ndarray) -> SoftmaxObjective:
        return SoftmaxObjective(X, y, k, class_weight_vector(y, k, "balanced", present), np.float32)

    # Sparse products are single-threaded; multi-threaded BLAS would only add contention to
    # the solver's vector updates.
    with threadpool_limits(limits=1, user_api="blas"):
        thetas, path, _ = walk_C_path(
            objective(X_tr, yi_tr),
            X_va,
            yi_va,
            class_weight_vector(yi_va, k, "balanced", present)[yi_va],
            TEXT_CS,
            max_iter=_MAX_ITER,
            tol=_TOL,
            patience=_PATH_PATIENCE,
        )
        C = choose_C(path)
        theta = thetas[C]
        before = _LinearSoftmax(theta[: k * d].reshape(k, d), theta[k * d :], present)
        val_proba = before.predict_proba(X_va)
        if refit:
            obj = objective(sp.vstack([X_tr, X_va], format="csr"), np.concatenate([yi_tr, yi_va]))
            obj.set_C(C)
            theta = minimize_lbfgs(obj, theta, _MAX_ITER, _TOL)[0]
    scores = {c: {"log_loss": s["log_loss"], "accuracy": s["accuracy"]} for c, s in path.items()}
    model = _LinearSoftmax(theta[: k * d].reshape(k, d), theta[k * d :], present)
    return model, C, scores, val_proba


def fit_baseline(
    train: Examples, val: Examples, *, refit: bool = True, image_side: int = IMAGE_SIDE
) -> Baseline:
    """Fit the cheap baseline for `train`'s modality, choosing C on `val`.

    Unlabelled examples (label -1) are left out. `refit=True` trains the final model on
    train + val (the text vocabulary always comes from train alone). Raises ConfigError for
    modalities without a baseline and DataError for unusable splits.
    """
    started = time.perf_counter()
    if train.modality != val.modality:
        raise DataError(
            f"train is {train.modality} data but val is {val.modality} data; pass two splits "
            "of the same data set."
        )
    if list(train.classes) != list(val.classes):
        raise DataError(
            "train and val have different class lists; pass two splits of the same data set "
            "so that label indices mean the same classes."
        )
    if not isinstance(image_side, int) or image_side < 1:
        raise ConfigError(f"image_side must be an int >= 1. Got {image_side!r} instead.")
    train, val = _labelled(train, "train"), _labelled(val, "val")
    unseen = sorted(set(np.unique(val.labels).tolist()) - set(np.unique(train.labels).tolist()))
    if unseen:
        raise DataError(
            f"The val split has class(es) {[train.classes[c] for c in unseen[:10]]} that never "
            "occur in train. Re-split so that every class has training examples."
        )
    if len(np.unique(train.labels)) < 2:
        raise DataError(
            f"The train split has examples of only one class ({train.classes[train.labels[0]]!r});"
            " a classifier needs at least two. Check the labels or the split."
        )

    if train.modality == "text":
        text = _TfidfFeaturizer([str(t) for t in train.inputs])
        assert text.train_matrix is not None
        model, C, scores, val_proba = _fit_sparse_logreg(
            text.train_matrix, train.labels, text.transform(val), val.labels, refit
        )
        val_proba = _all_columns(model, val_proba, len(train.classes))
        text.train_matrix = None  # only needed for fitting
        featurizer: _Featurizer = text
        name = "tfidf+logreg"
    elif train.modality in ("image", "audio"):
        if train.modality == "image":
            featurizer, name = _PixelFeaturizer(train, image_side), "pixels+logreg"
        else:
            featurizer, name = _LogMelStatsFeaturizer(), "logmel-stats+logreg"
        model, C, scores, val_proba = _fit_dense_logreg(featurizer, train, val, refit)
    else:
        raise ConfigError(
            f"No baseline for {train.modality!r} data; baselines exist for 'image', 'text' "
            "and 'audio'."
        )
    baseline = Baseline(
        name=name,
        modality=train.modality,
        classes=list(train.classes),
        featurizer=featurizer,
        model=model,
        C=C,
        val_scores=scores,
        refit=refit,
    )
    baseline.val_proba = val_proba
    baseline.fit_seconds = time.perf_counter() - started
    return baseline


def _fit_dense_logreg(
    featurizer: _Featurizer, train: Examples, val: Examples, refit: bool
) -> tuple[LogisticHead, float, dict[float, dict[str, float]], np.ndarray]:
    """LogisticHead on dense features, C chosen on val; the validation probabilities are
    taken from the train-only model before the (optional) refit on train + val."""
    X_tr, X_va = featurizer.transform(train), featurizer.transform(val)
    model = LogisticHead(refit=False).fit(X_tr, train.labels, X_va, val.labels)
    val_proba = _all_columns(model, model.predict_proba(X_va), len(train.classes))
    scores = {
        c: {"log_loss": s["log_loss"], "accuracy": s["accuracy"]}
        for c, s in model.val_scores_.items()
    }
    C = float(model.C_)
    if refit:
        model = LogisticHead(C=C, refit=True).fit(X_tr, train.labels, X_va, val.labels)
    return model, C, scores, val_proba
