"""The small CNN from scratch on exactly the split ``headstart fit`` draws: the reference
issue 12's acceptance 1 compares ``fit``'s result with.

``headstart fit DATA --train-size N`` (seed 0) carves its training and validation splits from
a stratified budget of N labels and scores the official test split; this script loads the
same splits with the same call (``load_data``; their fingerprints are printed, to compare with
the run's ``config.json``) and trains :class:`headstart.baselines.SmallCNN` with the settings
``headstart curve`` gives its ``cnn`` strategy (:class:`headstart.curve.config.CurveConfig`),
early-stopped on the same validation split, then scores the whole test split.

    .venv/bin/python benchmarks/bench_cnn_reference.py --train-size 1000 5000
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np


def reference(data: str, train_size: int, seed: int) -> dict[str, object]:
    from headstart.baselines.cnn import SmallCNN, image_pixels
    from headstart.curve.config import CurveConfig
    from headstart.data.load import load_data

    splits = load_data(data, train_size=train_size, seed=seed)
    assert splits.test is not None, f"{data} has no test split"
    c = CurveConfig(data=data)
    x_tr, side = image_pixels(splits.train)
    x_va, _ = image_pixels(splits.val, side)
    x_te, _ = image_pixels(splits.test, side)
    t0 = time.perf_counter()
    cnn = SmallCNN(
        epochs=c.cnn_epochs,
        lr=c.cnn_lr,
        batch_size=c.cnn_batch_size,
        min_steps=c.cnn_min_steps,
        patience=c.cnn_patience,
        seed=seed,
    )
    cnn.fit(x_tr, splits.train.labels, x_va, splits.val.labels, len(splits.classes))
    acc = float(np.mean(cnn.predict_proba(x_te).argmax(1) == splits.test.labels))
    return {
        "data": data,
        "train_size": train_size,
        "seed": seed,
        "sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "fingerprint": splits.fingerprint(),
        "val_accuracy": cnn.val_accuracy_,
        "test_accuracy": acc,
        "test_se": math.sqrt(acc * (1 - acc) / len(splits.test)),
        "best_epoch": cnn.best_epoch_,
        "epochs_run": len(cnn.history_),
        "n_params": cnn.n_params_,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--train-size", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for n in args.train_size:
        r = reference(args.data, n, args.seed)
        print(json.dumps(r))
        print(
            f"{args.data} {n:,} labels: small CNN test {r['test_accuracy']:.4f} ± "
            f"{r['test_se']:.4f} (val {r['val_accuracy']:.3f}, epoch {r['best_epoch']} of "
            f"{r['epochs_run']}, {r['seconds']} s)"
        )


if __name__ == "__main__":
    main()
