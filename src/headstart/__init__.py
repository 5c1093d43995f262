"""headstart: transfer learning that runs the whole ladder and says why.

Public API::

    from headstart import TransferClassifier, load_data, load_backbone, load_model
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BackboneError",
    "DataError",
    "HeadstartError",
    "TransferClassifier",
    "WeightsNotFoundError",
    "__version__",
    "extract_features",
    "list_backbones",
    "load_backbone",
    "load_data",
    "load_model",
]

# Heavy modules (torch, transformers) load on first use, so `import headstart` and the CLI's
# --help stay fast.
_LAZY = {
    "TransferClassifier": ("headstart.estimator", "TransferClassifier"),
    "load_model": ("headstart.estimator", "load_model"),
    "load_backbone": ("headstart.backbones.registry", "load_backbone"),
    "list_backbones": ("headstart.backbones.registry", "list_backbones"),
    "load_data": ("headstart.data.load", "load_data"),
    "extract_features": ("headstart.features.cache", "extract_features"),
}

from .errors import BackboneError, DataError, HeadstartError, WeightsNotFoundError  # noqa: E402

if TYPE_CHECKING:
    from .backbones.registry import list_backbones, load_backbone
    from .data.load import load_data
    from .estimator import TransferClassifier, load_model
    from .features.cache import extract_features


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")
