"""Merging PEFT (LoRA) adapters into their base weights before export.

An exported graph must not depend on PEFT: ONNX Runtime should see plain linear layers whose
weights already include the low-rank update ``W + B @ A * scale``. This step is kept apart
from the exporter on purpose: a bundle without adapters passes through untouched (and PEFT
is not even imported), and whatever way adapters end up inside a backbone (a whole
``PeftModel``, a tuner, or layers injected with ``inject_adapter_in_model``) is handled here
and nowhere else.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["count_adapter_layers", "merge_adapters"]


def _uses_peft(module: nn.Module) -> bool:
    return any(type(m).__module__.startswith("peft.") for m in module.modules())


def count_adapter_layers(module: nn.Module) -> int:
    """How many PEFT adapter layers (``BaseTunerLayer``) ``module`` holds; 0 without PEFT."""
    if not _uses_peft(module):
        return 0
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(isinstance(m, BaseTunerLayer) for m in module.modules())


def merge_adapters(module: nn.Module) -> tuple[nn.Module, int]:
    """Merge every PEFT adapter inside ``module`` into its base weights, in place.

    Returns ``(module, n)``: the module to export (``module`` itself unless it was a
    ``PeftModel``, then its unloaded base model) and the number of adapter layers merged
    (0: nothing changed). Whole PEFT models and tuners inside ``module`` are replaced by
    ``merge_and_unload()``; adapter layers injected without a wrapper are merged and swapped
    for their base layer.
    """
    n = count_adapter_layers(module)
    if n == 0:
        return module, 0
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer

    def unload(m: nn.Module) -> nn.Module:
        if isinstance(m, (PeftModel, BaseTuner)):
            merged: Any = m.merge_and_unload()
            return merged
        if isinstance(m, BaseTunerLayer):
            m.merge()
            return m.get_base_layer()
        for name, child in list(m.named_children()):
            replaced = unload(child)
            if replaced is not child:
                setattr(m, name, replaced)
        return m

    out = unload(module)
    left = count_adapter_layers(out)
    if left:
        raise RuntimeError(f"{left} PEFT adapter layer(s) were left unmerged")  # pragma: no cover
    return out, n
