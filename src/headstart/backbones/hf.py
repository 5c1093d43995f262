"""Hugging Face encoders (text: BERT family; vision: ViT, DINOv2) behind the Backbone contract."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BackboneError, WeightsNotFoundError
from . import offline
from .base import (
    Backbone,
    ImagePreprocess,
    LayerGroup,
    TextPreprocess,
    WeightsInfo,
    groups_from_patterns,
    state_dict_sha256,
)

log = logging.getLogger("headstart")

_VISION_TYPES = {"vit", "dinov2", "deit", "beit", "dinov2_with_registers", "convnext", "swin"}
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def _group_patterns() -> list[tuple[str, str]]:
    return [
        ("embeddings", r"(?:^|\.)embeddings\."),
        ("layer{0}", r"(?:^|\.)(?:encoder\.)?layers?\.(\d+)\."),
        ("final", r"."),
    ]


class HFTextBackbone(Backbone):
    """``encoder(input_ids, attention_mask)`` pooled by ``mean`` (masked) or ``cls``."""

    def __init__(
        self,
        name: str,
        encoder: nn.Module,
        preprocess: TextPreprocess,
        weights: WeightsInfo,
        pooling: str,
    ) -> None:
        super().__init__()
        self.name = name
        self.modality = "text"
        self.encoder = encoder
        config: Any = encoder.config
        self.feature_dim = int(config.hidden_size)
        self.preprocess = preprocess
        self.weights = weights
        if pooling not in ("mean", "cls"):
            raise BackboneError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        n = 16
        return {
            "input_ids": torch.randint(0, self._vocab_size(), (batch_size, n)),
            "attention_mask": torch.ones(batch_size, n, dtype=torch.long),
        }

    def layer_groups(self) -> list[LayerGroup]:
        return groups_from_patterns(self, _group_patterns())

    def _vocab_size(self) -> int:
        config: Any = self.encoder.config
        return int(config.vocab_size)


class HFVisionBackbone(Backbone):
    """ViT-style encoder; pooled as the final CLS token, or CLS ⊕ mean patch token."""

    preprocess: ImagePreprocess

    def __init__(
        self,
        name: str,
        encoder: nn.Module,
        preprocess: ImagePreprocess,
        weights: WeightsInfo,
        pooling: str,
    ) -> None:
        super().__init__()
        self.name = name
        self.modality = "image"
        self.encoder = encoder
        config: Any = encoder.config
        hidden = int(config.hidden_size)
        self.feature_dim = hidden * (2 if pooling == "cls+mean" else 1)
        self.preprocess = preprocess
        self.weights = weights
        if pooling not in ("cls", "mean", "cls+mean"):
            raise BackboneError(f"pooling must be 'cls', 'mean' or 'cls+mean', got {pooling!r}")
        self.pooling = pooling

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(pixel_values=pixel_values).last_hidden_state
        cls, patches = hidden[:, 0], hidden[:, 1:].mean(1)
        if self.pooling == "cls":
            return cls
        if self.pooling == "mean":
            return patches
        return torch.cat([cls, patches], dim=1)

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        s = self.preprocess.size
        return {"pixel_values": torch.randn(batch_size, 3, s, s)}

    def layer_groups(self) -> list[LayerGroup]:
        return groups_from_patterns(self, _group_patterns())


def _from_pretrained(cls: Any, where: str | Path, full: str, **kw: Any) -> Any:
    try:
        return cls.from_pretrained(str(where), trust_remote_code=False, **kw)
    except OSError as exc:
        off = offline.OFFLINE_SOURCES.get(full)
        hint = f" Offline: {off.install_command}." if off else ""
        raise WeightsNotFoundError(
            f"Could not load {full} from {where} ({str(exc).splitlines()[0][:200]}).{hint} "
            "Or pass a local folder holding config.json and model.safetensors."
        ) from exc


def load_hf(
    repo: str,
    pretrained: bool,
    *,
    pooling: str | None = None,
    max_length: int | None = None,
    image_size: int | None = None,
) -> Backbone:
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    # The load report lists the unused pooler of sentence encoders as "UNEXPECTED": noise.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    full = f"hf:{repo}"
    where, source = offline.resolve_hf_dir(repo, pretrained)
    config = _from_pretrained(AutoConfig, where, full)
    if config.model_type == "whisper":
        from .audio import load_whisper

        return load_whisper(where, pretrained, name=full, source=source, pooling=pooling)
    if pretrained:
        model = _from_pretrained(AutoModel, where, full, **_no_pooler(config))
    else:
        model = AutoModel.from_config(config, **_no_pooler(config))
        source = "random initialisation"
    model.eval()
    weights = WeightsInfo(
        pretrained=pretrained, source=source, sha256=state_dict_sha256(model), file=str(where)
    )
    if config.model_type in _VISION_TYPES or (
        hasattr(config, "num_channels") and not hasattr(config, "vocab_size")
    ):
        pre = _image_preprocess(where, config, image_size)
        pool = pooling or ("cls+mean" if config.model_type.startswith("dinov2") else "cls")
        return HFVisionBackbone(full, model, pre, weights, pool)
    pool = pooling or _st_pooling(where) or "mean"
    tok = str(where)
    limit = int(getattr(config, "max_position_embeddings", 512) or 512)
    if max_length is None:
        max_length = _default_window(where, limit)
    tpre = TextPreprocess(tokenizer=tok, max_length=min(max_length, limit), truncation="head+tail")
    return HFTextBackbone(full, model, tpre, weights, pool)


def _no_pooler(config: Any) -> dict[str, Any]:
    # BERT-style poolers are trained for next-sentence prediction (or not at all): unused here.
    return (
        {"add_pooling_layer": False}
        if config.model_type in ("bert", "roberta", "vit", "xlm-roberta", "mpnet")
        else {}
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _st_pooling(where: str | Path) -> str | None:
    cfg = _read_json(Path(where) / "1_Pooling" / "config.json") if isinstance(where, Path) else None
    if not cfg:
        return None
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    return "mean" if cfg.get("pooling_mode_mean_tokens") else None


def _default_window(where: str | Path, limit: int) -> int:
    # The model's own sentence window if it declares one, else 256 tokens: long enough for
    # most reviews with head+tail truncation, at a quarter of the cost of 512.
    return min(_st_max_length(where) or min(limit, 256), limit)


def text_window(repo: str) -> int | None:
    """The token window :func:`load_hf` gives text model ``repo`` by default, read from its
    installed files without loading it; None when it is not installed locally (a hub id
    not yet downloaded) or is not a text model."""
    where, _ = offline.resolve_hf_dir(repo, True)
    cfg = _read_json(Path(where) / "config.json") if isinstance(where, Path) else None
    if not cfg or "vocab_size" not in cfg or cfg.get("model_type") == "whisper":
        return None
    return _default_window(where, int(cfg.get("max_position_embeddings") or 512))


def _st_max_length(where: str | Path) -> int | None:
    cfg = _read_json(Path(where) / "sentence_bert_config.json") if isinstance(where, Path) else None
    return int(cfg["max_seq_length"]) if cfg and "max_seq_length" in cfg else None


def _image_preprocess(where: str | Path, config: Any, image_size: int | None) -> ImagePreprocess:
    proc = _read_json(Path(where) / "preprocessor_config.json") if isinstance(where, Path) else None
    proc = proc or {}
    size_cfg = proc.get("size") or {}
    crop_cfg = proc.get("crop_size") or {}
    default = int(getattr(config, "image_size", 224))
    crop = int(crop_cfg.get("height", default)) if isinstance(crop_cfg, dict) else int(crop_cfg)
    if isinstance(size_cfg, dict):
        resize = int(size_cfg.get("shortest_edge") or size_cfg.get("height") or crop)
    else:
        resize = int(size_cfg or crop)
    if not proc.get("do_center_crop", True):
        crop = resize
    if image_size is not None:
        resize, crop = round(image_size * resize / crop), image_size
    return ImagePreprocess(
        size=crop,
        resize=resize,
        mean=tuple(proc.get("image_mean", (0.5, 0.5, 0.5))),
        std=tuple(proc.get("image_std", (0.5, 0.5, 0.5))),
        interpolation=_RESAMPLE.get(int(proc.get("resample", 2)), "bilinear"),
    )
