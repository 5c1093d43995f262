"""Model bundles: what was trained plus everything needed to rebuild it.

A bundle folder holds

* ``headstart.json`` — format version, backbone name, weights hash and provenance,
  preprocessing, the head's configuration, class names, strategy, library versions;
* ``head.safetensors`` — the head's learned arrays;
* ``backbone.safetensors`` — only when layers were fine-tuned (those layers' weights) or the
  backbone was randomly initialised (all of its weights).

Pretrained backbone weights are not copied (they are large and come from the registry); their
hash is checked on load so a bundle never silently runs on different weights.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._env import versions
from .backbones.base import Backbone
from .errors import BackboneError, DataError

BUNDLE_FORMAT = 1
#: ``headstart.json``'s ``kind``: what the bundle holds and which loader reads it.
KIND_CLASSIFICATION = "classification"
KIND_TRANSCRIPTION = "transcription"


def _replace_dir(tmp: Path, dest: Path) -> None:
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{tmp.name[-8:]}")
        dest.rename(old)
    tmp.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_bundle(
    dest: Path,
    *,
    backbone: Backbone,
    head_name: str,
    head: Any,
    classes: list[str],
    modality: str,
    strategy: str = "extract",
    tuned_state: dict[str, Any] | None = None,
    image_size: int | None = None,
    max_length: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a classification bundle to ``dest`` atomically (a new folder swapped in)."""
    from safetensors.numpy import save_file

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        state = {k: np.ascontiguousarray(v) for k, v in head.get_state().items()}
        save_file(state, str(tmp / "head.safetensors"))
        tuned = tuned_state
        if not backbone.weights.pretrained:
            # Random weights cannot be fetched again: keep all of them.
            tuned = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
        if tuned:
            from safetensors.torch import save_file as save_torch

            save_torch(
                {k: v.contiguous() for k, v in tuned.items()}, str(tmp / "backbone.safetensors")
            )
        meta = {
            "format": BUNDLE_FORMAT,
            "kind": KIND_CLASSIFICATION,
            "classes": [str(c) for c in classes],
            "modality": modality,
            "strategy": strategy,
            "backbone": {
                "name": backbone.name,
                "pretrained": backbone.weights.pretrained,
                "weights": backbone.weights.to_dict(),
                "preprocess": backbone.preprocess.to_dict(),
                "pooling": backbone.pooling,
                "feature_dim": backbone.feature_dim,
                "image_size": image_size,
                "max_length": max_length,
                "tuned_params": sorted(tuned) if tuned else [],
            },
            "head": {"name": head_name, "config": head.get_config()},
            "versions": versions(),
            **(extra or {}),
        }
        (tmp / "headstart.json").write_text(json.dumps(meta, indent=2) + "\n")
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def read_meta(path: Path) -> dict[str, Any]:
    meta_file = Path(path) / "headstart.json"
    if not meta_file.exists():
        hint = (
            " (did you mean its model/ sub-folder?)"
            if (Path(path) / "model" / "headstart.json").exists()
            else ""
        )
        raise DataError(f"{path} is not a headstart model bundle: it has no headstart.json{hint}")
    meta = json.loads(meta_file.read_text())
    if meta.get("format", 0) > BUNDLE_FORMAT:
        warnings.warn(
            f"{path} was written by a newer headstart (format {meta['format']}); "
            "loading what this version understands",
            stacklevel=2,
        )
    return meta


@dataclass
class Bundle:
    """What :func:`read_bundle` rebuilt: the metadata, the backbone (tuned layers loaded) and
    the fitted head."""

    meta: dict[str, Any]
    backbone: Backbone
    head: Any


def read_bundle(path: Path) -> Bundle:
    """Read a classification bundle; the backbone's weights must hash as they did in training."""
    from safetensors.numpy import load_file

    from .backbones.registry import load_backbone
    from .heads import make_head

    path = Path(path)
    meta = read_meta(path)
    b = meta["backbone"]
    backbone = load_backbone(
        b["name"],
        pretrained=b["pretrained"],
        image_size=b.get("image_size"),
        max_length=b.get("max_length"),
    )
    if b["pretrained"] and backbone.weights.sha256 != b["weights"]["sha256"]:
        raise BackboneError(
            f"The weights found for {b['name']} ({backbone.weights.source}, sha256 "
            f"{backbone.weights.sha256[:12]}) differ from those this model was trained on "
            f"({b['weights']['source']}, sha256 {b['weights']['sha256'][:12]}). Install the "
            "same weights, or retrain."
        )
    tuned_file = path / "backbone.safetensors"
    if tuned_file.exists():
        from safetensors.torch import load_file as load_torch

        _missing, unexpected = backbone.load_state_dict(load_torch(str(tuned_file)), strict=False)
        if unexpected:
            raise BackboneError(
                f"{tuned_file} holds parameters the backbone lacks: {unexpected[:5]}"
            )
        backbone.mark_tuned()
    backbone.eval()
    head_cls = type(make_head(meta["head"]["name"]))
    head = head_cls.from_state(meta["head"]["config"], load_file(str(path / "head.safetensors")))
    return Bundle(meta, backbone, head)
