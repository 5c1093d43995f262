"""Input resolution against accuracy and cost: the evidence behind the image-size rule.

    PYTHONPATH=src python benchmarks/bench_resolution.py                 # ~15 min on 2 cores
    PYTHONPATH=src python benchmarks/bench_resolution.py --sets digits --sizes 32,64,224

For each built-in image set (default: digits 8 px, fashion-mnist 28 px, mnist 28 px) and each
input size, a frozen backbone's features train the logistic head on 1,000 labelled images
(800 train + 200 validation, seed 0) exactly as ``headstart fit --strategy extract`` does,
and the head is scored on a stratified test subset. Printed per row: test accuracy with its
standard error, extraction milliseconds per image measured in the same run, and both as
ratios against the backbone's own pretraining size (the baseline of the run). Features go
to a throw-away cache so every size is extracted, never read back.

The rule this measured (``headstart.backbones.sizing.input_size``) is in README ("Input
size"); the numbers are in benchmarks/RESULTS.md (issue 11).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import numpy as np

from headstart import TransferClassifier
from headstart.backbones.registry import load_backbone
from headstart.data.load import load_data
from headstart.data.split import stratified_subset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="digits,fashion-mnist,mnist")
    ap.add_argument("--sizes", default="32,64,96,128,224")
    ap.add_argument("--backbones", default="torchvision:mobilenet_v2")
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--test-size", type=int, default=1500)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        "| set | backbone | size | test accuracy (± s.e.) | ms / image | accuracy vs default | cost vs default |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.sets.split(","):
        splits = load_data(name, train_size=args.train_size, seed=0)
        assert splits.test is not None
        if len(splits.test) > args.test_size:
            keep = stratified_subset(splits.test.labels, args.test_size, seed=0)
            splits.test = splits.test.subset(keep)
        for bb in args.backbones.split(","):
            default = load_backbone(bb, pretrained=True).preprocess.size
            rows = []
            for size in sorted({*sizes, default}):
                with tempfile.TemporaryDirectory(prefix="headstart-res-") as tmp:
                    clf = TransferClassifier(
                        bb, strategy="extract", image_size=size, cache_dir=tmp, random_state=0
                    )
                    clf.fit(splits.train, X_val=splits.val)
                    t0 = time.perf_counter()
                    proba = clf.predict_proba(splits.test)
                    ms = 1000 * (time.perf_counter() - t0) / len(splits.test)
                acc = float(np.mean(proba.argmax(1) == splits.test.labels))
                rows.append((size, acc, ms))
            ref = next(r for r in rows if r[0] == default)
            for size, acc, ms in rows:
                se = math.sqrt(acc * (1 - acc) / len(splits.test))
                print(
                    f"| {name} | {bb} | {size} | {acc:.4f} ± {se:.4f} | {ms:.2f} | "
                    f"{100 * (acc - ref[1]):+.1f} pts | {ms / ref[2]:.2f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
