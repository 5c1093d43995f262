"""One registry of backbones, queried by name.

The names, their source prefixes and the curated list live in :mod:`headstart.backbones.names`
(re-exported here); this module loads a backbone by name and reports where its weights are.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BackboneError
from . import offline
from .base import Backbone
from .names import DEFAULT_BACKBONE, KNOWN, SOURCES, KnownBackbone, parse_name

__all__ = [
    "DEFAULT_BACKBONE",
    "KNOWN",
    "SOURCES",
    "KnownBackbone",
    "list_backbones",
    "load_backbone",
    "parse_name",
    "weights_status",
]


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
