"""`headstart export --format onnx`: parity with PyTorch, the files beside the graph, the int8
variant, LoRA merging, loading with onnxruntime (+ tokenizers) alone, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import WORDS, image_examples, text_examples
from headstart.config import FinetuneConfig
from headstart.estimator import TransferClassifier
from headstart.export import count_adapter_layers, export_bundle, merge_for_export
from headstart.features.onnx_runtime import OnnxFeatureRunner
from test_cli import headstart

ATOL = 1e-4


def _fit_and_save(root: Path, backbone_dir: Path, ex, **kw) -> tuple[Path, TransferClassifier]:
    clf = TransferClassifier(
        backbone=f"local-dir:{backbone_dir}",
        engine="torch",
        cache_dir=str(root / "cache"),
        **kw,
    ).fit(ex.inputs, np.array(ex.classes)[ex.labels])
    return clf.save(root / "model"), clf


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory, tiny_vision_dir):
    return _fit_and_save(tmp_path_factory.mktemp("img"), tiny_vision_dir, image_examples(40))[0]


@pytest.fixture(scope="module")
def finetuned_bundle(tmp_path_factory, tiny_vision_dir):
    cfg = FinetuneConfig(unfreeze=1, epochs=2, batch_size=16, lr=1e-2, patience=5, keep_start=False)
    path, _ = _fit_and_save(
        tmp_path_factory.mktemp("ft"),
        tiny_vision_dir,
        image_examples(48),
        strategy="finetune",
        finetune=cfg,
    )
    return path


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory, tiny_text_dir):
    return _fit_and_save(tmp_path_factory.mktemp("txt"), tiny_text_dir, text_examples(60))[0]


def _check_parity(res, n: int) -> None:
    par = res.parity
    assert par["n"] == n and par["ok"], par
    assert par["onnx"]["max_abs_diff"] <= ATOL and par["onnx"]["label_agreement"] == 1.0
    assert json.loads(res.parity_file.read_text()) == par  # recorded as printed


def test_image_model_matches_pytorch_with_a_dynamic_batch(image_bundle, tmp_path):
    ex = image_examples(37, seed=3)  # 37: a partial last batch (32 + 5)
    res = export_bundle(image_bundle, tmp_path / "m.onnx", examples=ex, labels=ex.labels)
    _check_parity(res, 37)
    assert res.int8 is None and not (tmp_path / "m.int8.onnx").exists()
    recipe = json.loads(res.recipe.read_text())
    assert recipe["labels"] == ["left", "right"] and recipe["model"] == "m.onnx"
    img = recipe["image"]
    assert (img["size"], img["resize"], img["interpolation"]) == (32, 36, "bicubic")
    assert img["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert recipe["inputs"][0]["name"] == "pixel_values"
    # The graph alone, at batch sizes the export never saw, equals the bundle's prediction.
    clf = TransferClassifier.load(image_bundle)
    from headstart.features.preprocess import image_tensor

    runner = OnnxFeatureRunner(res.model)
    assert runner.output_name == "probabilities"
    for n in (1, 7):
        x = ex.inputs[:n]
        got = runner(pixel_values=image_tensor(x, clf.backbone_.preprocess).numpy())
        want = clf.predict_proba(x, cache=False)
        assert got.shape == (n, 2) and np.abs(got - want).max() <= ATOL


def test_finetuned_image_model_includes_its_tuned_layers(finetuned_bundle, tmp_path):
    meta = json.loads((finetuned_bundle / "headstart.json").read_text())
    assert meta["strategy"] == "finetune" and meta["backbone"]["tuned_params"]
    res = export_bundle(finetuned_bundle, tmp_path / "ft.onnx")  # default parity inputs
    _check_parity(res, 64)
    assert "photographs" in res.parity["source"] and "accuracy" not in res.parity
    ex = image_examples(40, seed=7)
    # The exported weights are the tuned ones: the pristine backbone gives other answers.
    pristine = TransferClassifier.load(finetuned_bundle)
    from headstart.backbones.registry import load_backbone
    from headstart.features.preprocess import image_tensor

    pristine.backbone_ = load_backbone(meta["backbone"]["name"]).eval()
    x = image_tensor(ex.inputs, pristine.backbone_.preprocess)
    with torch.inference_mode():
        untuned = pristine.head_.predict_proba(pristine.backbone_(x).numpy())
    got = OnnxFeatureRunner(res.model)(pixel_values=x.numpy())
    assert np.abs(got - res_torch(finetuned_bundle, ex)).max() <= ATOL
    assert np.abs(got - untuned).max() > 1e-3


def res_torch(bundle: Path, ex) -> np.ndarray:
    return TransferClassifier.load(bundle).predict_proba(ex.inputs, cache=False)


LOADER = """
import json, sys
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

recipe = json.load(open(sys.argv[1]))
folder = sys.argv[1].rsplit("/", 1)[0]
texts = json.load(open(sys.argv[2]))
# --- as in the README
t = recipe["text"]
tok = Tokenizer.from_file(f"{folder}/{t['tokenizer']}/tokenizer.json")
body = t["max_length"] - len(t["prefix_ids"]) - len(t["suffix_ids"])

def encode(text):
    ids = tok.encode(text, add_special_tokens=False).ids
    if len(ids) > body:  # "head+tail": the first quarter and the end
        head = body // 4 if t["truncation"] == "head+tail" else body
        ids = ids[:head] + ids[len(ids) - (body - head):]
    return t["prefix_ids"] + ids + t["suffix_ids"]

rows = [encode(x) for x in texts]
n = max(map(len, rows))
feeds = {
    "input_ids": np.array([r + [t["pad_token_id"]] * (n - len(r)) for r in rows], np.int64),
    "attention_mask": np.array([[1] * len(r) + [0] * (n - len(r)) for r in rows], np.int64),
}
(proba,) = ort.InferenceSession(f"{folder}/{recipe['model']}").run(None, feeds)
# ---
assert "torch" not in sys.modules and "headstart" not in sys.modules
print(json.dumps({"proba": proba.tolist(), "n_tokens": [len(r) for r in rows],
                  "labels": [recipe["labels"][i] for i in proba.argmax(1)]}))
"""


def test_text_model_int8_variant_and_plain_python_loader(text_bundle, tmp_path):
    ex = text_examples(45, seed=4)
    res = export_bundle(text_bundle, tmp_path / "t.onnx", int8=True, examples=ex, labels=ex.labels)
    _check_parity(res, 45)
    recipe = json.loads(res.recipe.read_text())
    assert [i["name"] for i in recipe["inputs"]] == ["input_ids", "attention_mask"]
    assert recipe["text"]["tokenizer"] == "t.tokenizer" and recipe["model_int8"] == "t.int8.onnx"
    assert (tmp_path / "t.tokenizer" / "tokenizer.json").is_file()
    # The int8 file loads and predicts probabilities, and its figures are recorded.
    p8 = OnnxFeatureRunner(res.int8)(
        input_ids=np.array([[2, 5, 6, 3], [2, 11, 3, 0]]),
        attention_mask=np.array([[1, 1, 1, 1], [1, 1, 1, 0]]),
    )
    assert p8.shape == (2, 2) and np.allclose(p8.sum(1), 1, atol=1e-5)
    assert set(res.parity["int8"]) >= {"max_abs_diff", "label_agreement"}
    assert "int8_drop" in res.parity["accuracy"]
    assert res.int8.stat().st_size < res.model.stat().st_size
    _run_loader(text_bundle, res.recipe, tmp_path)


def _run_loader(text_bundle: Path, recipe: Path, tmp_path: Path) -> None:
    """The README's plain-Python loader, in a fresh process: long texts are truncated and
    batches padded exactly as headstart does, so the probabilities match PyTorch."""
    rng = np.random.default_rng(0)
    long_text = " ".join(rng.choice(WORDS, size=150))  # over max_length: head+tail applies
    texts = [*text_examples(6, seed=9).inputs, long_text, "bad"]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    (tmp_path / "load.py").write_text(textwrap.dedent(LOADER))
    run = subprocess.run(
        [sys.executable, str(tmp_path / "load.py"), str(recipe), str(tmp_path / "texts.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    clf = TransferClassifier.load(text_bundle)
    pre = clf.backbone_.preprocess
    assert pre.truncation == "head+tail" and out["n_tokens"][6] == pre.max_length
    want = clf.predict_proba(texts, cache=False)
    assert np.abs(np.array(out["proba"]) - want).max() <= ATOL
    assert out["labels"] == list(clf.classes_[want.argmax(1)])


def test_lora_bundle_is_exported_with_its_adapter_merged(tmp_path, tiny_text_dir):
    cfg = FinetuneConfig(peft="lora", lora_rank=2, lora_alpha=4, epochs=2, batch_size=16,
                         lr=1e-2, keep_start=False)  # fmt: skip
    bundle, _ = _fit_and_save(tmp_path, tiny_text_dir, text_examples(48), strategy="finetune",
                              finetune=cfg)  # fmt: skip
    assert (bundle / "adapter").is_dir()
    ex = text_examples(30, seed=6)
    res = export_bundle(bundle, tmp_path / "lora.onnx", examples=ex, labels=ex.labels)
    _check_parity(res, 30)  # the reference is the adapted, unmerged backbone
    assert res.adapters_merged == 4  # 2 layers x (query, value)
    import onnx

    names = [i.name for i in onnx.load(str(res.model)).graph.initializer]
    assert not [n for n in names if "lora" in n.lower()]
    # The adapter matters: the pristine backbone computes other features.
    from headstart.backbones.registry import load_backbone
    from headstart.features.cache import features_in_memory

    plain = load_backbone(f"local-dir:{tiny_text_dir}").eval()
    assert count_adapter_layers(plain) == 0 and merge_for_export(plain) == (plain, 0)
    adapted = TransferClassifier.load(bundle).backbone_
    assert count_adapter_layers(adapted) == 4
    diff = features_in_memory(adapted, ex) - features_in_memory(plain, ex)
    assert np.abs(diff).max() > 1e-3


# ---------------------------------------------------------------------------- the CLI
def test_cli_exports_and_prints_parity(image_bundle, tmp_path):
    from test_cli import write_image_folder

    data = write_image_folder(tmp_path / "imgs", per_class=6, classes=("left", "right"))
    out = tmp_path / "deploy" / "model.onnx"
    out.parent.mkdir()
    (out.parent / "model.int8.onnx").write_text("from an earlier export with --int8")
    # The TorchScript exporter here (faster to start than dynamo, the default, tested above).
    res = headstart(
        "export",
        str(image_bundle),
        "--format",
        "onnx",
        "--out",
        str(out),
        "--exporter",
        "torchscript",
        "--data",
        str(data),
        "--parity-n",
        "10",
    )
    assert res.returncode == 0, res.stderr
    assert "max abs difference of probabilities" in res.stdout and "labels agree" in res.stdout
    par = json.loads((tmp_path / "deploy" / "model.parity.json").read_text())
    assert par["ok"] and par["n"] == 10 and par["source"].endswith("10 of 12 (all examples)")
    assert "accuracy: torch" in res.stdout and set(par["accuracy"]) == {"torch", "onnx"}
    # the stale int8 file does not stay beside a graph it does not belong to
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "model.onnx",
        "model.parity.json",
        "model.preprocess.json",
    ]


def test_cli_bad_input_gets_clear_errors(image_bundle, tmp_path, capsys):
    """Each is refused before any model is loaded (in-process: the same main() as the CLI)."""
    from headstart.cli.main import main

    def export(*args: str) -> str:
        assert main(["export", *args]) == 2
        return capsys.readouterr().err

    err = export(str(tmp_path), "--out", str(tmp_path / "m.onnx"))
    assert "is not a headstart model bundle" in err
    err = export(str(image_bundle), "--format", "tflite", "--out", "m.onnx")
    assert "--format must be one of onnx. Got 'tflite'" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert "cannot write --out" in export(str(image_bundle), "--out", str(blocker / "m.onnx"))
    err = export(str(image_bundle), "--out", str(tmp_path / "m.pt"))
    assert "--out must name an .onnx file" in err
    err = export(str(image_bundle), "--out", str(tmp_path))
    assert "is a folder" in err
    audio = tmp_path / "audio-model"  # a valid description, of an audio model
    audio.mkdir()
    meta = json.loads((image_bundle / "headstart.json").read_text())
    (audio / "headstart.json").write_text(json.dumps({**meta, "modality": "audio"}))
    err = export(str(audio), "--out", str(tmp_path / "a.onnx"))
    assert "audio models is not supported yet" in err
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*tmp"))


@pytest.mark.integration
def test_real_mobilenet_v2_on_digits_matches_pytorch(tmp_path):
    """Real ImageNet weights (the extraction model of benchmarks/bench_export.py, smaller)."""
    from headstart.data.load import load_data
    from test_integration import need_data, need_weights

    need_weights("torchvision:mobilenet_v2")
    need_data("digits")
    splits = load_data("digits", train_size=200, seed=0)
    tr = splits.train
    clf = TransferClassifier(
        backbone="torchvision:mobilenet_v2", image_size=96, cache_dir=str(tmp_path / "c")
    ).fit(tr.inputs, np.array(tr.classes)[tr.labels])
    test = splits.test.subset(np.arange(100))
    res = export_bundle(
        clf.save(tmp_path / "model"), tmp_path / "m.onnx", int8=True, examples=test,
        labels=test.labels,
    )  # fmt: skip
    _check_parity(res, 100)
    assert res.parity["accuracy"]["onnx"] >= 0.8  # a real model, not a constant one
    assert res.parity["int8"]["label_agreement"] >= 0.9
