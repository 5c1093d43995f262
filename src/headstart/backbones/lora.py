"""LoRA adapters (through PEFT) on the transformer of a backbone: attach, save, load, merge.

LoRA (Hu et al., ICLR 2022) freezes every pretrained weight and learns a low-rank update
``ΔW = (alpha / rank) · B A`` beside chosen linear layers; ``B`` starts at zero, so an adapted
backbone computes exactly the pretrained features until it trains. Only the adapters and the
head train (well under 5% of the parameters of a BERT-like encoder at rank 8) and only the
adapters need saving: PEFT's own format (``adapter_config.json`` + ``adapter_model.safetensors``),
which PEFT and the export code can read back onto the pristine weights from the registry.

The transformer of every Hugging Face backbone (BERT-like text encoders, ViT / DINOv2, the
Whisper encoder) is its ``encoder`` attribute; it is wrapped in place by
``peft.get_peft_model``, so the backbone keeps its contract (``forward``, ``layer_groups``,
``preprocess``) and the training loop, the feature cache and the bundle need no other code
path. That knowledge of a backbone's internals stays in this package (see ``base``).
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import BackboneError, ConfigError
from .base import Backbone, LayerGroup

__all__ = [
    "DEFAULT_TARGETS",
    "LoraSpec",
    "adapter_groups",
    "attach_lora",
    "has_adapter",
    "load_adapter",
    "merge_adapter",
    "save_adapter",
]

#: ``--lora-targets auto``: the attention query and value projections (the LoRA paper's
#: choice), found by their names among the transformer's linear layers, in this order: BERT,
#: RoBERTa and ViT call them query/value; DINOv2 (transformers 5) and Whisper q_proj/v_proj;
#: MPNet q/v. Naming layers, not model types, keeps working when a library renames a class.
DEFAULT_TARGETS: tuple[tuple[str, str], ...] = (
    ("query", "value"),
    ("q_proj", "v_proj"),
    ("q", "v"),
)
#: Marker in the names of adapter parameters (``...query.lora_A.default.weight``).
LORA_MARKER = "lora_"


@dataclass(frozen=True)
class LoraSpec:
    """What to attach: rank, scaling numerator and target module names ("auto" or a list)."""

    rank: int = 8
    alpha: int = 16
    targets: str = "auto"
    dropout: float = 0.0

    @classmethod
    def from_config(cls, cfg: Any) -> LoraSpec:
        """From a :class:`~headstart.config.FinetuneConfig` (``lora_rank``, ...)."""
        return cls(rank=cfg.lora_rank, alpha=cfg.lora_alpha, targets=cfg.lora_targets)


def _encoder(backbone: Backbone) -> nn.Module:
    enc = getattr(backbone, "encoder", None)
    if not isinstance(enc, nn.Module) or not hasattr(enc, "config"):
        raise BackboneError(
            f"LoRA needs a transformer backbone (hf:... text encoders, ViT/DINOv2, the Whisper "
            f"encoder); {backbone.name} is not one. Use --peft none, or a hf: backbone."
        )
    return enc


def has_adapter(backbone: Backbone) -> bool:
    """Whether a PEFT adapter is attached to ``backbone``'s transformer."""
    if "peft" not in sys.modules:  # nothing attached one; saves importing PEFT (~1 s)
        return False
    from peft import PeftModel

    return isinstance(getattr(backbone, "encoder", None), PeftModel)


def _targets(encoder: nn.Module, spec: LoraSpec) -> list[str]:
    if spec.targets != "auto":
        names = [t.strip() for t in spec.targets.split(",") if t.strip()]
        if not names:
            raise ConfigError(
                f"--lora-targets must be auto or module names separated by commas "
                f"(e.g. query,value); got {spec.targets!r}."
            )
        return names
    linear = {n.rsplit(".", 1)[-1] for n, m in encoder.named_modules() if isinstance(m, nn.Linear)}
    for pair in DEFAULT_TARGETS:
        if set(pair) <= linear:
            return list(pair)
    model_type = str(getattr(encoder.config, "model_type", ""))
    raise ConfigError(
        f"--lora-targets auto found no attention query/value projections in this {model_type!r} "
        f"model (its linear layers: {', '.join(sorted(linear)[:12])}); pass the names of the "
        "layers to adapt, e.g. --lora-targets query,value."
    )


def attach_lora(backbone: Backbone, spec: LoraSpec) -> Backbone:
    """Wrap ``backbone``'s transformer in a fresh LoRA adapter, in place; returns ``backbone``.

    Every pretrained parameter is frozen (``requires_grad=False``); only the adapters train.
    Until they do, features are identical to the pretrained backbone's (``B = 0``).
    """
    from peft import LoraConfig, get_peft_model

    if has_adapter(backbone):
        raise BackboneError(f"{backbone.name} already carries an adapter; attach to a fresh copy.")
    if not backbone.weights.pretrained:
        raise ConfigError(
            f"LoRA adapts pretrained weights, and {backbone.name} is randomly initialised here "
            "(--no-pretrained): frozen random weights are not worth adapting. Train the whole "
            "network instead: --peft none --unfreeze -1."
        )
    encoder = _encoder(backbone)
    targets = _targets(encoder, spec)
    config = LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets
    )
    try:
        wrapped = get_peft_model(encoder, config)
    except ValueError as exc:  # PEFT: "Target modules {...} not found in the base model"
        raise ConfigError(
            f"--lora-targets {spec.targets} ({', '.join(targets)}) matches no linear layer of "
            f"{backbone.name} ({str(exc).splitlines()[0][:200]}). Pass names of its linear "
            "layers, e.g. query,value for BERT or q_proj,v_proj for Whisper."
        ) from exc
    setattr(backbone, "encoder", wrapped)  # noqa: B010 (Backbone declares no encoder)
    return backbone


def adapter_groups(backbone: Backbone) -> list[LayerGroup]:
    """The adapter parameters of ``backbone`` as one layer group named ``lora``."""
    names = [n for n, _ in backbone.named_parameters() if LORA_MARKER in n]
    if not names:
        raise BackboneError(f"{backbone.name} carries no LoRA adapter (attach_lora first).")
    return [LayerGroup("lora", names)]


def describe_adapter(backbone: Backbone) -> dict[str, Any]:
    """Rank, alpha, target modules and trainable share, for reports and ``headstart.json``."""
    encoder: Any = _encoder(backbone)
    config = encoder.peft_config["default"]
    n_adapter = sum(p.numel() for g in adapter_groups(backbone) for p in _params(backbone, g))
    n_total = sum(p.numel() for p in backbone.parameters())
    return {
        "method": "lora",
        "rank": int(config.r),
        "alpha": int(config.lora_alpha),
        "targets": sorted(config.target_modules),
        "n_adapter_params": n_adapter,
        "n_base_params": n_total - n_adapter,
        "folder": "adapter",
    }


def _params(backbone: Backbone, group: LayerGroup) -> list[nn.Parameter]:
    params = dict(backbone.named_parameters())
    return [params[n] for n in group.params]


def save_adapter(backbone: Backbone, folder: Path) -> None:
    """Write the adapter in PEFT's format (``adapter_config.json``, ``adapter_model.safetensors``)."""
    encoder: Any = _encoder(backbone)
    encoder.save_pretrained(str(folder), safe_serialization=True)


def load_adapter(backbone: Backbone, folder: Path) -> Backbone:
    """Attach the adapter saved in ``folder`` to a pristine ``backbone`` (offline), frozen."""
    from peft import PeftModel

    if not (Path(folder) / "adapter_config.json").exists():
        raise BackboneError(
            f"{folder} holds no adapter_config.json: the bundle's adapter is incomplete. "
            "Copy the whole bundle folder, or retrain."
        )
    encoder = _encoder(backbone)
    try:
        wrapped = PeftModel.from_pretrained(encoder, str(folder), is_trainable=False)
    except (OSError, ValueError, RuntimeError) as exc:
        raise BackboneError(
            f"Could not apply the adapter in {folder} to {backbone.name} "
            f"({str(exc).splitlines()[0][:200]}): it was trained on another backbone, or "
            "the files are damaged. Retrain, or load it with the backbone it was trained on."
        ) from exc
    setattr(backbone, "encoder", wrapped.eval())  # noqa: B010
    backbone.mark_tuned()
    return backbone


def merge_adapter(backbone: Backbone) -> Backbone:
    """A copy of ``backbone`` with the adapter merged into the base weights (for export).

    PEFT's ``merge_and_unload``: ``W ← W + (alpha / rank) · B A`` for each adapted layer, and
    the plain transformer back in place of the wrapper, so the copy has the pristine backbone's
    parameter names and the adapted one's outputs (up to float rounding).
    """
    if not has_adapter(backbone):
        raise BackboneError(f"{backbone.name} carries no adapter to merge.")
    merged = copy.deepcopy(backbone)
    wrapped: Any = _encoder(merged)
    setattr(merged, "encoder", wrapped.merge_and_unload())  # noqa: B010
    merged.mark_tuned()
    return merged.eval()
