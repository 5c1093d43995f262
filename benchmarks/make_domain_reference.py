"""Regenerate the shipped domain references (``src/headstart/reference/*.npz``) and calibrate
the near/far thresholds of :mod:`headstart.selection.domain`.

One command, from the repository root::

    PYTHONPATH=src .venv/bin/python benchmarks/make_domain_reference.py \
        [--images PATH ...] [--crops 40] [--out src/headstart/reference] [--no-write]

**Reference sample.** Natural photographs that install offline: ``china.jpg``
(scikit-learn) and ``grace_hopper.jpg`` (matplotlib), plus any ``--images``. scikit-learn's
``flower.jpg`` is left out on purpose: the tests use its crops as natural-photo data that
the reference has never seen.
The shipped files used scikit-image 0.26.0's bundled photos as well (public domain / CC0:
astronaut, chelsea, coffee, rocket, motorcycle_left, hubble_deep_field), taken from the
wheel without installing it::

    pip download --no-deps scikit-image==0.26.0 -d /tmp/w
    unzip -o /tmp/w/scikit_image-0.26.0-*.whl 'skimage/data/*' -d /tmp/w
    --images /tmp/w/skimage/data/{astronaut,chelsea,coffee,motorcycle_left}.png \
             /tmp/w/skimage/data/{rocket,hubble_deep_field}.jpg

Each photo gives ``--crops`` random crops (area 10-100 %, aspect 3:4 to 4:3, random
horizontal flip, seed 0), resized to 224 x 224, the way ImageNet training samples photos.
For each backbone the per-dimension mean and standard deviation of its pooled features on
all crops, and its source classifier's mean normalised entropy, are written to
``<out>/<backbone>.npz`` with the photos' names and SHA-256 (a few KB each).

**Calibration.** *Near*: the photos are split into two halves (alternating by name); the
reference statistics of one half are compared with the crops of the other (both ways).
*Grey*: the same held-out crops converted to greyscale (a milder shift). *Far*:
Fashion-MNIST, MNIST and digits, 200 stratified examples each, against the half references
and the full reference. Every number goes into the reference file
(``meta["calibration"]``), from which :meth:`headstart.selection.domain.Reference.calibration`
derives each measurement's threshold (midpoint of near and least-far, used only when they
are at least ``MARGIN`` apart); the script prints the resulting tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from headstart.backbones.registry import load_backbone
from headstart.data.base import Examples
from headstart.data.builtin import get_builtin
from headstart.data.split import stratified_subset
from headstart.features.cache import extract_features
from headstart.selection.domain import Reference, feature_shift, reference_path, source_entropy
from headstart.selection.rank import source_probabilities

BACKBONES = [
    "torchvision:mobilenet_v2",
    "timm:tf_efficientnet_lite0",
    "timm:tf_efficientnet_lite1",
    "timm:tf_efficientnet_lite2",
    "hf:facebook/dinov2-small",
]
FAR = ["fashion-mnist", "mnist", "digits"]
SIZE = 224


def default_photos() -> list[Path]:
    import matplotlib
    import sklearn

    return [
        Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
        Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg",
    ]


def random_crops(path: Path, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` RandomResizedCrop-style crops of one photo, (k, SIZE, SIZE, 3) uint8."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    out = np.empty((k, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(k):
        for _ in range(50):
            area = w * h * rng.uniform(0.1, 1.0)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if cw <= w and ch <= h:
                break
        else:
            cw = ch = min(w, h)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x, y, x + cw, y + ch)).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[i] = np.asarray(crop)
    return out


def stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = feats.astype(np.float64)
    return f.mean(axis=0), f.std(axis=0)


def entropy_of(bb: Any, feats: np.ndarray) -> float | None:
    probs = source_probabilities(bb, feats)
    return None if probs is None else source_entropy(np.log(np.maximum(probs, 1e-300)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", nargs="*", default=[], help="more natural photos")
    ap.add_argument("--crops", type=int, default=40, help="random crops per photo")
    ap.add_argument("--far-n", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).parents[1] / "src/headstart/reference"))
    ap.add_argument("--no-write", action="store_true", help="calibrate only")
    ap.add_argument("--backbones", default=",".join(BACKBONES))
    ap.add_argument("--json", help="write the calibration numbers here")
    args = ap.parse_args()

    photos = sorted(default_photos() + [Path(p) for p in args.images], key=lambda p: p.name)
    rng = np.random.default_rng(0)
    crops = np.concatenate([random_crops(p, args.crops, rng) for p in photos])
    photo_of = np.repeat(np.arange(len(photos)), args.crops)
    half = photo_of % 2  # alternate photos (sorted by name) between the two halves
    grey_idx = np.arange(0, len(crops), 2)
    grey = np.repeat(
        np.asarray([np.asarray(Image.fromarray(c).convert("L")) for c in crops[grey_idx]])[
            ..., None
        ],
        3,
        axis=3,
    )
    photo_list = [
        {"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in photos
    ]
    print(
        f"{len(photos)} photos, {len(crops)} crops: {', '.join(p.name for p in photos)}", flush=True
    )

    far_sets: dict[str, Examples] = {}
    for name in FAR:
        pool, _ = get_builtin(name).load()
        far_sets[name] = pool.subset(stratified_subset(pool.labels, args.far_n, 0), name=name)

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="domain-ref-") as tmp:
        for name in args.backbones.split(","):
            t0 = time.perf_counter()
            bb = load_backbone(name)
            bb.eval()

            def feats(x: Examples, bb: Any = bb) -> np.ndarray:
                return extract_features(bb, x, cache_dir=tmp, progress=False).load()

            f_ref = feats(
                Examples("image", crops, photo_of, [p.name for p in photos], name="crops")
            )
            f_grey = feats(
                Examples("image", grey, photo_of[grey_idx], [p.name for p in photos], name="grey")
            )
            f_far = {k: feats(v) for k, v in far_sets.items()}
            row: dict[str, Any] = {
                "near_shift": [],
                "grey_shift": [],
                "far_shift": {k: [] for k in FAR},
            }
            for h in (0, 1):
                mean, std = stats(f_ref[half == h])
                ref = Reference(name, "", mean, std, int((half == h).sum()), None, "half")
                row["near_shift"].append(feature_shift(f_ref[half != h], ref))
                row["grey_shift"].append(feature_shift(f_grey[half[grey_idx] != h], ref))
                for k in FAR:
                    row["far_shift"][k].append(feature_shift(f_far[k], ref))
            row["near_entropy"] = entropy_of(bb, f_ref)
            row["grey_entropy"] = entropy_of(bb, f_grey)
            row["far_entropy"] = {k: entropy_of(bb, v) for k, v in f_far.items()}
            mean, std = stats(f_ref)
            row["full_ref_far_shift"] = {
                k: feature_shift(v, Reference(name, "", mean, std, len(f_ref), None, ""))
                for k, v in f_far.items()
            }
            results[name] = row
            print(
                f"{name}: {time.perf_counter() - t0:.0f} s  {json.dumps(row, default=lambda x: round(x, 3))}",
                flush=True,
            )
            if not args.no_write:
                Reference(
                    backbone=name,
                    weights_sha256=bb.weights.current_sha256,
                    mean=mean,
                    std=std,
                    n=len(f_ref),
                    source_entropy=row["near_entropy"],
                    description=(
                        f"{len(crops)} random crops ({args.crops} per photo, area 10-100 %, "
                        f"{SIZE} px) of {len(photos)} natural photos"
                    ),
                    meta={
                        "photos": photo_list,
                        "crops_per_photo": args.crops,
                        "seed": 0,
                        "calibration": row,
                        "script": "benchmarks/make_domain_reference.py",
                    },
                ).save(reference_path(name, Path(args.out)))
            del bb

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    print(
        "\n| backbone | shift: near (half vs half) | grey | Fashion-MNIST | MNIST | digits | threshold |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ref = Reference(name, "", np.zeros(1), np.ones(1), 0, None, "", {"calibration": r})
        cal = ref.calibration("shift")
        far = r["full_ref_far_shift"]
        print(
            f"| {name} | {fmt(max(r['near_shift']))} | {fmt(max(r['grey_shift']))} | "
            + " | ".join(fmt(far[k]) for k in FAR)
            + f" | {fmt(cal['threshold']) if cal else '(not separated)'} |"
        )
    print(
        "\n| backbone | entropy: reference photos | grey | Fashion-MNIST | MNIST | digits | threshold |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if r["near_entropy"] is None:
            continue
        ref = Reference(name, "", np.zeros(1), np.ones(1), 0, None, "", {"calibration": r})
        cal = ref.calibration("entropy")
        fe = r["far_entropy"]
        print(
            f"| {name} | {fmt(r['near_entropy'])} | {fmt(r['grey_entropy'])} | "
            + " | ".join(fmt(fe[k]) for k in FAR)
            + f" | {fmt(cal['threshold']) if cal else '(not separated)'} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
