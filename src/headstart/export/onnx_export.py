"""`headstart export --format onnx`: one graph from normalised input to class probabilities.

The graph is the bundle's backbone (fine-tuned layers loaded, PEFT adapters merged) followed
by the head's own torch form (standardisation, its linear layer(s)) and a softmax, exported
with :func:`headstart.features.onnx_runtime.export_onnx` (the same exporter, dynamic-axis
check and atomic write as the extraction engine). Beside ``model.onnx`` go

* ``model.preprocess.json``: the preprocessing recipe and the labels (:mod:`.recipe`);
* ``model.tokenizer/`` (text models): the tokenizer files, truncation and padding set;
* ``model.int8.onnx`` (``int8=True``): weights dynamically quantised to int8 by ONNX Runtime;
* ``model.parity.json``: the comparison with PyTorch on real inputs (:mod:`.parity`).

Everything is written to a temporary folder beside ``out`` and moved into place at the end,
so a failed export leaves an earlier one intact. Audio models are refused for now: the
graph would start at log-mel features, which cannot be computed with ONNX Runtime alone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._io import atomic_write_json
from ..backbones.base import Backbone, TextPreprocess
from ..data.base import Examples
from ..errors import ConfigError, did_you_mean
from .adapters import merge_for_export

__all__ = ["FORMATS", "ExportResult", "ProbabilityGraph", "check_out", "export_bundle"]

log = logging.getLogger("headstart")

#: What ``headstart export --format`` accepts.
FORMATS = ("onnx",)
OUTPUT_NAME = "probabilities"


class ProbabilityGraph(nn.Module):
    """Normalised input → backbone features → head logits → softmax probabilities."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.backbone(*inputs)), dim=-1)


@dataclass
class ExportResult:
    """Paths written by :func:`export_bundle` and the parity figures recorded beside them."""

    model: Path
    recipe: Path
    parity_file: Path
    parity: dict[str, Any]
    int8: Path | None = None
    tokenizer: Path | None = None
    adapters_merged: int = 0
    export_seconds: float = 0.0


def sidecars(out: Path) -> dict[str, Path]:
    """The files written beside ``out`` (``model.onnx`` → ``model.int8.onnx`` ...)."""
    stem = out.name[: -len(".onnx")] if out.name.endswith(".onnx") else out.name
    return {
        "int8": out.with_name(f"{stem}.int8.onnx"),
        "recipe": out.with_name(f"{stem}.preprocess.json"),
        "parity": out.with_name(f"{stem}.parity.json"),
        "tokenizer": out.with_name(f"{stem}.tokenizer"),
    }


def check_out(out: str | os.PathLike[str]) -> Path:
    """``out`` as a Path, after checking it names a ``.onnx`` file in a writable folder."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"--out {path} is a folder; give a file name inside it, e.g. {path / 'model.onnx'}"
        )
    if path.suffix != ".onnx":
        raise ConfigError(
            f"--out must name an .onnx file (e.g. {path.with_suffix('.onnx').name}). "
            f"Got {os.fspath(out)!r} instead."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"cannot write --out {path}: {exc.strerror or exc} ({exc.filename or path.parent}). "
            "Give a path in a folder you can write to."
        ) from exc
    return path


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(
            f"--format must be one of {', '.join(FORMATS)}. Got {fmt!r} instead."
            + did_you_mean(fmt, FORMATS)
        )


def check_exportable(meta: dict[str, Any], model_dir: Path) -> None:
    """Refuse bundles whose export is not supported, saying what to use instead."""
    kind = meta.get("kind", "classification")
    if kind != "classification":
        raise ConfigError(
            f"{model_dir} is a {kind} model; export supports classification models only. "
            "Use `headstart transcribe` to run it."
        )
    if meta.get("modality") == "audio":
        raise ConfigError(
            f"{model_dir} is an audio model ({meta['backbone']['name']}); ONNX export of audio "
            "models is not supported yet (the graph would start at log-mel features, which "
            "ONNX Runtime alone cannot compute). Use `headstart predict` meanwhile."
        )
    contender = meta.get("contender") or {}
    if contender.get("chosen") in ("baseline", "stack"):
        what = (
            "the non-transfer baseline"
            if contender["chosen"] == "baseline"
            else "a stack of the transfer model and the non-transfer baseline"
        )
        raise ConfigError(
            f"{model_dir} predicts with {what} ({contender.get('baseline')}), which `headstart "
            "auto` kept because transfer alone did not pay on validation; the ONNX graph "
            "covers the transfer model (backbone + head) only. Serve this bundle with "
            "`headstart serve` / `headstart predict`, or refit with --no-ladder-contend to "
            "export a transfer-only model."
        )


def _quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of the matrix products' weights (activations at run time).

    Only ``MatMul`` and ``Gemm`` are quantised: that is all of a transformer's linear layers,
    and for convolutional networks the head. Quantising convolutions too (``ConvInteger``)
    was measured on mobilenet_v2 (digits, 200 images, 2 CPU cores): accuracy 0.995 → 0.81
    and 8x slower than float32, per-channel or not; ONNX Runtime's guidance is static
    quantisation for CNNs, dynamic for transformers.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    quiet = _DropAdvice()
    root.addFilter(quiet)  # its "consider pre-processing" advice goes to the root logger
    try:
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
        )
    finally:
        root.removeFilter(quiet)


class _DropAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def export_bundle(
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fmt: str = "onnx",
    int8: bool = False,
    examples: Examples | None = None,
    source: str | None = None,
    labels: np.ndarray | None = None,
    batch_size: int = 32,
    exporter: Any = "auto",
    atol: float = 1e-4,
) -> ExportResult:
    """Export the bundle at ``model_dir`` to ``out`` (an ``.onnx`` file) and check parity.

    ``examples`` are the real inputs of the parity check (default: photographs or sample
    sentences, see :func:`.parity.default_examples`); ``labels`` their true class indices
    into the model's classes, when known, to also report accuracies. The result's
    ``parity["ok"]`` says whether the float32 graph matched within ``atol``.
    """
    from ..bundle import read_bundle, read_meta
    from ..features.onnx_runtime import (
        IMAGE_DYNAMIC_AXES,
        TEXT_DYNAMIC_AXES,
        OnnxFeatureRunner,
        export_onnx,
    )
    from .parity import compare, default_examples
    from .recipe import build_recipe, write_tokenizer

    check_format(fmt)
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    check_exportable(meta, model_dir)
    out = check_out(out)
    side = sidecars(out)
    bundle = read_bundle(model_dir)
    backbone: Backbone = bundle.backbone.eval()
    graph_backbone, merged = merge_for_export(backbone)
    if merged:
        log.info("merged %d LoRA adapter layer(s) into the exported weights", merged)
    graph = ProbabilityGraph(graph_backbone, bundle.head.to_torch()).eval()
    example = backbone.example_inputs(batch_size=2)
    input_names = list(example)
    known_axes = {**IMAGE_DYNAMIC_AXES, **TEXT_DYNAMIC_AXES}
    axes = {n: known_axes.get(n, {0: "batch"}) for n in input_names}

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        t0 = time.perf_counter()
        tmp_model = tmp / out.name
        export_onnx(
            graph,
            tuple(example.values()),
            tmp_model,
            input_names,
            axes,
            exporter=exporter,
            output_name=OUTPUT_NAME,
        )
        export_s = time.perf_counter() - t0
        runners = {"onnx": OnnxFeatureRunner(tmp_model)}
        if int8:
            _quantize_int8(tmp_model, tmp / side["int8"].name)
            runners["int8"] = OnnxFeatureRunner(tmp / side["int8"].name)
        tok_info: dict[str, Any] = {}
        if isinstance(backbone.preprocess, TextPreprocess):
            tok_info = write_tokenizer(backbone.preprocess, tmp / side["tokenizer"].name)
        recipe = build_recipe(
            meta,
            backbone,
            model_file=out.name,
            input_names=input_names,
            int8_file=side["int8"].name if int8 else None,
            tokenizer_dir=side["tokenizer"].name if tok_info else None,
        )
        if tok_info:
            recipe["text"].update(tok_info)
        if examples is None:
            examples, source = default_examples(meta["modality"], list(meta["classes"]))
            labels = None
        if examples.modality != meta["modality"]:
            raise ConfigError(
                f"the parity data holds {examples.modality} examples but {model_dir} is a "
                f"{meta['modality']} model; give --data with {meta['modality']} examples"
            )
        report = compare(
            backbone,
            bundle.head,
            runners,
            examples,
            source=source or examples.name or "given examples",
            labels=labels,
            batch_size=batch_size,
        )
        parity = report.summary(atol=atol)
        parity.update(
            {
                "model": out.name,
                "bundle": str(model_dir.resolve()),
                "adapters_merged": merged,
                "export_seconds": round(export_s, 2),
            }
        )
        atomic_write_json(tmp / side["recipe"].name, recipe)
        atomic_write_json(tmp / side["parity"].name, parity)
        _move_into_place(tmp, out, side, int8=int8, text=bool(tok_info))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(
        model=out,
        recipe=side["recipe"],
        parity_file=side["parity"],
        parity=parity,
        int8=side["int8"] if int8 else None,
        tokenizer=side["tokenizer"] if tok_info else None,
        adapters_merged=merged,
        export_seconds=export_s,
    )


def _move_into_place(
    tmp: Path, out: Path, side: dict[str, Path], *, int8: bool, text: bool
) -> None:
    """Swap the new files in: tokenizer, graphs, then the recipe and parity JSON last.

    A stale ``.int8.onnx`` or tokenizer folder from an earlier export is removed, so the
    files beside ``out`` always belong together."""
    if text:
        if side["tokenizer"].exists():  # removed with tmp
            side["tokenizer"].rename(tmp / ".old-tokenizer")
        (tmp / side["tokenizer"].name).rename(side["tokenizer"])
    elif side["tokenizer"].is_dir():
        shutil.rmtree(side["tokenizer"])
    if int8:
        os.replace(tmp / side["int8"].name, side["int8"])
    elif side["int8"].exists():
        side["int8"].unlink()
    os.replace(tmp / out.name, out)
    os.replace(tmp / side["recipe"].name, side["recipe"])
    os.replace(tmp / side["parity"].name, side["parity"])
