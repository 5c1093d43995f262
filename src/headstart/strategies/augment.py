"""Training-time batches: the same preprocessing as extraction, plus default augmentation.

Images: random resized crop (scale 0.5-1, aspect 3/4-4/3, as one batched ``roi_align``) and a
horizontal flip, then the backbone's normalisation. The scale range is narrower than
ImageNet training's 0.08-1: with a few hundred labels, crops that drop most of the object
destroy more signal than they add. Text: no augmentation; the same head+tail tokenisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..backbones.base import AudioPreprocess, ImagePreprocess, TextPreprocess
from ..data.base import Examples
from ..features import preprocess as P

CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    gen: torch.Generator,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
    flip: bool = True,
) -> torch.Tensor:
    """(N,C,H,W) float → (N,C,size,size): one random box per image, resized by roi_align."""
    from torchvision.ops import roi_align

    n, _, h, w = x.shape
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=gen))
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(
        n, generator=gen
    )
    r = torch.exp(log_r)
    bw = torch.sqrt(area * r).clamp(max=w)
    bh = torch.sqrt(area / r).clamp(max=h)
    x0 = (w - bw) * torch.rand(n, generator=gen)
    y0 = (h - bh) * torch.rand(n, generator=gen)
    boxes = torch.stack([torch.arange(n, dtype=torch.float), x0, y0, x0 + bw, y0 + bh], dim=1)
    out = roi_align(
        x, boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True
    )
    if flip:
        mask = torch.rand(n, generator=gen) < 0.5
        out[mask] = out[mask].flip(-1)  # only the chosen images
    return out


def _normalise(x01: torch.Tensor, pre: ImagePreprocess) -> torch.Tensor:
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return ((x01 - mean) / std).contiguous()


class BatchMaker:
    """Builds model inputs for a list of row indices of ``examples``."""

    def __init__(
        self,
        examples: Examples,
        pre: ImagePreprocess | TextPreprocess | AudioPreprocess,
        *,
        train: bool,
        augment: bool,
        seed: int = 0,
    ) -> None:
        self.examples = examples
        self.pre = pre
        self.train = train
        self.augment = augment and train
        self.gen = torch.Generator().manual_seed(seed)
        self._tokens: list[list[int]] | None = None

    def reseed(self, seed: int) -> None:
        self.gen.manual_seed(seed)

    def __call__(self, idx: Sequence[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        idx = [int(i) for i in idx]
        y = torch.as_tensor(self.examples.labels[idx], dtype=torch.long)
        if isinstance(self.pre, TextPreprocess):
            if self._tokens is None:
                self._tokens = P.tokenize([str(t) for t in self.examples.inputs], self.pre)
            pad = P.get_tokenizer(self.pre).pad_token_id or 0
            return P.pad_batch([self._tokens[i] for i in idx], pad), y
        if isinstance(self.pre, AudioPreprocess):
            from ..backbones.audio import audio_batch

            return audio_batch([self.examples.inputs[i] for i in idx], self.pre), y
        return {"pixel_values": self._images(idx)}, y

    def _images(self, idx: list[int]) -> torch.Tensor:
        pre = self.pre
        assert isinstance(pre, ImagePreprocess)
        inputs: Any = self.examples.inputs
        if isinstance(inputs, np.ndarray):
            # grey arrays stay one channel through the crop (half its work); _normalise
            # broadcasts them to the three channels the backbone takes
            raw = P.to_nchw_float(inputs[idx], keep_grey=self.augment)
        else:
            big = ImagePreprocess(pre.resize, pre.resize, pre.mean, pre.std, pre.interpolation)
            raw = P.to_nchw_float(np.stack([P.load_resized_image(inputs[i], big) for i in idx]))
        if not self.augment:
            return P.resize_crop_normalise(raw, pre)
        out = random_resized_crop(raw / 255.0, pre.size, self.gen)
        if pre.interpolation == "bicubic":
            out = out.clamp(0.0, 1.0)
        return _normalise(out, pre)
