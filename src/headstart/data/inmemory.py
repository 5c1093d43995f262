"""The Python API's in-memory inputs, read into what :class:`~headstart.data.base.Examples`
holds: image arrays, PIL images, texts, pandas and Hugging Face ``datasets`` objects, and
precomputed feature matrices.

What an input means is decided by its type and shape, never guessed from its values alone:

* a numeric array shaped (N,H,W), (N,H,W,C) or (N,C,H,W) with C in 1, 3, 4: images. uint8
  is 0..255; any other dtype needs a value range, stated (``value_range=(0, 1)``) or inferred
  from the values ([0, 1], then [-1, 1], then [0, 255]) and logged, because the same floats
  read on another scale give another image. Pixels are stored as uint8 (N,H,W[,C]), the form
  the preprocessing and the feature cache take (8 bits per channel, like the image files
  backbones were trained on).
* a 2-D numeric array (N, D): precomputed features, only with ``backbone="precomputed"``.
  With a pretrained backbone it is refused: (N, D) could be flattened images, waveforms or
  features, and each reading gives a different, silently wrong model.
* a list of PIL images: images (different sizes are centre-cropped to squares first, the
  region every backbone's resize-and-crop keeps).
* strings: image files (by extension, when they exist), audio files, or texts.
* a pandas Series is its values; a one-column DataFrame is that column's values (never its
  column names); a ``datasets.Dataset`` is its one input column (``label``/``labels`` is
  taken as y when y is not given).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .audio import AUDIO_EXTENSIONS
from .base import Modality
from .images import IMAGE_EXTENSIONS

log = logging.getLogger("headstart")

#: Value ranges tried, in order, when a non-uint8 image array does not state its own.
INFERRED_RANGES: tuple[tuple[float, float], ...] = ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0))
#: Label columns of a ``datasets.Dataset`` taken as y when fit gets no y.
LABEL_COLUMNS = ("label", "labels")
#: Longest side a list of different-size PIL images is stored at (square, uint8): above every
#: registered backbone's resize size, so nothing a backbone would see is lost.
MAX_PIL_SIDE = 384
_STATE = (
    "state it when making the estimator: TransferClassifier(..., value_range=(0, 1)), "
    "(-1, 1) or (0, 255)"
)


def is_dataset(X: Any) -> bool:
    """A Hugging Face ``datasets.Dataset`` (checked by type name: no import of ``datasets``)."""
    return type(X).__module__.split(".")[0] == "datasets" and hasattr(X, "column_names")


def unwrap_table(X: Any, y: Any) -> tuple[Any, Any]:
    """A pandas Series / DataFrame or a ``datasets.Dataset`` → (its input values, y)."""
    if is_dataset(X):
        cols = list(X.column_names)
        inputs = [c for c in cols if c not in LABEL_COLUMNS]
        if len(inputs) != 1:
            raise DataError(
                f"the datasets.Dataset has columns {cols}; headstart needs one input column "
                f"(besides {' / '.join(LABEL_COLUMNS)}). Pass the one to use, e.g. "
                f"ds.select_columns([{inputs[0]!r}, 'label']) or X=ds[{inputs[0]!r}]"
                if inputs
                else f"the datasets.Dataset has no input column, only {cols}"
            )
        if y is None:
            y = next((list(X[c]) for c in LABEL_COLUMNS if c in cols), None)
        return list(X[inputs[0]]), y
    module = type(X).__module__.split(".")[0]
    if module == "pandas" and hasattr(X, "columns"):  # DataFrame
        if X.shape[1] != 1:
            raise DataError(
                f"X is a pandas DataFrame with {X.shape[1]} columns {list(X.columns)[:10]}; "
                "pass the column that holds the texts, image paths or images, e.g. "
                "X=df['text'] (or a 2-D feature table with backbone='precomputed')"
            )
        X = X.iloc[:, 0]
    if module == "pandas" and hasattr(X, "to_numpy"):  # Series
        X = X.to_numpy()
    return X, y


def read_inputs(X: Any, *, value_range: tuple[float, float] | None = None) -> tuple[Modality, Any]:
    """(modality, inputs) for in-memory ``X``; see the module docstring for the rules."""
    if isinstance(X, str | Path) or (isinstance(X, np.ndarray) and X.ndim == 0):
        raise DataError(
            "X must be a sequence of inputs (texts, image paths, PIL images or an image "
            f"array), not a single {type(X).__name__}; wrap it in a list"
        )
    if type(X).__module__.startswith("scipy.sparse"):
        raise DataError(
            f"X is a scipy sparse matrix {X.shape}: sparse input is not supported. Pass a "
            "dense array (X.toarray()); as features, with backbone='precomputed'"
        )
    if not isinstance(X, list | tuple | np.ndarray) and hasattr(X, "__array__"):
        X = np.asarray(X)  # torch tensors, array wrappers
    if isinstance(X, np.ndarray):
        if X.dtype.kind == "c":
            raise DataError(
                f"Complex data not supported: X has dtype {X.dtype}; pass real pixel values"
            )
        if X.dtype.kind in "biuf":
            return "image", image_array(X, value_range)
        if X.ndim != 1:
            raise DataError(
                f"X is a {X.ndim}-D array of {X.dtype}: texts and paths are a 1-D sequence "
                "of strings, images a numeric array (N,H,W[,C]), features a numeric 2-D "
                "array with backbone='precomputed'"
            )
    inputs = list(X)
    if not inputs:
        raise DataError("X is empty: nothing to fit or predict on")
    first = inputs[0]
    if _is_pil(first):
        return "image", pil_images(inputs)
    if isinstance(first, np.ndarray):
        try:
            stacked = np.stack(inputs)
        except ValueError as exc:
            raise DataError(
                f"X is a list of arrays of different shapes ({first.shape}, ...): {exc}. "
                "Resize them to one shape, or pass a list of PIL images or image files"
            ) from exc
        return read_inputs(stacked, value_range=value_range)
    if isinstance(first, Path | str):
        suffix = Path(first).suffix.lower()
        known = suffix in IMAGE_EXTENSIONS | AUDIO_EXTENSIONS
        if isinstance(first, Path) or (known and Path(first).exists()):
            return ("audio" if suffix in AUDIO_EXTENSIONS else "image"), [str(p) for p in inputs]
    bad = next((i for i, v in enumerate(inputs) if not isinstance(v, str)), None)
    if bad is not None:
        v = inputs[bad]
        raise DataError(
            f"X[{bad}] is a {type(v).__name__} ({v!r:.60}), but X was read as texts (X[0] is "
            f"{type(first).__name__}). Pass all texts as strings; for numeric features use "
            "a 2-D array with backbone='precomputed'; for images a numeric array (N,H,W[,C])"
        )
    return "text", inputs


def _is_pil(v: Any) -> bool:
    return type(v).__module__.split(".")[0] == "PIL" and hasattr(v, "convert")


def pil_images(images: Sequence[Any]) -> np.ndarray:
    """RGB uint8 (N,S,S,3) from a list of PIL images (one size: kept; mixed: centre squares)."""
    from PIL import Image, ImageOps

    bad = next((i for i, v in enumerate(images) if not _is_pil(v)), None)
    if bad is not None:
        raise DataError(
            f"X[{bad}] is a {type(images[bad]).__name__}, but X[0] is a PIL image; pass a "
            "list of PIL images only"
        )
    rgb = []
    for im in images:
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, im)
        rgb.append(im.convert("RGB"))
    if len({im.size for im in rgb}) > 1:
        side = min(MAX_PIL_SIDE, max(min(im.size) for im in rgb))
        log.info(
            "X: %d PIL images of different sizes, centre-cropped to squares of %d px (the "
            "region a backbone's resize-and-crop keeps)",
            len(rgb),
            side,
        )
        resample = Image.Resampling.BICUBIC
        rgb = [ImageOps.fit(im, (side, side), resample) for im in rgb]
    return np.stack([np.asarray(im, dtype=np.uint8) for im in rgb])


def image_array(X: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """uint8 (N,H,W) or (N,H,W,C) from a numeric image array of any layout and range."""
    if X.ndim == 2:
        raise DataError(
            f"X is a 2-D numeric array {X.shape}: headstart does not guess whether that is "
            "precomputed features, flattened images or something else. For features use "
            "TransferClassifier(backbone='precomputed'); for greyscale images reshape to "
            "(N, H, W), e.g. X.reshape(len(X), 8, 8); for texts pass a list of strings"
        )
    if X.ndim not in (3, 4):
        raise DataError(
            f"X is a {X.ndim}-D numeric array {X.shape}; images are (N,H,W), (N,H,W,C) or "
            "(N,C,H,W) with C = 1, 3 or 4 channels"
        )
    if X.ndim == 4:
        last, first = X.shape[-1] in (1, 3, 4), X.shape[1] in (1, 3, 4)
        if last and first:
            raise DataError(
                f"X has shape {X.shape}: both axis 1 and axis 3 could be the channels. Pass "
                "it channels-last (N,H,W,C), e.g. X.transpose(0, 2, 3, 1) if it is (N,C,H,W)"
            )
        if not (last or first):
            raise DataError(
                f"X has shape {X.shape}, with no channel axis of size 1, 3 or 4 at axis 1 or "
                "3; images are (N,H,W), (N,H,W,C) or (N,C,H,W)"
            )
        if first:
            X = X.transpose(0, 2, 3, 1)
        if X.shape[-1] == 1:
            X = X[..., 0]
    if X.dtype == np.uint8 and value_range in (None, (0, 255)):
        return np.ascontiguousarray(X)
    return _to_uint8(X, value_range)


def _to_uint8(X: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    arr = X.astype(np.float64) if X.dtype.kind != "f" else X
    if not np.isfinite(arr).all():
        raise DataError(
            f"the image array has {int((~np.isfinite(arr)).sum())} NaN or infinite values; "
            "images need finite pixel values"
        )
    lo_v, hi_v = float(arr.min()), float(arr.max())
    if value_range is None:
        found = next((r for r in INFERRED_RANGES if r[0] <= lo_v and hi_v <= r[1]), None)
        if found is None:
            raise DataError(
                f"the {X.dtype} image array has values in [{lo_v:g}, {hi_v:g}], in none of "
                f"the ranges headstart infers ({', '.join(map(str, INFERRED_RANGES))}); "
                f"rescale it, or {_STATE}"
            )
        log.info(
            "X: %s image array %s read as pixel values in [%g, %g] (inferred from its min %g "
            "and max %g); if that is wrong, %s",
            X.dtype,
            X.shape,
            found[0],
            found[1],
            lo_v,
            hi_v,
            _STATE,
        )
        value_range = found
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise DataError(f"value_range must be (low, high) with low < high, got {value_range}")
    span = hi - lo
    if lo_v < lo - 1e-6 * span or hi_v > hi + 1e-6 * span:
        raise DataError(
            f"the image array has values in [{lo_v:g}, {hi_v:g}], outside the stated "
            f"value_range {value_range}; rescale it or state its real range"
        )
    out = np.rint((np.clip(arr, lo, hi) - lo) * (255.0 / span))
    return np.ascontiguousarray(out.astype(np.uint8))
