"""Issue 4 acceptance 2 and 3: do transferability scores rank backbones like linear probes do,
and what does ranking cost compared with extraction?

One command, from the repository root::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_rank.py [--quick] [--json out.json]

**Acceptance 3 (cost).** 500 stratified Fashion-MNIST training examples, four backbones
(mobilenet_v2, EfficientNet-Lite0, EfficientNet-Lite2, DINOv2-small). For each backbone, the plain
path (load it, extract the 500 examples once into a fresh cache folder) and
``rank_backbones`` on the same 500 examples into another fresh cache folder (loading,
extraction, scores, 5-fold probe) run back to back, alternating which goes first. Reported: both wall times, their ratio, and the
ranking's own breakdown (scores + probe as a share of extraction). ONNX exports are warmed
up first, so neither side pays a one-time export.

**Acceptance 2 (Kendall tau).** Five offline ImageNet backbones (mobilenet_v2,
EfficientNet-Lite0/1/2, DINOv2-small) x three data sets, 1,000 stratified training examples
each: Fashion-MNIST (test: 1,000 stratified from the official test split), MNIST (10,000
images; test: 1,000 stratified from those not used for training), digits (test: the 797
left). For each data set ``rank_backbones`` scores all 1,000 training examples; the
reference is the test accuracy of :class:`~headstart.heads.LogisticHead` (default settings:
C chosen on a 20 % holdout, refit) trained on the same 1,000 training features, which the
probe reads from the cache the ranking filled (shared work: no second extraction). Kendall
tau (tau-b) of each score's ranking of the backbones against those test accuracies; LEEP and
NCE only over the backbones with an ImageNet classifier (DINOv2 has none).

``--quick`` runs a small smoke version (2 backbones, 120 examples) to check the script.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from headstart._env import machine, versions
from headstart.backbones.registry import load_backbone
from headstart.data.base import Examples
from headstart.data.builtin import get_builtin
from headstart.data.split import stratified_split, stratified_subset
from headstart.extract import extract_features
from headstart.heads import LogisticHead
from headstart.rank import probe_cv, rank_backbones
from headstart.transferability import kendall_tau

BACKBONES = [
    "torchvision:mobilenet_v2",
    "timm:tf_efficientnet_lite0",
    "timm:tf_efficientnet_lite1",
    "timm:tf_efficientnet_lite2",
    "hf:facebook/dinov2-small",
]
COST_BACKBONES = [
    "torchvision:mobilenet_v2",
    "timm:tf_efficientnet_lite0",
    "timm:tf_efficientnet_lite2",
    "hf:facebook/dinov2-small",
]
SCORES = ["logme", "hscore", "hscore_plain", "nce", "leep", "probe_accuracy"]
LABEL = {
    "logme": "LogME",
    "hscore": "H-score (shrinkage)",
    "hscore_plain": "H-score (plain)",
    "nce": "NCE",
    "leep": "LEEP",
    "probe_accuracy": "CV ridge probe (rank)",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def splits_for(name: str, n_train: int, n_test: int, seed: int) -> tuple[Examples, Examples]:
    pool, official = get_builtin(name).load()
    if official is not None:
        train = pool.subset(stratified_subset(pool.labels, n_train, seed), name=f"{name} train")
        test = official.subset(
            stratified_subset(official.labels, min(n_test, len(official)), seed),
            name=f"{name} test",
        )
        return train, test
    rest, part = stratified_split(pool.labels, n_train, seed)
    train = pool.subset(part, name=f"{name} train")
    if len(rest) > n_test:
        rest = rest[stratified_subset(pool.labels[rest], n_test, seed)]
    return train, pool.subset(rest, name=f"{name} test")


def acceptance_cost(names: list[str], n: int, seed: int, root: Path) -> dict[str, Any]:
    """Per backbone, the plain path and the ranking path back to back, alternating which goes
    first (plain-rank, rank-plain, ...), so that load from other processes on the machine
    drifts into both sides alike. ``rank_backbones`` over several backbones is exactly the
    loop of these single-backbone calls."""
    pool, _ = get_builtin("fashion-mnist").load()
    ex = pool.subset(stratified_subset(pool.labels, n, seed), name="fashion-mnist sample")
    plain: dict[str, dict[str, float]] = {}
    rows: dict[str, dict[str, float]] = {}
    rank_wall: dict[str, float] = {}

    def run_plain(name: str) -> None:
        t0 = time.perf_counter()
        bb = load_backbone(name)
        bb.eval()
        t1 = time.perf_counter()
        fs = extract_features(bb, ex, cache_dir=root / "plain", progress=False)
        fs.load()
        t2 = time.perf_counter()
        plain[name] = {"load": t1 - t0, "extract": t2 - t1, "total": t2 - t0}
        log(f"plain {name}: load {t1 - t0:.1f} s, extract {t2 - t1:.1f} s")

    def run_rank(name: str) -> None:
        t0 = time.perf_counter()
        table = rank_backbones(
            ex, [name], sample=n, seed=seed, cache_dir=root / "rank", progress=False
        )
        rank_wall[name] = time.perf_counter() - t0
        rows[name] = table.rows[0].seconds
        log(
            f"rank {name}: {rank_wall[name]:.1f} s "
            + str({k: round(v, 2) for k, v in rows[name].items()})
        )

    for i, name in enumerate(names):
        for step in (run_plain, run_rank) if i % 2 == 0 else (run_rank, run_plain):
            step(name)
    plain_total = sum(p["total"] for p in plain.values())
    rank_total = sum(rank_wall.values())
    extract = sum(s["extract"] for s in rows.values())
    overhead = sum(s["scores"] + s["probe"] for s in rows.values())
    log(f"rank: {rank_total:.1f} s vs plain {plain_total:.1f} s")
    return {
        "n": n,
        "backbones": names,
        "plain": plain,
        "plain_total_s": plain_total,
        "rank_total_s": rank_total,
        "ratio": rank_total / plain_total,
        "rank_wall": rank_wall,
        "rank_rows": rows,
        "rank_extract_s": extract,
        "rank_overhead_s": overhead,
        "overhead_share": overhead / extract,
    }


def pool_cost(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the times of repeated cost comparisons (each run's ratio is kept too)."""
    if len(runs) == 1:
        return {**runs[0], "ratios": [runs[0]["ratio"]]}
    names = runs[0]["backbones"]
    plain = {
        n: {k: sum(r["plain"][n][k] for r in runs) for k in ("load", "extract", "total")}
        for n in names
    }
    rows = {
        n: {k: sum(r["rank_rows"][n][k] for r in runs) for k in runs[0]["rank_rows"][n]}
        for n in names
    }
    plain_total = sum(r["plain_total_s"] for r in runs)
    rank_total = sum(r["rank_total_s"] for r in runs)
    extract = sum(r["rank_extract_s"] for r in runs)
    overhead = sum(r["rank_overhead_s"] for r in runs)
    return {
        "n": runs[0]["n"],
        "backbones": names,
        "repeats": len(runs),
        "plain": plain,
        "plain_total_s": plain_total,
        "rank_total_s": rank_total,
        "ratio": rank_total / plain_total,
        "ratios": [r["ratio"] for r in runs],
        "rank_rows": rows,
        "rank_extract_s": extract,
        "rank_overhead_s": overhead,
        "overhead_share": overhead / extract,
    }


def acceptance_tau(
    datasets: list[str], backbones: dict[str, Any], n_train: int, n_test: int, seed: int, root: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ds in datasets:
        train, test = splits_for(ds, n_train, n_test, seed)
        log(f"{ds}: {len(train)} train, {len(test)} test")
        cache = root / f"tau-{ds}"
        t0 = time.perf_counter()
        table = rank_backbones(
            train,
            list(backbones.values()),
            sample=len(train),
            seed=seed,
            cache_dir=cache,
            progress=False,
        )
        t_rank = time.perf_counter() - t0
        probe: dict[str, dict[str, Any]] = {}
        for name, bb in backbones.items():
            t1 = time.perf_counter()
            fs_tr = extract_features(bb, train, cache_dir=cache, progress=False)
            fs_te = extract_features(bb, test, cache_dir=cache, progress=False)
            head = LogisticHead(random_state=seed).fit(fs_tr.load(), train.labels)
            acc = float(np.mean(head.predict(fs_te.load()) == test.labels))
            probe[name] = {
                "test_accuracy": acc,
                "train_from_cache": fs_tr.computed_shards == 0,
                "test_extract_s": fs_te.seconds,
                "C": head.C_,
                "seconds": time.perf_counter() - t1,
            }
            log(
                f"{ds} {name}: test acc {acc:.4f} (train features cached: "
                f"{fs_tr.computed_shards == 0})"
            )
        rows = {r.name: r for r in table.rows}
        taus: dict[str, dict[str, Any]] = {}
        for score in SCORES:
            pairs = [
                (rows[n].score(score), probe[n]["test_accuracy"])
                for n in backbones
                if rows[n].score(score) is not None and math.isfinite(rows[n].score(score))
            ]
            if len(pairs) < 2:
                continue
            xs, ys = zip(*pairs, strict=True)
            try:
                tau = kendall_tau(xs, ys)
                wtau = kendall_tau(xs, ys, weighted=True)
            except ValueError:
                tau = wtau = float("nan")
            taus[score] = {"tau": tau, "weighted_tau": wtau, "models": len(pairs)}
        out[ds] = {
            "n_train": len(train),
            "n_test": len(test),
            "rank_s": t_rank,
            "table": table.to_dict(),
            "probe": probe,
            "tau": taus,
        }
        log(f"{ds}: " + ", ".join(f"{s} tau {v['tau']:+.2f}" for s, v in taus.items()))
    return out


def markdown(res: dict[str, Any]) -> str:
    lines: list[str] = []
    tau = res["tau"]
    if tau:
        dss = list(tau)
        lines += [
            "### Kendall tau of each score's ranking vs measured linear-probe test accuracy",
            "",
            "| score | " + " | ".join(dss) + " | mean |",
            "|---" * (len(dss) + 2) + "|",
        ]
        for s in SCORES:
            vals = [tau[d]["tau"].get(s, {}).get("tau") for d in dss]
            finite = [v for v in vals if v is not None and math.isfinite(v)]
            cells = [("-" if v is None or not math.isfinite(v) else f"{v:+.2f}") for v in vals]
            mean = f"{np.mean(finite):+.2f}" if finite else "-"
            models = max(tau[d]["tau"].get(s, {}).get("models", 0) for d in dss)
            lines.append(f"| {LABEL[s]} ({models} models) | " + " | ".join(cells) + f" | {mean} |")
        lines.append("")
        for d in dss:
            rows = {r["name"]: r for r in tau[d]["table"]["rows"]}
            lines += [
                f"#### {d}: {tau[d]['n_train']} train / {tau[d]['n_test']} test",
                "",
                "| backbone | LogME | H-score (shr.) | NCE | LEEP | CV probe (5-fold) | "
                "test acc (LogisticHead) | ms/example | rank (LogME) |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for name, p in tau[d]["probe"].items():
                r = rows[name]

                def f(x: Any, spec: str = ".3f") -> str:
                    return "-" if x is None else format(x, spec)

                lines.append(
                    f"| {name} | {f(r['logme'])} | {f(r['hscore'])} | {f(r['nce'])} | "
                    f"{f(r['leep'])} | {r['probe_accuracy']:.3f} ± {r['probe_std']:.3f} | "
                    f"{p['test_accuracy']:.4f} | {r['ms_per_example']:.1f} | {r['rank']} |"
                )
            lines.append("")
    c = res.get("cost")
    if c:
        lines += [
            f"### Ranking cost vs plain extraction ({c['n']} Fashion-MNIST examples, "
            f"{len(c['backbones'])} backbones)",
            "",
            "| backbone | plain: load s | plain: extract s | rank: load s | rank: extract s | "
            "rank: scores s | rank: probe s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in c["backbones"]:
            p, r = c["plain"][name], c["rank_rows"][name]
            lines.append(
                f"| {name} | {p['load']:.1f} | {p['extract']:.1f} | {r['load']:.1f} | "
                f"{r['extract']:.1f} | {r['scores']:.2f} | {r['probe']:.2f} |"
            )
        lines += [
            "",
            f"- plain extraction, all backbones (load + extract): {c['plain_total_s']:.1f} s",
            f"- `rank_backbones`, all backbones (load + extract + scores + probe): "
            f"{c['rank_total_s']:.1f} s",
            f"- ratio rank / plain: {c['ratio']:.3f} (acceptance: <= 1.05)",
            f"- inside the ranking: scores + probe = {c['rank_overhead_s']:.2f} s = "
            f"{100 * c['overhead_share']:.1f} % of its {c['rank_extract_s']:.1f} s of extraction",
            "",
        ]
    lp = res.get("logistic_probe")
    if lp:
        lines += [
            f"- CV probe timing on the {lp['backbone']} features of the same sample "
            f"(one BLAS thread): ridge {lp['ridge_s']:.2f} s (acc {lp['ridge_acc']:.3f}), "
            f"LogisticHead {lp['logistic_s']:.1f} s (acc {lp['logistic_acc']:.3f})",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 backbones, 120 examples")
    ap.add_argument("--json", help="also write every number to this JSON file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--skip-tau", action="store_true")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="repeat the cost comparison (fresh caches each time) and pool the times",
    )
    args = ap.parse_args()
    names = BACKBONES[:2] if args.quick else BACKBONES
    cost_names = COST_BACKBONES[:2] if args.quick else COST_BACKBONES
    n_cost, n_train, n_test = (120, 120, 100) if args.quick else (500, 1000, 1000)
    datasets = ["digits"] if args.quick else ["fashion-mnist", "mnist", "digits"]
    started = dt.datetime.now()
    log(f"bench_rank: {platform.node()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    res: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "command": " ".join(sys.argv),
        "tau": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-rank-") as tmp:
        root = Path(tmp)
        # Warm up: load every backbone and export its ONNX graph once (cached by the package).
        pool, _ = get_builtin("digits").load()
        warm = pool.subset(np.arange(8))
        loaded: dict[str, Any] = {}
        for name in names:
            t0 = time.perf_counter()
            bb = load_backbone(name)
            bb.eval()
            extract_features(bb, warm, cache_dir=root / "warm", progress=False)
            loaded[name] = bb
            log(f"warm-up {name}: {time.perf_counter() - t0:.1f} s")
        if not args.skip_cost:
            runs = [
                acceptance_cost(cost_names, n_cost, args.seed, root / f"cost-{i}")
                for i in range(max(1, args.repeat))
            ]
            res["cost"] = pool_cost(runs)
            # The logistic alternative for the CV probe, timed on the same features.
            from threadpoolctl import threadpool_limits

            from headstart.rank import take_sample

            pool, _ = get_builtin("fashion-mnist").load()
            ex = pool.subset(stratified_subset(pool.labels, n_cost, args.seed))
            sub = take_sample(ex, n_cost, args.seed, 5)
            feats = extract_features(
                loaded[names[0]], sub, cache_dir=root / "rank", progress=False
            ).load()
            with threadpool_limits(limits=1, user_api="blas"):
                t0 = time.perf_counter()
                r_acc, _, _ = probe_cv(feats, sub.labels, probe="ridge")
                t1 = time.perf_counter()
                l_acc, _, _ = probe_cv(feats, sub.labels, probe="logistic")
                t2 = time.perf_counter()
            res["logistic_probe"] = {
                "backbone": names[0],
                "ridge_s": t1 - t0,
                "ridge_acc": r_acc,
                "logistic_s": t2 - t1,
                "logistic_acc": l_acc,
            }
            log(f"probe timing: ridge {t1 - t0:.2f} s, logistic {t2 - t1:.1f} s")
        if not args.skip_tau:
            res["tau"] = acceptance_tau(datasets, loaded, n_train, n_test, args.seed, root)
    res["wall_s"] = (dt.datetime.now() - started).total_seconds()
    print()
    print(markdown(res))
    print(f"wall time: {res['wall_s'] / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
