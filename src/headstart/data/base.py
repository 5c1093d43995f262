"""The in-memory description of a labelled data set split.

An :class:`Examples` holds *references* to inputs (file paths, texts, or a compact uint8
array for the small built-in image sets) plus integer labels. Decoded pixels and features
are never all held at once: extraction streams them in batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

#: "features": precomputed feature rows (``TransferClassifier(backbone="precomputed")``).
Modality = Literal["image", "text", "audio", "features"]


@dataclass
class Examples:
    """One split of a labelled data set.

    Attributes
    ----------
    modality: "image", "text" or "audio".
    inputs: for images either a list of file paths or a uint8 array shaped (N, H, W) or
        (N, H, W, C); for text a list of strings; for audio a list of file paths; for
        features a float array (N, D).
    labels: int64 array of class indices into ``classes`` (-1 where unknown).
    classes: class names, index = label.
    name: where the data came from, for messages and reports.
    sources: optional per-example origin (file path, "file.csv:row 12") for error messages.
    """

    modality: Modality
    inputs: Sequence[Any] | np.ndarray
    labels: np.ndarray
    classes: list[str]
    name: str = ""
    sources: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.inputs) != len(self.labels):
            raise ValueError(
                f"{self.name or 'data'}: {len(self.inputs)} inputs but {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: Sequence[int] | np.ndarray, name: str | None = None) -> Examples:
        idx = np.asarray(idx, dtype=np.int64)
        if isinstance(self.inputs, np.ndarray):
            inputs: Sequence[Any] | np.ndarray = self.inputs[idx]
        else:
            inputs = [self.inputs[i] for i in idx]
        return Examples(
            modality=self.modality,
            inputs=inputs,
            labels=self.labels[idx],
            classes=list(self.classes),
            name=name or self.name,
            sources=[self.sources[i] for i in idx] if self.sources is not None else None,
            meta=dict(self.meta),
        )

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels[self.labels >= 0], minlength=len(self.classes))

    def fingerprint(self) -> str:
        """sha256 over the inputs' content and the labels, in order.

        Files are hashed by content (not by name or mtime), so a copied data set keeps its
        fingerprint and an edited image changes it.
        """
        h = hashlib.sha256()
        h.update(self.modality.encode())
        h.update(repr(list(self.classes)).encode())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        if isinstance(self.inputs, np.ndarray):
            h.update(str(self.inputs.shape).encode())
            h.update(str(self.inputs.dtype).encode())
            h.update(np.ascontiguousarray(self.inputs).tobytes())
        else:
            for item in self.inputs:
                if self.modality == "text":
                    b = str(item).encode("utf-8", "surrogatepass")
                    h.update(len(b).to_bytes(8, "little"))
                    h.update(b)
                else:
                    h.update(_file_digest(Path(item)))
        return h.hexdigest()

    def source_of(self, i: int) -> str:
        if self.sources is not None:
            return self.sources[i]
        if not isinstance(self.inputs, np.ndarray) and self.modality != "text":
            return str(self.inputs[i])
        return f"{self.name or 'data'}[{i}]"


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    except FileNotFoundError:
        h.update(b"<missing>")
    return h.digest()


@dataclass
class Splits:
    """train / val / test splits of one data set (test may be None)."""

    train: Examples
    val: Examples
    test: Examples | None
    classes: list[str]
    description: dict[str, Any] = field(default_factory=dict)
    #: the labelled examples train and val were carved from, in the order the carving
    #: indexes (``data.split.budget_split``); None when the validation split was a file.
    pool: Examples | None = None

    def fingerprint(self) -> dict[str, str | None]:
        return {
            "train": self.train.fingerprint(),
            "val": self.val.fingerprint(),
            "test": self.test.fingerprint() if self.test is not None else None,
        }
