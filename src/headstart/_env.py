"""Versions and machine facts recorded with every run and printed by `headstart env`."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from typing import Any

_PACKAGES = (
    "headstart",
    "torch",
    "torchvision",
    "timm",
    "transformers",
    "safetensors",
    "scikit-learn",
    "numpy",
    "onnxruntime",
    "accelerate",
    "pillow",
)


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            if name == "headstart":
                from . import __version__

                out[name] = __version__
            else:
                out[name] = "not installed"
    return out


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "machine": platform.machine()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    return info
