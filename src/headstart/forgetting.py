"""Catastrophic-forgetting guard and measures.

Before training, :func:`check_learning_rates` compares the backbone's learning rate with the
head's against the 10-100x rule (ULMFiT, Howard & Ruder 2018; the Keras and fastai guides):
a backbone trained at nearly the head's rate drifts far from its pretrained weights in the
first steps, when the head is still poor and its gradients large.

After training, three measures say how much of the pretrained model survived:

* ``weight_drift``: ||θ - θ₀|| / ||θ₀|| per layer group (0 = untouched);
* ``linear_cka``: linear centred kernel alignment (Kornblith et al., ICML 2019) between
  pretrained and tuned features on a fixed probe batch (1 = same representation);
* ``source_agreement``: for backbones that keep their original classifier (ImageNet),
  the share of probe examples whose original top-1 class is unchanged.

The CKA and the agreement are measured twice for image backbones: on a probe batch of the
user's data (how far the features moved where they are used) and on :func:`source_probe_images`,
crops of natural photographs like the pretraining data (how much of the *source* representation
survived: forgetting proper). Measured on mobilenet_v2 fine-tuned on Fashion-MNIST, the first
was about the same for a guarded run and one at the head's rate (0.64 vs 0.64); see
``benchmarks/RESULTS.md``.

L2-SP (Li et al., ICML 2018) is offered as a regulariser: α/2 · Σ ||θ - θ₀||² over the
trained backbone weights, pulling them toward the pretrained starting point.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from .backbones.base import LayerGroup
from .errors import ConfigError

log = logging.getLogger("headstart")

MIN_RATIO = 10.0
MAX_RATIO = 100.0


class ForgettingWarning(UserWarning):
    """The learning rates put the pretrained weights at risk."""


def check_learning_rates(
    head_lr: float, backbone_lr: float, *, strict: bool = False
) -> dict[str, object]:
    """Check the 10-100x rule; warn (or raise ConfigError when ``strict``) on a risky ratio."""
    ratio = head_lr / backbone_lr if backbone_lr > 0 else float("inf")
    verdict = {
        "head_lr": head_lr,
        "backbone_lr": backbone_lr,
        "ratio": ratio,
        "ok": True,
        "message": "",
    }
    if ratio < MIN_RATIO:
        msg = (
            f"The backbone's learning rate {backbone_lr:g} is only {ratio:.1f}x below the head's "
            f"({head_lr:g}); the rule is {MIN_RATIO:g}-{MAX_RATIO:g}x. At this rate the pretrained "
            "weights will drift far (catastrophic forgetting). Fix: --lr-ratio 30 (the default), "
            "or add --l2sp 0.01 to pull the weights back toward the pretrained ones."
        )
        verdict.update(ok=False, message=msg)
        if strict:
            raise ConfigError(msg + " (refused because of --strict)")
        warnings.warn(msg, ForgettingWarning, stacklevel=2)
    elif ratio > MAX_RATIO * 10:
        verdict["message"] = (
            f"backbone learning rate {ratio:.0f}x below the head's: the unfrozen "
            "layers will barely move"
        )
    return verdict


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two (N, D1), (N, D2) feature matrices of the same N examples."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"CKA needs the same N ≥ 2 examples, got {x.shape} and {y.shape}")
    x = x - x.mean(0)
    y = y - y.mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / denom) if denom > 0 else 0.0


def weight_drift(
    module: nn.Module, reference: dict[str, torch.Tensor], groups: Iterable[LayerGroup]
) -> dict[str, float]:
    """Relative L2 distance of each group's parameters from their reference values."""
    params = dict(module.named_parameters())
    out = {}
    for g in groups:
        num = den = 0.0
        for name in g.params:
            if name not in reference or name not in params:
                continue
            ref = reference[name].float()
            num += float((params[name].detach().float().cpu() - ref).pow(2).sum())
            den += float(ref.pow(2).sum())
        out[g.name] = float(np.sqrt(num / den)) if den > 0 else 0.0
    return out


def source_agreement(before_logits: np.ndarray, after_logits: np.ndarray) -> float:
    """Share of examples whose original-classifier top-1 class is unchanged."""
    return float(np.mean(np.argmax(before_logits, 1) == np.argmax(after_logits, 1)))


#: Side of the square crops of :func:`source_probe_images`, in pixels of the source photo.
SOURCE_CROP = 160


def source_probe_images(n: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` uint8 RGB crops ``(n, 160, 160, 3)`` of natural photographs, for forgetting probes.

    The two photographs scikit-learn ships (``load_sample_image``: a temple, a flower; no
    download) stand in for the natural-photo domain of ImageNet-style pretraining. Crops are
    square, at seeded positions; a backbone's own preprocessing resizes them.
    """
    from sklearn.datasets import load_sample_image

    photos = [load_sample_image(f) for f in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(seed)
    out = np.empty((n, SOURCE_CROP, SOURCE_CROP, 3), dtype=np.uint8)
    for i in range(n):
        img = photos[i % len(photos)]
        y = int(rng.integers(0, img.shape[0] - SOURCE_CROP + 1))
        x = int(rng.integers(0, img.shape[1] - SOURCE_CROP + 1))
        out[i] = img[y : y + SOURCE_CROP, x : x + SOURCE_CROP]
    return out


def source_forgetting(pristine: Any, tuned: Any, n: int = 64) -> dict[str, float]:
    """CKA (and, with an original classifier, top-1 agreement) of ``pristine`` vs ``tuned``
    image backbones on :func:`source_probe_images`. Keys: ``cka_source``,
    ``source_top1_agreement_source``."""
    from .data.base import Examples
    from .features.cache import features_in_memory

    x = source_probe_images(n)
    ex = Examples("image", x, np.zeros(n, dtype=np.int64), ["photo"], name="source probe")
    before = features_in_memory(pristine, ex)
    after = features_in_memory(tuned, ex)
    out = {"cka_source": linear_cka(before, after)}
    agree = classifier_agreement(pristine, before, after)
    if agree is not None:
        out["source_top1_agreement_source"] = agree
    return out


def classifier_agreement(pristine: Any, before: np.ndarray, after: np.ndarray) -> float | None:
    """:func:`source_agreement` of ``pristine``'s original classifier on pretrained (``before``)
    vs tuned (``after``) features; None when the backbone kept no classifier."""
    if getattr(pristine, "source_head", None) is None:
        return None
    with torch.no_grad():
        lb = pristine.source_head(torch.from_numpy(before)).numpy()
        la = pristine.source_head(torch.from_numpy(after)).numpy()
    return source_agreement(lb, la)


class L2SP(nn.Module):
    """α/2 · Σ ||θ - θ₀||² over ``params`` (θ₀ copied at construction)."""

    def __init__(self, named_params: Iterable[tuple[str, nn.Parameter]], alpha: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.params = [p for _, p in named_params]
        self.refs = [p.detach().clone() for p in self.params]

    def forward(self) -> torch.Tensor:
        if self.alpha == 0 or not self.params:
            return torch.zeros(())
        total: Any = sum(
            (p - r.to(p.device)).pow(2).sum() for p, r in zip(self.params, self.refs, strict=True)
        )
        return 0.5 * self.alpha * total
