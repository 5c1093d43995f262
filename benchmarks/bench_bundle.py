"""What a self-contained bundle costs, and what checking an untrusted bundle costs.

One command, from the repository root::

    .venv/bin/python benchmarks/bench_bundle.py [--repeats 5]

For each real offline backbone installed (torchvision mobilenet_v2, all-MiniLM-L6-v2) it fits
a head on a few synthetic examples, saves the model twice (a plain bundle that names its
weights; a self-contained one, ``self_contained=True``), and prints

* the size of each bundle on disk;
* the median wall time of ``load_model`` for each, in this process, alternating the two
  (file cache warm): the baseline is the plain bundle, whose weights come from the
  installed package; the ratio is self-contained / plain;
* the median time of the checks alone that run before anything is loaded (schema, head
  arrays, reference resolution, sha256 of every bundled file): ``headstart.bundle_schema``
  plus the hash pass of ``headstart.bundle_weights``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

BACKBONES = ["torchvision:mobilenet_v2", "hf:sentence-transformers/all-MiniLM-L6-v2"]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _examples(name: str):
    from conftest import image_examples, text_examples

    return image_examples(40) if name.startswith("torchvision") else text_examples(40)


def _checks(bundle: Path) -> None:
    """The checks read_bundle runs before loading any weights (no backbone is built)."""
    from headstart._io import sha256_file
    from headstart.bundle import read_meta
    from headstart.bundle_schema import check_meta, resolve_reference, safetensors_header

    meta = read_meta(bundle)
    check_meta(meta, bundle)
    b = meta["backbone"]
    resolve_reference(b["name"], bundle, bundled=b.get("bundled") is not None)
    safetensors_header(bundle / "head.safetensors", what="head")
    for rel in (b.get("bundled") or {}).get("files", {}):
        sha256_file(bundle / "backbone" / rel)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from headstart import TransferClassifier, load_model
    from headstart.backbones.offline import OFFLINE_SOURCES, locate_raw

    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-bundle-"))
    for name in BACKBONES:
        if locate_raw(name) is None:
            print(f"skip {name}: {OFFLINE_SOURCES[name].install_command}")
            continue
        ex = _examples(name)
        clf = TransferClassifier(backbone=name, engine="torch", cache_dir=str(work / "cache"))
        clf.fit(ex.inputs, np.array(ex.classes)[ex.labels])
        safe = name.replace(":", "_").replace("/", "_")
        plain = clf.save(work / safe / "plain")
        whole = clf.save(work / safe / "whole", self_contained=True)
        times: dict[str, list[float]] = {"plain": [], "whole": [], "checks": []}
        for _ in range(args.repeats):
            for key, path in (("plain", plain), ("whole", whole)):
                t0 = time.perf_counter()
                load_model(path)
                times[key].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _checks(whole)
            times["checks"].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {
            "backbone": name,
            "plain_MB": round(_size(plain) / 1e6, 2),
            "self_contained_MB": round(_size(whole) / 1e6, 2),
            "load_plain_s": round(med["plain"], 3),
            "load_self_contained_s": round(med["whole"], 3),
            "ratio": round(med["whole"] / med["plain"], 2),
            "checks_s": round(med["checks"], 3),
        }
        rows.append(row)
        print(json.dumps(row))
    print(
        "| backbone | plain bundle | self-contained | load plain (baseline) | load "
        "self-contained | ratio | checks before loading |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| `{r['backbone']}` | {r['plain_MB']} MB | {r['self_contained_MB']} MB | "
            f"{r['load_plain_s']} s | {r['load_self_contained_s']} s | {r['ratio']}x | "
            f"{r['checks_s']} s |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
