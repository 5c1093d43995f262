"""Time LogisticHead's C search + refit against scikit-learn on frozen-feature-like data.

    PYTHONPATH=src python benchmarks/bench_heads.py              # about a minute on 2 cores
    PYTHONPATH=src python benchmarks/bench_heads.py --skip-cv    # leave out LogisticRegressionCV
    PYTHONPATH=src python benchmarks/bench_heads.py --threads 0  # libraries' default threads

The features imitate pooled CNN embeddings (EfficientNet/MobileNet-like, 1280-d): non-negative,
correlated through a low-dimensional latent space, where classes differ in a few latent
directions and every image also varies along class-independent "nuisance" directions. Three
ways of choosing C on the same grid (``headstart.heads.DEFAULT_CS``) and fitting are timed:

1. ``LogisticHead().fit(train, y, val, y_val)``: C chosen on val log-loss, refit on train+val.
2. scikit-learn, same protocol: ``LogisticRegression(warm_start=True)`` walked along the grid
   on standardised train features, C chosen on val log-loss, refit on train+val.
3. scikit-learn, the usual way: ``LogisticRegressionCV(cv=5, scoring='neg_log_loss')`` on
   standardised train+val features (its default max_iter=100 keeps it bounded).

All use class_weight='balanced' and the same BLAS thread limit (--threads, default 1).
Wall-clock and process CPU seconds are printed with the load average: on a shared machine the
wall time of multi-threaded BLAS varies many times over, single-threaded much less.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import log_loss
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_info, threadpool_limits

from headstart.heads import DEFAULT_CS, LogisticHead, MLPHead


def make_features(
    n: int, dim: int, n_classes: int, seed: int, *, rng_data: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic embeddings: latent class means + nuisance + noise -> ReLU(random projection)."""
    structure = np.random.default_rng(seed)  # same class means/projection for every split
    latent, nuisance = 64, 32
    means = structure.normal(size=(n_classes, latent)) * 0.35
    proj = structure.normal(size=(latent + nuisance, dim)) / np.sqrt(latent + nuisance)
    bias = structure.normal(size=dim) * 0.3
    y = rng_data.integers(0, n_classes, n)
    z = np.concatenate(
        [means[y] + rng_data.normal(size=(n, latent)), 2.0 * rng_data.normal(size=(n, nuisance))],
        axis=1,
    )
    X = np.maximum(z @ proj + bias + 0.3 * rng_data.normal(size=(n, dim)), 0.0)
    return X.astype(np.float32), y


def timed(fn):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def balanced_val_log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    return float(log_loss(y, proba, sample_weight=compute_sample_weight("balanced", y)))


def sklearn_same_protocol(X, y, Xv, yv):  # type: ignore[no-untyped-def]
    scaler = StandardScaler().fit(X)
    Xs, Xvs = scaler.transform(X), scaler.transform(Xv)
    model = LogisticRegression(class_weight="balanced", warm_start=True)
    scores = {}
    for C in sorted(DEFAULT_CS):
        model.set_params(C=C).fit(Xs, y)
        proba = model.predict_proba(Xvs)
        scores[C] = (balanced_val_log_loss(proba, yv), float((proba.argmax(1) == yv).mean()))
    best = min(scores, key=lambda c: scores[c][0])
    X_all, y_all = np.concatenate([X, Xv]), np.concatenate([y, yv])
    final_scaler = StandardScaler().fit(X_all)
    final = LogisticRegression(C=best, class_weight="balanced").fit(
        final_scaler.transform(X_all), y_all
    )
    return best, scores[best][1], lambda Xt: final.predict(final_scaler.transform(Xt))


def sklearn_cv(X, y, Xv, yv, cv):  # type: ignore[no-untyped-def]
    X_all, y_all = np.concatenate([X, Xv]), np.concatenate([y, yv])
    scaler = StandardScaler().fit(X_all)
    model = LogisticRegressionCV(
        Cs=list(DEFAULT_CS), cv=cv, scoring="neg_log_loss", class_weight="balanced"
    ).fit(scaler.transform(X_all), y_all)
    return float(model.C_[0]), None, lambda Xt: model.predict(scaler.transform(Xt))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-val", type=int, default=1250)
    parser.add_argument("--n-test", type=int, default=2500)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-cv", action="store_true", help="leave out LogisticRegressionCV")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS threads for every method (threadpoolctl), and LogisticHead(n_threads=); "
        "0 leaves the libraries' defaults (default: 1, what LogisticHead picks by itself "
        "for a problem this size)",
    )
    parser.add_argument("--mlp", action="store_true", help="also time MLPHead")
    args = parser.parse_args()
    n_threads = args.threads or None
    if n_threads is not None:
        threadpool_limits(n_threads, user_api="blas")

    rng = np.random.default_rng(args.seed + 1)
    data = [
        make_features(n, args.dim, args.classes, args.seed, rng_data=rng)
        for n in (args.n_train, args.n_val, args.n_test)
    ]
    (X, y), (Xv, yv), (Xt, yt) = data
    print(
        f"features: train {X.shape}, val {Xv.shape}, test {Xt.shape}, float32, {args.classes} "
        f"classes; grid of {len(DEFAULT_CS)} C values {DEFAULT_CS[0]:g}..{DEFAULT_CS[-1]:g}"
    )
    blas = ", ".join(
        f"{p['internal_api']} {p['num_threads']} threads"
        for p in threadpool_info()
        if p["user_api"] == "blas"
    )
    print(f"cpus: {os.cpu_count()}, BLAS: {blas}, load average before: {os.getloadavg()[0]:.2f}\n")

    rows = []
    head, wall, cpu = timed(lambda: LogisticHead(n_threads=n_threads).fit(X, y, Xv, yv))
    rows.append(
        (
            "headstart LogisticHead (val, refit)",
            wall,
            cpu,
            head.C_,
            head.val_scores_[head.C_]["accuracy"],
            float((head.predict(Xt) == yt).mean()),
        )
    )
    print(
        f"  LogisticHead: {len(head.val_scores_)} grid points fitted, {head.n_iter_} L-BFGS iterations"
    )

    if args.mlp:
        mlp, wall, cpu = timed(lambda: MLPHead(n_threads=n_threads).fit(X, y, Xv, yv))
        val_acc = float((mlp.predict(Xv) == yv).mean())  # early stopping only: no refit
        rows.append(
            (
                "headstart MLPHead (val early stopping)",
                wall,
                cpu,
                float("nan"),
                val_acc,
                float((mlp.predict(Xt) == yt).mean()),
            )
        )
        print(f"  MLPHead: {mlp.n_iter_} epochs, best {mlp.best_epoch_}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # sklearn's max_iter=100 default
        warnings.simplefilter("ignore", FutureWarning)  # LogisticRegressionCV API transition
        (C, val_acc, predict), wall, cpu = timed(lambda: sklearn_same_protocol(X, y, Xv, yv))
        rows.append(
            (
                "sklearn LogisticRegression path (val, refit)",
                wall,
                cpu,
                C,
                val_acc,
                float((predict(Xt) == yt).mean()),
            )
        )
        if not args.skip_cv:
            (C, val_acc, predict), wall, cpu = timed(lambda: sklearn_cv(X, y, Xv, yv, args.cv))
            rows.append(
                (
                    f"sklearn LogisticRegressionCV (cv={args.cv})",
                    wall,
                    cpu,
                    C,
                    val_acc,
                    float((predict(Xt) == yt).mean()),
                )
            )

    print(
        f"\n{'method':<46} {'wall s':>8} {'cpu s':>8} {'C':>9} {'val acc':>8} {'test acc':>8} {'x slower':>8}"
    )
    for name, wall, cpu, C, val_acc, test_acc in rows:
        va = f"{val_acc:.4f}" if val_acc is not None else "(in cv)"
        print(
            f"{name:<46} {wall:8.2f} {cpu:8.2f} {C:9.3g} {va:>8} {test_acc:8.4f} {wall / rows[0][1]:8.1f}"
        )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
