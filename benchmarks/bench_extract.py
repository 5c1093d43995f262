"""Extraction throughput, cache reuse and memory, against plain hand-written loops.

    python benchmarks/bench_extract.py            # all sections (about 10-15 min on 2 cores)
    python benchmarks/bench_extract.py --quick    # smaller samples

Each section measures headstart and its baseline in the same run and prints the ratio:
1. images: Fashion-MNIST through mobilenet_v2 (decode, resize, normalise, infer), headstart's
   extract_features vs a plain torchvision loop (PIL + weights.transforms() + eager model);
   plus the share of this machine's fp32 matmul rate that headstart's rate represents.
2. text: IMDB reviews through all-MiniLM-L6-v2, headstart vs a plain transformers loop
   (unsorted, padded to 256 tokens, batch 16, masked mean pooling).
3. cache: a second fit on the same data with another head vs the first fit.
4. memory: peak RSS of extraction over 10,000 vs 60,000 images (separate processes).
5. head: LogisticHead's regularisation search + refit on 5,000 x 1,280 features.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MOBILENET_V2_GFLOPS = 0.60  # 300 M multiply-adds per 224x224 image (torchvision's _ops meta)


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def plain_image_loop(images: np.ndarray, batch: int = 64) -> float:
    from PIL import Image
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    from headstart.backbones.offline import locate_raw

    model = mobilenet_v2(weights=None)
    model.load_state_dict(torch.load(locate_raw("torchvision:mobilenet_v2"), weights_only=True))
    model.classifier = torch.nn.Identity()
    model.eval()
    tf = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    t = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.stack(
                [tf(Image.fromarray(im).convert("RGB")) for im in images[i : i + batch]]
            )
            model(x)
    return len(images) / (time.perf_counter() - t)


def headstart_images(ex, cache: str, engine: str = "auto") -> tuple[float, str]:
    from headstart.backbones import load_backbone
    from headstart.features.cache import extract_features

    bb = load_backbone("torchvision:mobilenet_v2")
    # Export/parity once, outside the timing: it is paid once per backbone, not per data set.
    from headstart.features.cache import make_engine

    make_engine(bb, engine)
    t = time.perf_counter()
    fs = extract_features(bb, ex, engine=engine, cache_dir=cache, progress=False)
    return len(ex) / (time.perf_counter() - t), fs.engine


def plain_text_loop(texts: list[str], batch: int = 16) -> float:
    from transformers import AutoModel, AutoTokenizer

    from headstart.backbones.offline import locate_raw

    path = locate_raw("hf:sentence-transformers/all-MiniLM-L6-v2")
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    t = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tok(
                texts[i : i + batch],
                padding="max_length",
                truncation=True,
                max_length=256,
                return_tensors="pt",
            )
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            (h * m).sum(1) / m.sum(1)
    return len(texts) / (time.perf_counter() - t)


def headstart_text(ex, cache: str) -> tuple[float, str]:
    from headstart.backbones import load_backbone
    from headstart.features.cache import extract_features, make_engine

    bb = load_backbone("hf:sentence-transformers/all-MiniLM-L6-v2")
    make_engine(bb, "auto")
    t = time.perf_counter()
    fs = extract_features(bb, ex, cache_dir=cache, progress=False)
    return len(ex) / (time.perf_counter() - t), fs.engine


MEMORY_CHILD = """
import sys, resource, json
sys.path.insert(0, {src!r})
from headstart.backbones import load_backbone
from headstart.data import load_builtin
from headstart.features.cache import extract_features
pool, _ = load_builtin("fashion-mnist")
n = int(sys.argv[1])
ex = pool.subset(range(n))
bb = load_backbone("torchvision:mobilenet_v2", image_size=64)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fs = extract_features(bb, ex, cache_dir=sys.argv[2], progress=False)
print(json.dumps({{"n": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "before_extraction_mb": base / 1024, "engine": fs.engine}}))
"""


def memory(n: int, cache: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD.format(src=str(ROOT / "src")), str(n), cache],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", default=["images", "text", "cache", "memory", "head"])
    args = ap.parse_args()
    from headstart.data import load_builtin

    results: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    }
    if "images" in args.only:
        pool, _ = load_builtin("fashion-mnist")
        n = 512 if args.quick else 2048
        ex = pool.subset(range(n))
        gflops = matmul_gflops()
        with tempfile.TemporaryDirectory() as c1, tempfile.TemporaryDirectory() as c2:
            plain = plain_image_loop(ex.inputs)
            ours, engine = headstart_images(ex, c1)
            eager, _ = headstart_images(ex, c2, engine="torch")
        results["images"] = {
            "n": n,
            "plain_torchvision_img_s": round(plain, 1),
            "headstart_img_s": round(ours, 1),
            "headstart_engine": engine,
            "headstart_torch_engine_img_s": round(eager, 1),
            "ratio": round(ours / plain, 2),
            "matmul_gflops": round(gflops, 1),
            "share_of_matmul_rate": round(ours * MOBILENET_V2_GFLOPS / gflops, 3),
        }
        print(json.dumps({"images": results["images"]}), flush=True)
    if "text" in args.only:
        pool, _ = load_builtin("imdb")
        n = 128 if args.quick else 480
        rng = np.random.default_rng(0)
        ex = pool.subset(rng.choice(len(pool), n, replace=False))
        with tempfile.TemporaryDirectory() as c1:
            plain = plain_text_loop([str(t) for t in ex.inputs])
            ours, engine = headstart_text(ex, c1)
        results["text"] = {
            "n": n,
            "plain_transformers_texts_s": round(plain, 1),
            "headstart_texts_s": round(ours, 1),
            "headstart_engine": engine,
            "ratio": round(ours / plain, 2),
        }
        print(json.dumps({"text": results["text"]}), flush=True)
    if "cache" in args.only:
        from headstart.config import FitConfig
        from headstart.fit import fit_run

        with tempfile.TemporaryDirectory() as c, tempfile.TemporaryDirectory() as out:
            kw = dict(
                data="fashion-mnist",
                backbone="torchvision:mobilenet_v2",
                strategy="extract",
                train_size=1000,
                test_size=1000 if args.quick else None,
                cache_dir=c,
                baseline=False,
            )
            t = time.perf_counter()
            fit_run(FitConfig.build(out=f"{out}/a", head="logistic", **kw), progress=False)
            first = time.perf_counter() - t
            t = time.perf_counter()
            r = fit_run(FitConfig.build(out=f"{out}/b", head="mlp", **kw), progress=False)
            second = time.perf_counter() - t
        results["cache"] = {
            "first_fit_s": round(first, 2),
            "second_fit_other_head_s": round(second, 2),
            "ratio": round(first / second, 1),
            "second_extraction_cached": all(e["cached"] for e in r.metrics["extraction"].values()),
        }
        print(json.dumps({"cache": results["cache"]}), flush=True)
    if "memory" in args.only:
        with tempfile.TemporaryDirectory() as c:
            small, large = memory(10_000, c + "/a"), memory(60_000, c + "/b")
        results["memory"] = {
            "10000": small,
            "60000": large,
            "ratio_peak": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
        }
        print(json.dumps({"memory": results["memory"]}), flush=True)
    if "head" in args.only:
        from headstart.heads import LogisticHead

        rng = np.random.default_rng(0)
        means = rng.normal(size=(10, 1280)).astype(np.float32)
        y = rng.integers(0, 10, 6250)
        X = (means[y] + 2.5 * rng.normal(size=(6250, 1280))).astype(np.float32)
        X = np.maximum(X, 0)  # post-ReLU-like features
        t = time.perf_counter()
        h = LogisticHead().fit(X[:5000], y[:5000], X_val=X[5000:], y_val=y[5000:])
        results["head"] = {"seconds": round(time.perf_counter() - t, 2), "C": h.C_}
        print(json.dumps({"head": results["head"]}), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
