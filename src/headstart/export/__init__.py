"""Exporting a trained model for use without headstart: ``headstart export``.

:func:`export_bundle` writes one ONNX graph from normalised input to class probabilities
(backbone with tuned layers and merged adapters, head, softmax), the preprocessing recipe
beside it, optionally an int8 variant, and a parity check against PyTorch on real inputs.
Modules: :mod:`.onnx_export` (the graph and the files), :mod:`.adapters` (LoRA merging),
:mod:`.recipe` (preprocessing JSON, tokenizer files), :mod:`.parity` (the comparison).
"""

from __future__ import annotations

from .adapters import count_adapter_layers, merge_for_export
from .onnx_export import FORMATS, ExportResult, ProbabilityGraph, check_out, export_bundle
from .parity import ParityReport

__all__ = [
    "FORMATS",
    "ExportResult",
    "ParityReport",
    "ProbabilityGraph",
    "check_out",
    "count_adapter_layers",
    "export_bundle",
    "merge_for_export",
]
