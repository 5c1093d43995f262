"""Merging a LoRA adapter into its base weights before export.

An exported graph must not depend on PEFT: ONNX Runtime should see plain linear layers whose
weights already include the low-rank update ``W + (alpha / rank) · B A``. This step is kept
apart from the exporter on purpose: a bundle without an adapter passes through untouched (and
PEFT is not even imported), and the merge itself is :func:`headstart.backbones.lora.merge_adapter`,
the one place that knows where an adapter sits inside a backbone.
"""

from __future__ import annotations

from torch import nn

from ..backbones.base import Backbone
from ..errors import BackboneError

__all__ = ["count_adapter_layers", "merge_for_export"]


def count_adapter_layers(module: nn.Module) -> int:
    """How many PEFT adapter layers (``BaseTunerLayer``) ``module`` holds; 0 without PEFT."""
    if not any(type(m).__module__.startswith("peft.") for m in module.modules()):
        return 0
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(m, BaseTunerLayer) for m in module.modules())


def merge_for_export(backbone: Backbone) -> tuple[Backbone, int]:
    """``(backbone to export, adapter layers merged)``: ``backbone`` itself and 0 when it has
    no adapter, else a merged copy (the adapted original stays the parity reference)."""
    from ..backbones.lora import has_adapter, merge_adapter

    if not has_adapter(backbone):
        return backbone, 0
    n = count_adapter_layers(backbone)
    merged = merge_adapter(backbone)
    left = count_adapter_layers(merged)
    if left:
        raise BackboneError(
            f"{left} of {n} LoRA adapter layers of {backbone.name} were left unmerged; the "
            "exported graph would need PEFT. Report this with the bundle's headstart.json."
        )
    return merged, n
