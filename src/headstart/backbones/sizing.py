"""Input resolution from the data: small images are not blown up to the pretraining size.

A convolutional backbone pretrained at 224 px accepts any input size; its cost grows with the
number of pixels (a 96-px input costs about a fifth of a 224-px one). Images whose native
size is far below the pretraining size (8 x 8 digits, 28 x 28 Fashion-MNIST) are upsampled
anyway, and past a point the extra pixels carry no information, only cost. The rule
(:func:`input_size`)::

    size = clamp(round_up(UPSAMPLE x native, 32), MIN_SIZE, pretraining size)

* ``UPSAMPLE`` = 8 and ``MIN_SIZE`` = 96, measured with ``benchmarks/bench_resolution.py``
  (mobilenet_v2, 1,000 labels, logistic head; numbers in benchmarks/RESULTS.md, issue 11):
  on the 28-px sets (Fashion-MNIST, MNIST) every size below 224 (8x) lost accuracy beyond
  one standard error (-0.8 to -2.4 points at 96-160 px, -5 at 64); on the 8-px digits,
  96 px (12x) and above matched 224 px within 0.3 points while 64 px lost 2.2. So the
  object must reach about 96 px, and an image is worth upsampling about 8x, whichever is
  larger. The 28-px sets therefore stay at 224; digits extract at 96 px, a fifth of the cost.
* Images at or above the pretraining size use the pretraining size, as before.
* Backbones with a fixed token grid (ViT, DeiT, Swin, DINOv2, ...) keep their own size:
  their position embeddings were learnt for it.

``--image-size`` overrides the rule.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["MIN_SIZE", "UPSAMPLE", "fixed_size", "input_size", "load_sized", "native_size"]

UPSAMPLE = 8
MIN_SIZE = 96
#: Name fragments of backbones whose input size is fixed by their position embeddings.
_FIXED = ("vit", "deit", "swin", "beit", "eva", "dinov2", "maxvit")


def fixed_size(backbone_name: str) -> bool:
    """True for transformer backbones whose input size should not change."""
    name = backbone_name.lower()
    return any(f in name for f in _FIXED)


def native_size(examples: Any, sample: int = 64) -> int | None:
    """The median longer side of up to ``sample`` images of ``examples`` (None: not images)."""
    if getattr(examples, "modality", None) != "image" or len(examples) == 0:
        return None
    inputs = examples.inputs
    if isinstance(inputs, np.ndarray):
        return int(max(inputs.shape[1], inputs.shape[2]))
    from PIL import Image

    idx = np.linspace(0, len(inputs) - 1, min(sample, len(inputs))).astype(int)
    sides = []
    for i in idx:
        try:
            with Image.open(inputs[i]) as im:  # reads the header only
                sides.append(max(im.size))
        except OSError:
            continue  # unreadable files are reported by the data checks
    return int(np.median(sides)) if sides else None


def input_size(native: int | None, pretraining: int, backbone_name: str = "") -> int:
    """The input size the rule above gives for images of ``native`` px on this backbone."""
    if native is None or fixed_size(backbone_name):
        return pretraining
    size = 32 * math.ceil(UPSAMPLE * native / 32)
    return int(min(pretraining, max(MIN_SIZE, size)))


def load_sized(name: str, bb: Any, native: int | None) -> tuple[Any, int | None]:
    """Load ``name`` at the input size the data calls for; ``bb`` is the fit's
    :class:`~headstart.config.BackboneConfig` (its ``image_size`` overrides the rule).
    Returns the backbone and its input size (None for text and audio)."""
    from .registry import load_backbone

    kw: dict[str, Any] = {"pretrained": bb.pretrained, "max_length": bb.max_length}
    backbone = load_backbone(name, image_size=bb.image_size, **kw)
    if backbone.modality != "image":
        return backbone, None
    size = int(backbone.preprocess.size)
    if bb.image_size is None:
        planned = input_size(native, size, name)
        if planned != size:
            backbone = load_backbone(name, image_size=planned, **kw)
            size = planned
    return backbone, size
