"""Image backbones from torchvision and timm, behind the :class:`Backbone` contract."""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError, WeightsNotFoundError
from . import offline
from .base import Backbone, ImagePreprocess, LayerGroup, WeightsInfo, state_dict_sha256

log = logging.getLogger("headstart")

_INTERP = {0: "nearest", 2: "bilinear", 3: "bicubic"}


class ImageBackbone(Backbone):
    """``trunk(pixel_values) -> (N, D)`` pooled features, for any torchvision/timm model."""

    preprocess: ImagePreprocess

    def __init__(
        self,
        name: str,
        trunk: nn.Module,
        feature_dim: int,
        preprocess: ImagePreprocess,
        weights: WeightsInfo,
        groups: list[tuple[str, str]] | None = None,
        source_head: nn.Module | None = None,
        source_classes: list[str] | None = None,
        timm_style: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.modality = "image"
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.preprocess = preprocess
        self.weights = weights
        self.pooling = "avg"
        self._patterns = groups
        self._timm_style = timm_style
        # Kept outside the module tree: not a parameter of the backbone, never fine-tuned.
        self.__dict__["source_head"] = source_head.eval() if source_head is not None else None
        self.source_classes = source_classes

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.trunk(pixel_values)

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        s = self.preprocess.size
        return {"pixel_values": torch.randn(batch_size, 3, s, s)}

    def layer_groups(self) -> list[LayerGroup]:
        groups = _timm_groups(self.trunk) if self._timm_style else _torchvision_groups(self.trunk)
        return [LayerGroup(g.name, [f"trunk.{p}" for p in g.params]) for g in groups]


# ----------------------------------------------------------------------------------- groups
def _out_channels(module: nn.Module) -> int | None:
    last = None
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            last = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
    return last


def _torchvision_groups(trunk: nn.Module) -> list[LayerGroup]:
    """Ordered layer groups for torchvision classification models.

    Rule, from input to output: parameters owned directly by the model and its stem form
    ``stem``; a ``features`` (or ``layers``) sequence is split into stages where the number of
    output channels changes (mobilenet, efficientnet, vgg, convnext, swin); ResNet-like
    ``layerN`` children are one group each; ViT encoder layers are one group each; whatever
    follows (final norms, VGG's fully connected layers) is the top group.
    """
    groups: list[LayerGroup] = []
    stem = LayerGroup("stem")

    def add(group: LayerGroup) -> None:
        if group.params:
            groups.append(group)

    direct = [n for n, _ in trunk.named_parameters(recurse=False)]
    stem.params.extend(direct)
    pending_stem = True
    for cname, child in trunk.named_children():
        params = [f"{cname}.{n}" for n, _ in child.named_parameters()]
        if not params:
            continue
        if cname in ("features", "layers") and isinstance(child, nn.Sequential):
            stage_ch: int | None = None
            current: LayerGroup | None = None
            for i, sub in enumerate(child):
                sp = [f"{cname}.{i}.{n}" for n, _ in sub.named_parameters()]
                if not sp:
                    continue
                ch = _out_channels(sub)
                if current is None or ch != stage_ch:
                    if current is not None:
                        add(current)
                    current = LayerGroup(f"{cname}.{i}")
                    stage_ch = ch
                current.params.extend(sp)
            if current is not None:
                add(current)
            pending_stem = False
        elif cname == "encoder" and hasattr(child, "layers"):  # torchvision ViT
            for n, _ in child.named_parameters(recurse=False):
                stem.params.append(f"{cname}.{n}")
            if pending_stem:
                add(stem)
                pending_stem = False
            for lname, layer in child.layers.named_children():
                add(
                    LayerGroup(
                        lname, [f"{cname}.layers.{lname}.{n}" for n, _ in layer.named_parameters()]
                    )
                )
            for sname, sub in child.named_children():
                if sname != "layers":
                    add(
                        LayerGroup(
                            f"{cname}.{sname}",
                            [f"{cname}.{sname}.{n}" for n, _ in sub.named_parameters()],
                        )
                    )
        elif (
            pending_stem
            and not cname.startswith("layer")
            and cname not in ("classifier", "fc", "heads")
        ):
            stem.params.extend(params)
        else:
            if pending_stem:
                add(stem)
                pending_stem = False
            add(LayerGroup(cname, params))
    if pending_stem:
        add(stem)
    elif stem.params and stem not in groups:
        groups.insert(0, stem)
    return groups


def _timm_groups(model: nn.Module) -> list[LayerGroup]:
    """timm's own ``group_matcher(coarse=True)``: stem, stages, then the final norm/conv."""
    from timm.models import group_parameters

    try:
        grouped = group_parameters(model, model.group_matcher(coarse=True))
    except (AttributeError, NotImplementedError):
        return _torchvision_groups(model)
    out = []
    for gid, names in grouped.items():
        first = names[0].split(".")
        label = ".".join(first[:2]) if first[0] in ("blocks", "stages", "layers") else first[0]
        out.append(LayerGroup(f"{gid}:{label}", list(names)))
    return out


# ------------------------------------------------------------------------------ torchvision
def _replace_last_linear(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    last_name, last = None, None
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last_name, last = n, m
    if last is None or last_name is None:
        raise BackboneError(f"{type(model).__name__} has no Linear classifier to remove")
    parent = model
    *path, leaf = last_name.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, leaf, nn.Identity())
    return model, last


def load_torchvision(
    model_name: str, tag: str | None, pretrained: bool, image_size: int | None
) -> ImageBackbone:
    import torchvision
    from torchvision.models import get_model, get_model_weights, list_models

    full = f"torchvision:{model_name}"
    if model_name not in list_models(module=torchvision.models):
        from ..errors import did_you_mean

        raise BackboneError(
            f"Unknown torchvision model {model_name!r}."
            + did_you_mean(model_name, list_models(module=torchvision.models))
            + " Run `headstart backbones` for the known names."
        )
    enum = get_model_weights(model_name)
    state: dict[str, Any] | None = None
    source = "random initialisation"
    file = ""
    weights_enum = None
    if pretrained:
        weights_enum, state, source, file = _torchvision_weights(full, enum, tag)
    model = get_model(model_name, weights=None)
    if state is not None:
        model.load_state_dict(state, strict=True)
    model.eval()
    ref = weights_enum or enum.DEFAULT
    t = ref.transforms()
    crop = int(t.crop_size[0])
    resize = int(t.resize_size[0])
    if image_size is not None:
        resize, crop = round(image_size * resize / crop), image_size
    pre = ImagePreprocess(
        size=crop,
        resize=resize,
        mean=_rgb(t.mean),
        std=_rgb(t.std),
        interpolation=str(t.interpolation.value),
    )
    categories = list(ref.meta.get("categories") or []) or None
    model, head = _replace_last_linear(model)
    feature_dim = head.in_features
    weights = WeightsInfo(
        pretrained=pretrained,
        source=source,
        sha256=state_dict_sha256(model),
        tag=weights_enum.name if weights_enum is not None else "",
        file=file,
    )
    return ImageBackbone(
        full,
        model,
        feature_dim,
        pre,
        weights,
        source_head=copy.deepcopy(head) if pretrained else None,
        source_classes=categories if pretrained else None,
    )


def _torchvision_weights(
    full: str, enum: Any, tag: str | None
) -> tuple[Any, dict[str, Any], str, str]:
    """Find the requested (or best available) weights: offline package, hub cache, download."""
    candidates = [enum[tag]] if tag else [enum.DEFAULT, *[w for w in enum if w != enum.DEFAULT]]
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    off = offline.OFFLINE_SOURCES.get(full)
    for w in candidates:
        fname = os.path.basename(w.url)
        if off is not None and (not off.tag or off.tag == w.name):
            raw = offline.locate_raw(full)
            if raw is not None and raw.name == fname:
                return w, _load_pth(raw), f"torchvision {w.name} from package {off.pip}", str(raw)
        cached = hub_dir / fname
        if cached.exists():
            return w, _load_pth(cached), f"torchvision {w.name} from {hub_dir}", str(cached)
    w = candidates[0]
    try:
        state = torch.hub.load_state_dict_from_url(
            w.url, progress=True, check_hash=True, weights_only=True
        )
    except Exception as exc:  # network errors come in many types
        hint = f" Offline: {off.install_command} (provides {off.tag})." if off else ""
        raise WeightsNotFoundError(
            f"Pretrained weights for {full} ({w.name}) are not installed or cached, and the "
            f"download from {w.url} failed ({type(exc).__name__}: {exc}).{hint} Or copy "
            f"{os.path.basename(w.url)} into {hub_dir}. Use --no-pretrained for random weights."
        ) from exc
    return w, state, f"torchvision {w.name} downloaded", str(hub_dir / os.path.basename(w.url))


def _load_pth(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsNotFoundError(
            f"Weights file {path} could not be read ({exc}). Delete it and reinstall its package."
        ) from exc


# ------------------------------------------------------------------------------------- timm
def load_timm(model_name: str, pretrained: bool, image_size: int | None) -> ImageBackbone:
    import timm
    from timm.data import resolve_data_config

    base = model_name.split(".", 1)[0]
    full = f"timm:{model_name}"
    if not timm.is_model(base):
        from ..errors import did_you_mean

        raise BackboneError(
            f"Unknown timm model {model_name!r}."
            + did_you_mean(base, timm.list_models())
            + " `timm.list_models('pattern*')` lists them."
        )
    kwargs: dict[str, Any] = {}
    source, file = "random initialisation", ""
    if pretrained:
        local = offline.locate(f"timm:{base}") if "." not in model_name else None
        if local is not None:
            off = offline.OFFLINE_SOURCES[f"timm:{base}"]
            kwargs["pretrained_cfg_overlay"] = {"file": str(local)}
            source, file = f"timm {base} from package {off.pip} (imported)", str(local)
        else:
            source = f"timm {model_name} from the Hugging Face hub"
    try:
        model = timm.create_model(model_name, pretrained=pretrained, **kwargs)
    except Exception as exc:
        if not pretrained:
            raise
        source_pkg = offline.OFFLINE_SOURCES.get(f"timm:{base}")
        hint = f" Offline: {source_pkg.install_command}." if source_pkg else ""
        raise WeightsNotFoundError(
            f"Pretrained weights for {full} could not be loaded ({type(exc).__name__}: "
            f"{str(exc)[:200]}).{hint} Use --no-pretrained for random weights."
        ) from exc
    model.eval()
    cfg = resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct", 0.875))
    if image_size is not None:
        size = image_size
    pre = ImagePreprocess(
        size=size,
        resize=round(size / crop_pct),
        mean=_rgb(cfg["mean"]),
        std=_rgb(cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bicubic")),
    )
    head = copy.deepcopy(model.get_classifier()) if pretrained else None
    model.reset_classifier(0)
    num_features: Any = model.num_features
    feature_dim = int(num_features)
    weights = WeightsInfo(
        pretrained=pretrained,
        source=source,
        sha256=state_dict_sha256(model),
        tag=getattr(model, "pretrained_cfg", {}).get("tag", "") or "",
        file=file,
    )
    if isinstance(head, nn.Identity):
        head = None
    return ImageBackbone(
        full,
        model,
        feature_dim,
        pre,
        weights,
        source_head=head,
        source_classes=_imagenet_classes()
        if head is not None and getattr(head, "out_features", 0) == 1000
        else None,
        timm_style=True,
    )


def _rgb(values: Any) -> tuple[float, float, float]:
    r, g, b = (float(v) for v in values)
    return r, g, b


def _imagenet_classes() -> list[str] | None:
    try:
        from torchvision.models import MobileNet_V2_Weights

        return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    except Exception:  # pragma: no cover - torchvision always present
        return None
