"""Parity of an exported graph with headstart's PyTorch prediction, on real inputs.

The reference is what ``headstart predict`` computes: the backbone in eager PyTorch (adapters
unmerged, tuned layers loaded), then the head's own ``predict_proba``. The same preprocessed
batches go to ONNX Runtime, so the comparison measures the graph and nothing else. Batches
come in varied sizes (the last one is partial, text batches differ in length), which also
exercises the dynamic axes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..backbones.base import Backbone, ImagePreprocess, TextPreprocess
from ..data.base import Examples
from ..errors import ConfigError

__all__ = ["SAMPLE_TEXTS", "ParityReport", "batches", "compare", "default_examples"]

#: Real sentences for a text model's parity check when no ``--data`` is given.
SAMPLE_TEXTS = [
    "A quietly moving film with two superb lead performances.",
    "The plot collapses in the second half and never recovers.",
    "I laughed, I cried, and I would happily watch it again tomorrow.",
    "Two hours of my life I will not get back.",
    "The soundtrack is lovely but the dialogue is painfully stiff.",
    "An ambitious, messy, occasionally brilliant piece of work.",
    "Customer service answered within minutes and fixed the problem.",
    "The package arrived late and the box was crushed.",
    "It does exactly what it says, nothing more and nothing less.",
    "Honestly the worst meal I have had in years; the soup was cold.",
    "The hotel staff were friendly, the room was spotless, and breakfast was great.",
    "ok",
    "Not bad at all, though the ending felt rushed and a little predictable, "
    "and the middle act drags on far longer than it needs to before anything happens.",
    "Battery life is excellent; the screen scratches far too easily.",
    "The lecture was clear, well paced and full of useful examples.",
    "Would not recommend.",
]


@dataclass
class ParityReport:
    """Probabilities of PyTorch and ONNX Runtime (and the int8 graph) on the same inputs."""

    source: str
    n: int
    torch_proba: np.ndarray
    onnx_proba: np.ndarray
    int8_proba: np.ndarray | None = None
    labels: np.ndarray | None = None  # true class indices (into the model's classes), if known
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self, atol: float = 1e-4, min_agreement: float = 0.999) -> dict[str, Any]:
        """The figures recorded beside the model; ``ok`` when the float32 graph is within
        ``atol`` (max abs difference of probabilities) and labels agree on at least
        ``min_agreement`` of the inputs."""
        ref = self.torch_proba.argmax(1)
        out: dict[str, Any] = {
            "source": self.source,
            "n": self.n,
            "tolerance": {"max_abs_diff": atol, "label_agreement": min_agreement},
            "onnx": _versus(self.torch_proba, self.onnx_proba),
        }
        out["ok"] = bool(
            out["onnx"]["max_abs_diff"] <= atol and out["onnx"]["label_agreement"] >= min_agreement
        )
        if self.int8_proba is not None:
            out["int8"] = _versus(self.torch_proba, self.int8_proba)
        if self.labels is not None:
            out["accuracy"] = {"torch": float(np.mean(ref == self.labels))}
            out["accuracy"]["onnx"] = float(np.mean(self.onnx_proba.argmax(1) == self.labels))
            if self.int8_proba is not None:
                acc8 = float(np.mean(self.int8_proba.argmax(1) == self.labels))
                out["accuracy"]["int8"] = acc8
                out["accuracy"]["int8_drop"] = out["accuracy"]["onnx"] - acc8
        out["seconds"] = {k: round(v, 3) for k, v in self.seconds.items()}
        return out


def _versus(ref: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    diff = np.abs(other.astype(np.float64) - ref.astype(np.float64))
    agree = other.argmax(1) == ref.argmax(1)
    return {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "label_agreement": float(agree.mean()) if agree.size else 1.0,
        "labels_differing": int((~agree).sum()),
    }


def default_examples(modality: str, classes: list[str]) -> tuple[Examples, str]:
    """Real inputs for a parity check when the user gives none: natural photographs
    (scikit-learn's two sample images, cropped) or :data:`SAMPLE_TEXTS`."""
    if modality == "image":
        from ..forgetting import source_probe_images

        x = source_probe_images(64)
        ex = Examples("image", x, np.full(len(x), -1), list(classes), name="photos")
        return ex, "64 crops of scikit-learn's sample photographs (give --data for your own)"
    if modality == "text":
        ex = Examples(
            "text", list(SAMPLE_TEXTS), np.full(len(SAMPLE_TEXTS), -1), list(classes), name="texts"
        )
        return ex, f"{len(SAMPLE_TEXTS)} built-in sample sentences (give --data for your own)"
    raise ConfigError(f"no default parity inputs for {modality!r} models; give --data")


def batches(
    backbone: Backbone, ex: Examples, batch_size: int
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """``(row indices, inputs)`` for all of ``ex``, preprocessed as headstart predicts."""
    from ..features import preprocess as P

    pre = backbone.preprocess
    if isinstance(pre, ImagePreprocess):
        row = 0
        for x in P.image_batches(ex.inputs, pre, batch_size):
            yield np.arange(row, row + len(x)), {"pixel_values": x}
            row += len(x)
        return
    if isinstance(pre, TextPreprocess):
        seqs = P.tokenize([str(t) for t in ex.inputs], pre)
        pad = P.get_tokenizer(pre).pad_token_id or 0
        for i in range(0, len(seqs), batch_size):
            idx = np.arange(i, min(i + batch_size, len(seqs)))
            yield idx, P.pad_batch([seqs[j] for j in idx], pad)
        return
    raise ConfigError(f"no parity inputs for preprocessing {type(pre).__name__}")


def compare(
    backbone: Backbone,
    head: Any,
    runners: dict[str, Any],
    ex: Examples,
    *,
    source: str,
    labels: np.ndarray | None = None,
    batch_size: int = 32,
) -> ParityReport:
    """Run PyTorch (backbone + ``head.predict_proba``) and each ONNX Runtime runner
    (``"onnx"``, optionally ``"int8"``) on the same batches of ``ex``."""
    n = len(ex)
    probs: dict[str, np.ndarray] = {}
    seconds = {"torch": 0.0, **{k: 0.0 for k in runners}}
    for idx, batch in batches(backbone, ex, batch_size):
        t0 = time.perf_counter()
        with torch.inference_mode():
            feats = backbone(**batch).float().cpu().numpy()
        p = np.asarray(head.predict_proba(feats), dtype=np.float64)
        seconds["torch"] += time.perf_counter() - t0
        _put(probs, "torch", idx, p, n)
        feeds = {k: v.numpy() for k, v in batch.items()}
        for name, runner in runners.items():
            t0 = time.perf_counter()
            out = runner(**feeds)
            seconds[name] += time.perf_counter() - t0
            _put(probs, name, idx, out, n)
    return ParityReport(
        source=source,
        n=n,
        torch_proba=probs["torch"],
        onnx_proba=probs["onnx"],
        int8_proba=probs.get("int8"),
        labels=labels,
        seconds=seconds,
    )


def _put(store: dict[str, np.ndarray], key: str, idx: np.ndarray, p: np.ndarray, n: int) -> None:
    if key not in store:
        store[key] = np.zeros((n, p.shape[1]), dtype=np.float64)
    store[key][idx] = p


def examples_from(
    spec: str, columns: dict[str, str | None], classes: list[str], limit: int
) -> tuple[Examples, np.ndarray | None, str]:
    """Parity inputs from ``--data`` (a folder, a table, a built-in set: its official test
    split when it has one), at most ``limit`` of them spread evenly (0: all). Returns the
    examples, their labels as indices into ``classes`` (None when some label is unknown to
    the model) and a description."""
    from ..data.load import read_source

    pool, test, _ = read_source(spec, columns, "raise")
    ex, part = (test, "official test split") if test is not None else (pool, "all examples")
    total = len(ex)
    if limit and total > limit:
        ex = ex.subset(np.unique(np.linspace(0, total - 1, limit).round().astype(int)))
    labels: np.ndarray | None = None
    if set(ex.classes) <= set(classes) and (ex.labels >= 0).all():
        labels = np.array([classes.index(c) for c in ex.classes])[ex.labels]
    return ex, labels, f"{spec}: {len(ex)} of {total} ({part})"
