"""The contender stage on real data: transfer alone against what ``auto`` keeps, on test.

Fits ``TransferClassifier(strategy="auto")`` on ``fit``'s split of a built-in data set
(``load_data(DATA, train_size=N, seed)``) with fine-tuning switched off (``min_examples``
above N), so the transfer model is the linear probe on frozen features, then scores on the
test split the predictor the contender stage kept (transfer, the baseline or the stack) and
transfer alone. Used for issue 12 (``benchmarks/RESULTS.md``).

    .venv/bin/python benchmarks/bench_contend.py --data fashion-mnist --train-size 1000 \\
        --backbone timm:tf_efficientnet_lite1 --image-size 224
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np


def main() -> None:
    from headstart import TransferClassifier
    from headstart.config import LadderConfig
    from headstart.data.load import load_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--test-size", type=int, default=None)
    ap.add_argument("--backbone", default="timm:tf_efficientnet_lite1")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    kw = {} if args.test_size is None else {"test_size": args.test_size}
    sp = load_data(args.data, train_size=args.train_size, seed=args.seed, **kw)
    assert sp.test is not None, f"{args.data} has no test split"
    clf = TransferClassifier(
        backbone=args.backbone,
        image_size=args.image_size,
        strategy="auto",
        ladder=LadderConfig(min_examples=10**9),
        random_state=args.seed,
    )
    clf.fit(sp.train, X_val=sp.val)
    y = sp.test.labels

    def acc(p: np.ndarray) -> float:
        return float(np.mean(np.asarray(p).argmax(1) == y))

    kept, alone = acc(clf.predict_proba(sp.test)), acc(clf.transfer_proba(sp.test))
    base = acc(clf.contest_.baseline.predict_proba(sp.test))
    se = math.sqrt(kept * (1 - kept) / len(y))
    print(json.dumps({"contender": clf.decisions_["contender"], "test_n": len(y)}))
    print(
        f"{args.data} {args.train_size:,} labels, {args.backbone}: kept {clf.predictor_} "
        f"test {kept:.4f} ± {se:.4f}; transfer alone {alone:.4f}; baseline alone {base:.4f} "
        f"({time.perf_counter() - t0:.0f} s)"
    )


if __name__ == "__main__":
    main()
