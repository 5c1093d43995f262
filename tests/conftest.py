"""Shared fixtures: tiny randomly initialised backbones of each source, and an isolated cache."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Every test session gets its own cache, so tests never read a user's cache or each other's
# leftovers from an earlier session.
os.environ.setdefault("HEADSTART_CACHE", tempfile.mkdtemp(prefix="headstart-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = [
    "good",
    "great",
    "fine",
    "excellent",
    "love",
    "wonderful",
    "bad",
    "awful",
    "terrible",
    "hate",
    "boring",
    "poor",
    "movie",
    "film",
    "plot",
    "actor",
    "the",
    "a",
    "is",
    "was",
    "and",
    "it",
    "this",
    "very",
    "not",
]


@pytest.fixture(scope="session")
def tiny_text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-d BERT with a 30-word WordPiece tokenizer, saved as an HF folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-d DINOv2 on 32-px images with patch 8, saved as an HF folder."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    d = tmp_path_factory.mktemp("tiny-dinov2")
    torch.manual_seed(0)
    cfg = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    Dinov2Model(cfg).save_pretrained(d)
    (d / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "size": {"shortest_edge": 36},
                "crop_size": {"height": 32, "width": 32},
                "do_center_crop": True,
                "image_mean": [0.485, 0.456, 0.406],
                "image_std": [0.229, 0.224, 0.225],
                "resample": 3,
            }
        )
    )
    return d


def text_examples(n: int = 60, seed: int = 0):
    """Short texts whose label is the sentiment of their words (learnable by a probe)."""
    from headstart.data.base import Examples

    rng = np.random.default_rng(seed)
    pos, neg = WORDS[:6], WORDS[6:12]
    texts, labels = [], []
    for i in range(n):
        y = i % 2
        words = list(rng.choice(pos if y else neg, size=4)) + list(rng.choice(WORDS[12:], size=3))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(y)
    return Examples("text", texts, np.array(labels), ["neg", "pos"], name="tiny-text")


def image_examples(n: int = 40, size: int = 28, seed: int = 0):
    """Grey images: class 0 bright on the left half, class 1 on the right half, plus noise."""
    from headstart.data.base import Examples

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, size=(n, size, size), dtype=np.uint8)
    y = np.arange(n) % 2
    for i in range(n):
        if y[i]:
            x[i, :, size // 2 :] += 150
        else:
            x[i, :, : size // 2] += 150
    return Examples("image", x, y, ["left", "right"], name="tiny-images")


def bar_images(n: int, size: int = 16, seed: int = 0):
    """A short bright bar anywhere in noise: horizontal (class 0) or vertical (class 1). Where
    the bar lies carries no class, so pixels + logistic regression is near chance while a
    small convolutional network reads the orientation anywhere."""
    from headstart.data.base import Examples

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, size=(n, size, size), dtype=np.uint8)
    y = np.arange(n) % 2
    for i in range(n):
        r, c = rng.integers(0, size - 5, 2)
        if y[i]:
            x[i, r : r + 5, c] = 230
        else:
            x[i, r, c : c + 5] = 230
    return Examples("image", x, y, ["horizontal", "vertical"], name="bars")
