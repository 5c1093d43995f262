"""LoRA through PEFT (issue 12): only adapters and head train, bundles hold only the adapter,
reload offline to identical predictions, and the adapter merges for export."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import image_examples, text_examples
from headstart import TransferClassifier, load_model
from headstart.backbones import load_backbone
from headstart.backbones.lora import (
    LoraSpec,
    adapter_groups,
    attach_lora,
    has_adapter,
    merge_adapter,
)
from headstart.config import FinetuneConfig
from headstart.errors import BackboneError, ConfigError
from headstart.features.cache import features_in_memory
from headstart.heads import LogisticHead
from headstart.strategies.finetune import Finetune
from headstart.strategies.training import finetune

LORA = {"peft": "lora", "epochs": 2, "batch_size": 16, "lr": 1e-2, "keep_start": False}


def _adapted_run(directory: Path, examples, rank: int = 2):
    """A tiny backbone, its pristine state, and the same backbone after LoRA fine-tuning."""
    torch.manual_seed(0)
    bb = load_backbone(f"local-dir:{directory}")
    pristine = {k: v.clone() for k, v in bb.state_dict().items()}
    train, val = examples(48), examples(16, seed=1)
    head = LogisticHead(C=1.0, refit=False).fit(features_in_memory(bb, train), train.labels)
    attach_lora(bb, LoraSpec(rank=rank, alpha=4))
    cfg = FinetuneConfig(**LORA, lora_rank=rank, lora_alpha=4)
    model, res = finetune(bb, head.to_torch(), train, val, cfg, progress=False)
    return bb, pristine, model, res


@pytest.mark.parametrize("which", ["text", "vision"])
def test_only_adapters_and_head_train_and_base_weights_stay(which, tiny_text_dir, tiny_vision_dir):
    directory, examples = (
        (tiny_text_dir, text_examples) if which == "text" else (tiny_vision_dir, image_examples)
    )
    bb, pristine, model, res = _adapted_run(directory, examples)
    # every pretrained tensor is unchanged, under its adapted name (base_layer)
    merged_names = merge_adapter(bb).state_dict()
    assert set(merged_names) == set(pristine)
    state = bb.state_dict()
    base = {k: v for k, v in state.items() if "lora_" not in k}
    assert len(base) == len(pristine)
    for k, v in base.items():
        orig = k.replace("encoder.base_model.model.", "encoder.").replace(".base_layer.", ".")
        assert torch.equal(v, pristine[orig]), f"{k} moved"
    # what trained: rank-2 A (2 x d) and B (d x 2) on query and value of both blocks, + head
    d, blocks = bb.feature_dim if which == "text" else bb.feature_dim // 2, 2
    n_head = sum(p.numel() for p in model.head.parameters())
    assert res.n_trainable == 2 * blocks * (2 * d * 2) + n_head
    assert res.unfrozen == ["lora"] and res.lrs["lora"] == LORA["lr"]
    adapters = [state[n] for n in adapter_groups(bb)[0].params]
    assert any(float(t.abs().sum()) > 0 for t in adapters if t.shape[1] == 2)  # B left zero


@pytest.fixture(scope="module")
def lora_clf(tiny_text_dir, tmp_path_factory):
    ex = text_examples(64)
    clf = TransferClassifier(
        backbone=f"local-dir:{tiny_text_dir}",
        strategy="finetune",
        finetune=FinetuneConfig(**LORA),
        engine="torch",
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )
    return clf.fit(ex.inputs, ex.labels)


def test_adapter_bundle_holds_only_the_adapter_and_reloads_offline_identically(lora_clf, tmp_path):
    texts = text_examples(24, seed=5).inputs
    before = lora_clf.predict_proba(texts, cache=False)
    path = lora_clf.save(tmp_path / "model")
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert "backbone.safetensors" not in files  # no pretrained weight is copied
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= set(files)
    config = json.loads((path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and sorted(config["target_modules"]) == ["query", "value"]
    assert config["r"] == 8 and config["lora_alpha"] == 16
    from safetensors.torch import load_file

    saved = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    meta = json.loads((path / "headstart.json").read_text())
    assert meta["backbone"]["adapter"]["rank"] == 8 and meta["strategy"] == "finetune"
    # a fresh process with the hub unreachable: the pristine weights from the registry + adapter
    code = (
        "import sys, json, numpy as np; from headstart import load_model; "
        "m = load_model(sys.argv[1]); "
        "print(json.dumps(m.predict_proba(json.loads(sys.argv[2]), cache=False).tolist()))"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), json.dumps(list(texts))],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    np.testing.assert_array_equal(before, np.array(json.loads(out.stdout), dtype=before.dtype))
    again = load_model(path)
    assert has_adapter(again.backbone_)
    np.testing.assert_array_equal(before, again.predict_proba(texts, cache=False))


def test_merged_backbone_matches_the_adapted_one(lora_clf):
    bb = lora_clf.backbone_
    merged = merge_adapter(bb)
    assert not has_adapter(merged) and has_adapter(bb)  # the adapted model is left as it was
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    inputs = bb.example_inputs(4)
    with torch.no_grad():
        np.testing.assert_allclose(merged(**inputs), bb(**inputs), rtol=1e-5, atol=1e-5)
    # the adapter did change the function: the merge is not a trivially pristine copy
    pristine = load_backbone(bb.name).eval()
    with torch.no_grad():
        assert not torch.allclose(pristine(**inputs), merged(**inputs), atol=1e-5)


def test_forgetting_is_measured_on_the_merged_weights(lora_clf):
    ft = lora_clf.finetune_detail_
    assert ft["peft"]["method"] == "lora" and 0 < ft["trainable_share"] < 1
    drift = ft["forgetting"]["weight_drift"]
    # query/value of each block moved (through the adapter); the embeddings did not
    assert drift["embeddings"] == 0.0 and drift["layer0"] > 0 and drift["layer1"] > 0
    assert 0 <= ft["forgetting"]["cka"] <= 1.0 + 1e-9
    # the rung is named for what it trained, not as "the top N groups"
    assert lora_clf.decisions_["chosen"] == "LoRA (rank 8) on query,value"
    assert "LoRA adapters (rank 8) in every block" in lora_clf.decisions_["reasons"][0]


def test_bad_lora_settings_are_refused_with_the_fix(tiny_text_dir):
    bb = load_backbone(f"local-dir:{tiny_text_dir}")
    with pytest.raises(ConfigError, match="--lora-targets"):
        attach_lora(copy.deepcopy(bb), LoraSpec(targets="no_such_layer"))
    cnn = load_backbone("torchvision:mobilenet_v3_small", pretrained=False, image_size=32)
    with pytest.raises((BackboneError, ConfigError), match="--peft none"):
        attach_lora(cnn, LoraSpec())
    with pytest.raises(ConfigError, match="--strategy finetune"):  # a ladder rung
        Finetune(FinetuneConfig(peft="lora"), unfreeze=2, budgeted=True)
    with pytest.raises(ConfigError, match="lora_rank"):
        FinetuneConfig(peft="lora", lora_rank=0)


def test_a_bundle_missing_its_adapter_is_refused(lora_clf, tmp_path):
    import shutil

    path = lora_clf.save(tmp_path / "model")
    shutil.rmtree(path / "adapter")
    with pytest.raises(BackboneError, match="adapter"):
        load_model(path)


@pytest.mark.integration
def test_minilm_lora_trains_under_five_percent_of_the_parameters():
    try:
        bb = load_backbone("hf:sentence-transformers/all-MiniLM-L6-v2")
    except Exception as exc:
        pytest.skip(f"all-MiniLM-L6-v2 offline weights missing ({exc}); see ../shared/SOURCES.md")
    n_base = sum(p.numel() for p in bb.parameters())
    attach_lora(bb, LoraSpec())
    n_adapter = sum(p.numel() for p in bb.parameters() if p.requires_grad)
    assert n_adapter == 6 * 2 * (2 * 384 * 8)  # 6 blocks x (query, value) x (A + B)
    assert (n_adapter + 384 * 2 + 2) / (n_base + n_adapter) < 0.05
