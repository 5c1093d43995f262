"""What the cheap baselines read: TF-IDF, pixel thumbnails or log-mel statistics.

Each featurizer turns an :class:`~headstart.data.base.Examples` split into the matrix the
baseline's logistic regression reads, and saves as JSON settings (``state()[0]``, with its
``kind``) plus numeric arrays (``state()[1]``), from which :func:`featurizer_from_state`
rebuilds one that transforms every input exactly as the fitted one did. Used by
:mod:`headstart.baselines.linear`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from PIL import Image, UnidentifiedImageError

from headstart.data.base import Examples
from headstart.errors import ConfigError, DataError

__all__ = [
    "AUDIO_MELS",
    "FEATURIZERS",
    "HASH_BUCKETS",
    "MAX_TERMS",
    "Featurizer",
    "LogMelStatsFeaturizer",
    "PixelFeaturizer",
    "TfidfFeaturizer",
    "featurizer_from_state",
    "log_mel_statistics",
]

#: Hash buckets of the TF-IDF baseline's word 1-2 grams.
HASH_BUCKETS = 2**22
#: At most this many (the most frequent) TF-IDF terms are kept.
MAX_TERMS = 200_000
_REFIT = "Re-run fit_baseline with this headstart and save the baseline again."


def _setting(meta: Mapping[str, Any], key: str, who: str, low: int = 1) -> int:
    """An integer setting >= `low` of a saved featurizer, or ConfigError."""
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(
            f"{who}: setting {key!r} must be an int >= {low}. Got {value!r} instead. {_REFIT}"
        )
    return value


def _array(arrays: Mapping[str, np.ndarray], key: str, who: str, kinds: str) -> np.ndarray:
    """The 1-D saved array `key` whose dtype kind is one of `kinds`, or ConfigError."""
    if key not in arrays:
        raise ConfigError(f"{who}: the saved arrays lack {key!r}; found {sorted(arrays)}. {_REFIT}")
    a = np.asarray(arrays[key])
    if a.ndim != 1 or a.dtype.kind not in kinds:
        raise ConfigError(
            f"{who}: array {key!r} must be 1-D of dtype kind {kinds!r}; got shape {a.shape}, "
            f"dtype {a.dtype}. {_REFIT}"
        )
    return a


class Featurizer:
    """Turns a split into the baseline's feature matrix, (n, n_features)."""

    kind: ClassVar[str]
    n_features: int

    def transform(self, examples: Examples) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:  # pragma: no cover
        """JSON-able settings (with ``"kind"``) and the numeric arrays it needs."""
        raise NotImplementedError

    @classmethod
    def from_state(
        cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> Featurizer:  # pragma: no cover - abstract
        raise NotImplementedError


def _hasher() -> Any:
    """Counts of hashed word 1-2 grams (float32, HASH_BUCKETS columns)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        ngram_range=(1, 2), n_features=HASH_BUCKETS, alternate_sign=False, norm=None,
        dtype=np.float32,
    )  # fmt: skip


class TfidfFeaturizer(Featurizer):
    """TF-IDF over hashed word 1-2 grams, restricted to the terms kept by min_df/max_features.

    Hashing (2**22 buckets) instead of a vocabulary dict makes the pass over the texts about
    five times faster (measured on 10,000 reviews: no Python dict of millions of n-grams to
    build and sort); then, as
    TfidfVectorizer would, only n-grams in at least `min_df` training documents are kept, at
    most the 200,000 most frequent. Use :meth:`fit` to learn one from training texts.

    The weighting is scikit-learn's ``TfidfTransformer(sublinear_tf=True)``: ``1 + log(tf)``
    times the (smoothed) idf of each kept term, rows L2-normalised.
    """

    kind = "tfidf"

    def __init__(self, keep: np.ndarray, idf: np.ndarray, min_df: int) -> None:
        self.keep = np.asarray(keep, dtype=np.int64)
        self.idf = np.asarray(idf)
        self.min_df = int(min_df)
        self.hasher = _hasher()
        self.train_matrix: sp.csr_matrix | None = None
        self.n_features = len(self.keep)

    @classmethod
    def fit(cls, train_texts: Sequence[str]) -> TfidfFeaturizer:
        """Learn the kept terms and their idf from `train_texts`; ``train_matrix`` holds the
        training texts' TF-IDF rows (drop it once fitted)."""
        from sklearn.feature_extraction.text import TfidfTransformer

        counts = _hasher().transform(train_texts).tocsr()
        if counts.nnz == 0:
            raise DataError(
                "The training texts contain no words (tokens of 2+ letters or digits) to build "
                "TF-IDF features from. Check that the text column holds the documents."
            )
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        min_df = 2 if (df >= 2).any() else 1  # tiny data sets may share no term
        keep = np.flatnonzero(df >= min_df)
        if len(keep) > MAX_TERMS:
            total = np.asarray(counts.sum(axis=0)).ravel()
            keep = np.sort(keep[np.argsort(-total[keep], kind="stable")[:MAX_TERMS]])
        kept = counts[:, keep]
        idf = TfidfTransformer(sublinear_tf=True).fit(kept).idf_
        text = cls(keep, idf, min_df)
        text.train_matrix = text.weigh(kept)
        return text

    def weigh(self, kept_counts: sp.csr_matrix) -> sp.csr_matrix:
        """TF-IDF rows (float32) from counts of the kept terms, shape (n, n_features)."""
        from sklearn.preprocessing import normalize

        X = sp.csr_matrix(kept_counts, dtype=np.float32, copy=True)
        np.log(X.data, out=X.data)
        X.data += 1.0
        X.data *= self.idf[X.indices]
        return normalize(X, norm="l2", copy=False).astype(np.float32, copy=False)

    def transform(self, examples: Examples) -> sp.csr_matrix:
        counts = self.hasher.transform([str(t) for t in examples.inputs]).tocsr()
        return self.weigh(counts[:, self.keep])

    def describe(self) -> str:
        return (
            f"TF-IDF (hashed word 1-2 grams, sublinear tf, min_df={self.min_df}, "
            f"{self.n_features:,} terms)"
        )

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "kind": self.kind,
            "min_df": self.min_df,
            "hash_buckets": HASH_BUCKETS,
            "ngram_range": [1, 2],
            "sublinear_tf": True,
            "norm": "l2",
            "n_features": self.n_features,
        }
        return meta, {"keep": self.keep, "idf": self.idf}

    @classmethod
    def from_state(
        cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> TfidfFeaturizer:
        who = "TF-IDF featurizer"
        fixed = {"hash_buckets": HASH_BUCKETS, "ngram_range": [1, 2], "sublinear_tf": True,
                 "norm": "l2"}  # fmt: skip
        for key, value in fixed.items():
            if meta.get(key) != value:
                raise ConfigError(
                    f"{who}: setting {key!r} is {meta.get(key)!r}; this headstart computes "
                    f"TF-IDF with {value!r} only. {_REFIT}"
                )
        min_df = _setting(meta, "min_df", who)
        keep = _array(arrays, "keep", who, "iu")
        idf = _array(arrays, "idf", who, "f")
        if len(idf) != len(keep):
            raise ConfigError(
                f"{who}: {len(keep)} kept terms but {len(idf)} idf values; they must be as "
                f"many. {_REFIT}"
            )
        if len(keep) and (keep[0] < 0 or keep[-1] >= HASH_BUCKETS or (np.diff(keep) <= 0).any()):
            raise ConfigError(
                f"{who}: the kept term indices must be increasing and in [0, {HASH_BUCKETS}). "
                f"{_REFIT}"
            )
        return cls(keep, idf, min_df)


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


class PixelFeaturizer(Featurizer):
    """The pixels of a greyscale (height, width) thumbnail, scaled to [0, 1]; reads uint8
    image arrays or image files. Use :meth:`for_split` to pick the size from training data."""

    kind = "pixels"

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.n_features = self.size[0] * self.size[1]

    @classmethod
    def for_split(cls, train: Examples, side: int) -> PixelFeaturizer:
        """`side` x `side`, or the native size of array images no larger than that."""
        if isinstance(train.inputs, np.ndarray):
            h, w = train.inputs.shape[1:3]
            return cls((h, w) if h <= side and w <= side else (side, side))
        return cls((side, side))

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

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        h, w = self.size
        return {"kind": self.kind, "height": h, "width": w, "n_features": self.n_features}, {}

    @classmethod
    def from_state(
        cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> PixelFeaturizer:
        who = "pixel featurizer"
        return cls((_setting(meta, "height", who), _setting(meta, "width", who)))


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


class LogMelStatsFeaturizer(Featurizer):
    """:func:`log_mel_statistics` of each clip, read by :func:`headstart.data.audio.read_audio`
    (mono, 16 kHz, at most its first 30 s). Each file is decoded once per featurizer."""

    kind = "logmel-stats"

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

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "kind": self.kind,
            "n_mels": self.n_mels,
            "sample_rate": _AUDIO_SR,
            "n_fft": _AUDIO_FFT,
            "hop": _AUDIO_HOP,
            "range_db": _AUDIO_RANGE_DB,
            "n_features": self.n_features,
        }
        return meta, {}

    @classmethod
    def from_state(
        cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> LogMelStatsFeaturizer:
        who = "log-mel featurizer"
        fixed = {"sample_rate": _AUDIO_SR, "n_fft": _AUDIO_FFT, "hop": _AUDIO_HOP,
                 "range_db": _AUDIO_RANGE_DB}  # fmt: skip
        for key, value in fixed.items():
            if meta.get(key) != value:
                raise ConfigError(
                    f"{who}: setting {key!r} is {meta.get(key)!r}; this headstart computes "
                    f"log-mel statistics with {value!r} only. {_REFIT}"
                )
        return cls(_setting(meta, "n_mels", who))


#: Featurizer classes by their saved ``kind``.
FEATURIZERS: dict[str, type[Featurizer]] = {
    c.kind: c for c in (TfidfFeaturizer, PixelFeaturizer, LogMelStatsFeaturizer)
}


def featurizer_from_state(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Featurizer:
    """Rebuild a featurizer from its ``state()``; ConfigError when the state is unusable."""
    if not isinstance(meta, Mapping) or meta.get("kind") not in FEATURIZERS:
        kind = meta.get("kind") if isinstance(meta, Mapping) else meta
        raise ConfigError(
            f"Unknown baseline featurizer kind {kind!r}; this headstart knows "
            f"{', '.join(FEATURIZERS)}. {_REFIT}"
        )
    featurizer = FEATURIZERS[meta["kind"]].from_state(meta, arrays)
    if "n_features" in meta and meta["n_features"] != featurizer.n_features:
        raise ConfigError(
            f"{meta['kind']} featurizer: its settings give {featurizer.n_features} features "
            f"but the saved n_features is {meta['n_features']!r}. {_REFIT}"
        )
    return featurizer
