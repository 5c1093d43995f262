"""One registry of backbones, queried by name.

Names are what users already know, with a strict source prefix:

* ``torchvision:<model>[.<WEIGHTS_TAG>]`` — e.g. ``torchvision:resnet50.IMAGENET1K_V2``
* ``timm:<model>[.<tag>]`` — e.g. ``timm:convnext_tiny.fb_in22k``
* ``hf:<repo id>`` — e.g. ``hf:facebook/dinov2-small``
* ``local-dir:<path>`` or a path to a Hugging Face folder (config.json + weights)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackboneError, did_you_mean
from . import offline
from .base import Backbone

SOURCES = ("torchvision", "timm", "hf", "local-dir")

DEFAULT_BACKBONE = {
    "image": "torchvision:mobilenet_v2",
    "text": "hf:sentence-transformers/all-MiniLM-L6-v2",
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
]


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


def load_backbone(
    name: str,
    *,
    pretrained: bool = True,
    image_size: int | None = None,
    max_length: int | None = None,
    pooling: str | None = None,
) -> Backbone:
    """Build a backbone by name, with real weights when ``pretrained`` (the default).

    Offline packages are used when installed, then local caches, then the usual download.
    A missing weight raises :class:`~headstart.errors.WeightsNotFoundError` naming the
    package or file that would provide it.
    """
    source, rest = parse_name(name)
    if source == "torchvision":
        from .image import load_torchvision

        model, _, tag = rest.partition(".")
        return load_torchvision(model, tag or None, pretrained, image_size)
    if source == "timm":
        from .image import load_timm

        return load_timm(rest, pretrained, image_size)
    from .hf import load_hf

    if source == "local-dir":
        path = Path(rest).expanduser()
        if not (path / "config.json").exists():
            raise BackboneError(
                f"{path} is not a model folder: it has no config.json. A local backbone is a "
                "Hugging Face folder (config.json + model.safetensors [+ tokenizer files])."
            )
        rest = str(path)
    return load_hf(rest, pretrained, pooling=pooling, max_length=max_length, image_size=image_size)


def weights_status(name: str) -> str:
    """'installed (pip package)', 'cached', or 'download' — without loading anything."""
    if name in offline.OFFLINE_SOURCES and offline.locate_raw(name) is not None:
        return f"installed ({offline.OFFLINE_SOURCES[name].pip.split()[0]})"
    source, rest = name.split(":", 1)
    if source == "torchvision":
        try:
            import torch
            from torchvision.models import get_model_weights

            url = get_model_weights(rest.split(".")[0]).DEFAULT.url
            if (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)).exists():
                return "cached"
        except Exception:
            return "unknown"
        return "download"
    hub = Path(
        os.environ.get("HF_HUB_CACHE")
        or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    )
    repo = rest if source == "hf" else f"timm/{rest}"
    if (hub / ("models--" + repo.replace("/", "--"))).exists():
        return "cached"
    if name in offline.OFFLINE_SOURCES:
        return f"download (offline: {offline.OFFLINE_SOURCES[name].install_command})"
    return "download"


def list_backbones(modality: str | None = None) -> list[dict[str, object]]:
    rows = []
    for k in KNOWN:
        if modality and k.modality != modality:
            continue
        rows.append(
            {
                "name": k.name,
                "modality": k.modality,
                "params_m": k.params_m,
                "weights": weights_status(k.name),
                "note": k.note,
            }
        )
    return rows
