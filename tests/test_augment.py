"""Training batches: the augmentation is seeded, grey images take the cheap path unchanged."""

from __future__ import annotations

import numpy as np
import torch

from headstart.backbones.base import ImagePreprocess
from headstart.data.base import Examples
from headstart.strategies.augment import BatchMaker

PRE = ImagePreprocess(112, 112, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")


def _examples(x: np.ndarray) -> Examples:
    return Examples("image", x, np.arange(len(x)) % 2, ["a", "b"], name="grey")


def test_grey_batches_equal_the_same_images_given_as_rgb():
    x = np.random.default_rng(0).integers(0, 255, size=(40, 28, 28), dtype=np.uint8)
    grey = BatchMaker(_examples(x), PRE, train=True, augment=True, seed=3)
    rgb = BatchMaker(
        _examples(np.repeat(x[..., None], 3, -1)), PRE, train=True, augment=True, seed=3
    )
    for _ in range(3):  # several batches: the generators advance alike
        (g, yg), (c, yc) = grey(list(range(32))), rgb(list(range(32)))
        assert g["pixel_values"].shape == (32, 3, 112, 112)
        assert torch.equal(g["pixel_values"], c["pixel_values"]) and torch.equal(yg, yc)


def test_augmentation_is_seeded_and_differs_from_the_plain_batch():
    x = np.random.default_rng(1).integers(0, 255, size=(16, 28, 28), dtype=np.uint8)
    a = BatchMaker(_examples(x), PRE, train=True, augment=True, seed=5)(list(range(16)))[0]
    b = BatchMaker(_examples(x), PRE, train=True, augment=True, seed=5)(list(range(16)))[0]
    plain = BatchMaker(_examples(x), PRE, train=True, augment=False)(list(range(16)))[0]
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert not torch.equal(a["pixel_values"], plain["pixel_values"])
    assert plain["pixel_values"].shape == a["pixel_values"].shape
