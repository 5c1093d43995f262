"""Backbone names: the source prefixes, the curated list, and parsing a name.

Names are what users already know, with a strict source prefix:

* ``torchvision:<model>[.<WEIGHTS_TAG>]`` — e.g. ``torchvision:resnet50.IMAGENET1K_V2``
* ``timm:<model>[.<tag>]`` — e.g. ``timm:convnext_tiny.fb_in22k``
* ``hf:<repo id>`` — e.g. ``hf:facebook/dinov2-small``
* ``local-dir:<path>`` or a path to a Hugging Face folder (config.json + weights)

This module imports nothing heavy and no loader, so every loader can use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import BackboneError, did_you_mean

__all__ = [
    "DEFAULT_BACKBONE",
    "GFLOPS",
    "KNOWN",
    "PRETRAINING_SIZE",
    "SOURCES",
    "KnownBackbone",
    "parse_name",
]

SOURCES = ("torchvision", "timm", "hf", "local-dir")

DEFAULT_BACKBONE = {
    "image": "torchvision:mobilenet_v2",
    "text": "hf:sentence-transformers/all-MiniLM-L6-v2",
    "audio": "hf:openai/whisper-tiny.en",
}


@dataclass(frozen=True)
class KnownBackbone:
    name: str
    modality: str
    params_m: float
    note: str = ""


# A curated list for `headstart backbones` and `--backbone auto`; any other valid name works.
KNOWN: list[KnownBackbone] = [
    KnownBackbone("torchvision:mobilenet_v2", "image", 3.5, "fast CNN; default for images"),
    KnownBackbone("torchvision:mobilenet_v3_large", "image", 5.5),
    KnownBackbone("torchvision:resnet18", "image", 11.7),
    KnownBackbone("torchvision:resnet50", "image", 25.6),
    KnownBackbone("torchvision:efficientnet_b0", "image", 5.3),
    KnownBackbone("torchvision:convnext_tiny", "image", 28.6),
    KnownBackbone("torchvision:vgg16", "image", 138.4),
    KnownBackbone("torchvision:vit_b_16", "image", 86.6),
    KnownBackbone("timm:tf_efficientnet_lite0", "image", 4.7),
    KnownBackbone("timm:tf_efficientnet_lite1", "image", 5.4),
    KnownBackbone("timm:tf_efficientnet_lite2", "image", 6.1),
    KnownBackbone("timm:resnet50.a1_in1k", "image", 25.6),
    KnownBackbone("timm:convnext_tiny", "image", 28.6),
    KnownBackbone("timm:vit_small_patch16_224.augreg_in21k_ft_in1k", "image", 22.1),
    KnownBackbone("hf:facebook/dinov2-small", "image", 22.1, "self-supervised ViT-S/14"),
    KnownBackbone("hf:google/vit-base-patch16-224-in21k", "image", 86.4),
    KnownBackbone("hf:sentence-transformers/all-MiniLM-L6-v2", "text", 22.7, "default for text"),
    KnownBackbone("hf:sentence-transformers/paraphrase-MiniLM-L3-v2", "text", 17.4),
    KnownBackbone("hf:sentence-transformers/all-mpnet-base-v2", "text", 109.5),
    KnownBackbone("hf:bert-base-uncased", "text", 109.5),
    KnownBackbone("hf:distilbert-base-uncased", "text", 66.4),
    KnownBackbone("hf:openai/whisper-tiny.en", "audio", 8.2, "Whisper encoder; default for audio"),
]

#: Forward-pass cost at each model's own pretraining input (GFLOPs as multiply-adds, per
#: image at its pretraining size, per 128-token text, per 30-s audio window), from the
#: model cards (torchvision's weight metadata, timm's tables, the papers). Only ratios are
#: used: :mod:`headstart.plan` turns one speed measured on this machine into estimates for
#: the others (a dense model runs nearer the machine's peak than a depthwise CNN, so an
#: estimate for it errs on the slow side).
GFLOPS: dict[str, float] = {
    "torchvision:mobilenet_v2": 0.30,
    "torchvision:mobilenet_v3_large": 0.22,
    "torchvision:resnet18": 1.81,
    "torchvision:resnet50": 4.09,
    "torchvision:efficientnet_b0": 0.39,
    "torchvision:convnext_tiny": 4.46,
    "torchvision:vgg16": 15.47,
    "torchvision:vit_b_16": 17.56,
    "timm:tf_efficientnet_lite0": 0.40,
    "timm:tf_efficientnet_lite1": 0.61,
    "timm:tf_efficientnet_lite2": 0.90,
    "timm:resnet50.a1_in1k": 4.1,
    "timm:convnext_tiny": 4.5,
    "timm:vit_small_patch16_224.augreg_in21k_ft_in1k": 4.6,
    "hf:facebook/dinov2-small": 6.1,
    "hf:google/vit-base-patch16-224-in21k": 17.6,
    "hf:sentence-transformers/all-MiniLM-L6-v2": 1.4,
    "hf:sentence-transformers/paraphrase-MiniLM-L3-v2": 0.7,
    "hf:sentence-transformers/all-mpnet-base-v2": 11.2,
    "hf:bert-base-uncased": 11.2,
    "hf:distilbert-base-uncased": 5.6,
    "hf:openai/whisper-tiny.en": 6.4,
}

#: Pretraining input size of the known image backbones that do not use 224 px.
PRETRAINING_SIZE: dict[str, int] = {
    "timm:tf_efficientnet_lite1": 240,
    "timm:tf_efficientnet_lite2": 260,
}


def parse_name(name: str) -> tuple[str, str]:
    """Split ``source:rest``; a bare existing path means ``local-dir``."""
    if ":" in name:
        source, rest = name.split(":", 1)
        if source in SOURCES and rest:
            return source, rest
        if os.path.exists(name):  # e.g. a Windows drive letter
            return "local-dir", name
    if os.path.isdir(name):
        return "local-dir", name
    known = [k.name for k in KNOWN]
    raise BackboneError(
        f"Unknown backbone {name!r}: names start with one of {', '.join(s + ':' for s in SOURCES)} "
        f"(e.g. 'timm:resnet18', 'hf:facebook/dinov2-small', 'local-dir:./my-model')."
        + did_you_mean(name, known)
    )
