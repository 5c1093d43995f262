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

``--draws N`` repeats the ranking and the probe on N stratified training draws (seeds
``seed .. seed + N - 1``; an official test split stays fixed) and takes tau between the
scores and accuracies averaged over the draws; each draw's LogME tau is reported too. One
draw of 1,000 moves a backbone's test accuracy by up to a point, as much as the CNNs differ
on Fashion-MNIST. ``--test-size`` sets the test examples per data set (default 1,000),
``--datasets`` picks the data sets, and ``--finetune DATASET`` also fine-tunes every backbone
with the package defaults on the first draw and reports tau against those accuracies.

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
from headstart.features.cache import extract_features
from headstart.heads import LogisticHead
from headstart.selection import kendall_tau, probe_cv, rank_backbones

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


def splits_for(
    name: str, n_train: int, n_test: int, seed: int, test_seed: int | None = None
) -> tuple[Examples, Examples]:
    """Stratified training draw ``seed``; the test split is a stratified subsample of the
    official test split (drawn with ``test_seed``, so it stays fixed across training draws),
    or, without one, (a subsample of) the examples the draw left."""
    pool, official = get_builtin(name).load()
    test_seed = seed if test_seed is None else test_seed
    if official is not None:
        train = pool.subset(stratified_subset(pool.labels, n_train, seed), name=f"{name} train")
        test = official.subset(
            stratified_subset(official.labels, min(n_test, len(official)), test_seed),
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


def _taus(scores: dict[str, dict[str, float | None]], acc: dict[str, float]) -> dict[str, Any]:
    """Kendall tau-b of each score's ranking against ``acc``, over the backbones that have it."""
    taus: dict[str, dict[str, Any]] = {}
    for score in SCORES:
        pairs = [
            (v, acc[n])
            for n, row in scores.items()
            if (v := row.get(score)) is not None and math.isfinite(v)
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
    return taus


def _mean(vals: list[float | None]) -> float | None:
    return None if any(v is None for v in vals) else float(np.mean(vals))  # type: ignore[arg-type]


def acceptance_tau(
    datasets: list[str],
    backbones: dict[str, Any],
    n_train: int,
    n_test: int,
    seed: int,
    root: Path,
    draws: int = 1,
) -> dict[str, Any]:
    """Per data set and draw of the training examples (seeds ``seed .. seed + draws - 1``):
    scores from ``rank_backbones`` and the linear probe's test accuracy. Kendall tau is taken
    between the scores and accuracies averaged over the draws (and per draw, reported too):
    one draw of 1,000 examples moves both by about a point, as much as backbones differ."""
    out: dict[str, Any] = {}
    for ds in datasets:
        per_draw: list[dict[str, Any]] = []
        for d in range(draws):
            s = seed + d
            train, test = splits_for(ds, n_train, n_test, s, test_seed=seed)
            log(f"{ds} draw {d}: {len(train)} train, {len(test)} test")
            cache = root / f"tau-{ds}"
            t0 = time.perf_counter()
            table = rank_backbones(
                train,
                list(backbones.values()),
                sample=len(train),
                seed=s,
                cache_dir=cache,
                progress=False,
            )
            t_rank = time.perf_counter() - t0
            probe: dict[str, dict[str, Any]] = {}
            for name, bb in backbones.items():
                t1 = time.perf_counter()
                fs_tr = extract_features(bb, train, cache_dir=cache, progress=False)
                fs_te = extract_features(bb, test, cache_dir=cache, progress=False)
                head = LogisticHead(random_state=s).fit(fs_tr.load(), train.labels)
                acc = float(np.mean(head.predict(fs_te.load()) == test.labels))
                probe[name] = {
                    "test_accuracy": acc,
                    "train_from_cache": fs_tr.computed_shards == 0,
                    "test_extract_s": fs_te.seconds,
                    "C": head.C_,
                    "seconds": time.perf_counter() - t1,
                }
                log(
                    f"{ds} draw {d} {name}: test acc {acc:.4f} (train features cached: "
                    f"{fs_tr.computed_shards == 0})"
                )
            rows = {r.name: r for r in table.rows}
            scores = {n: {sc: rows[n].score(sc) for sc in SCORES} for n in backbones}
            taus = _taus(scores, {n: probe[n]["test_accuracy"] for n in backbones})
            per_draw.append(
                {
                    "seed": s,
                    "n_train": len(train),
                    "n_test": len(test),
                    "rank_s": t_rank,
                    "table": table.to_dict(),
                    "scores": scores,
                    "probe": probe,
                    "tau": taus,
                }
            )
            log(f"{ds} draw {d}: " + ", ".join(f"{k} tau {v['tau']:+.2f}" for k, v in taus.items()))
        mean_scores = {
            n: {sc: _mean([pd["scores"][n][sc] for pd in per_draw]) for sc in SCORES}
            for n in backbones
        }
        accs = {n: [pd["probe"][n]["test_accuracy"] for pd in per_draw] for n in backbones}
        mean_acc = {n: float(np.mean(a)) for n, a in accs.items()}
        taus = _taus(mean_scores, mean_acc)
        out[ds] = {
            "draws": per_draw,
            "n_train": per_draw[0]["n_train"],
            "n_test": per_draw[0]["n_test"],
            "mean_scores": mean_scores,
            "mean_accuracy": mean_acc,
            "std_accuracy": {n: float(np.std(a)) for n, a in accs.items()},
            "tau": taus,
        }
        log(
            f"{ds} (mean of {draws}): "
            + ", ".join(f"{k} tau {v['tau']:+.2f}" for k, v in taus.items())
        )
    return out


def finetuned_accuracies(
    ds: str,
    backbones: dict[str, Any],
    n_train: int,
    n_test: int,
    seed: int,
    root: Path,
    tau: dict[str, Any] | None,
) -> dict[str, Any]:
    """Fine-tune every backbone on draw ``seed``'s training examples with the package's
    defaults (``FinetuneConfig()``: LP-FT from a logistic probe, top 2 layer groups, backbone
    LR 30x below the head's, 5 epochs, early stopping on a stratified 20 % of the training
    examples) and score it on the same test split as the probe."""
    import copy

    import torch

    from headstart.config import FinetuneConfig
    from headstart.features.cache import features_in_memory
    from headstart.strategies.training import finetune

    train, test = splits_for(ds, n_train, n_test, seed, test_seed=seed)
    rest, va = stratified_split(train.labels, max(1, len(train) // 5), seed)
    tr_ex, va_ex = train.subset(rest), train.subset(va)
    cache = root / f"ft-{ds}"
    res: dict[str, Any] = {"data": ds, "n_train": len(rest), "n_val": len(va), "n_test": len(test)}
    acc: dict[str, float] = {}
    for name, bb0 in backbones.items():
        t0 = time.perf_counter()
        bb = copy.deepcopy(bb0)
        f_tr = extract_features(bb, tr_ex, cache_dir=cache, progress=False).load()
        f_va = extract_features(bb, va_ex, cache_dir=cache, progress=False).load()
        probe = LogisticHead(refit=False, random_state=seed).fit(
            f_tr, tr_ex.labels, f_va, va_ex.labels
        )
        cfg = FinetuneConfig()
        model, fr = finetune(bb, probe.to_torch(), tr_ex, va_ex, cfg, seed=seed, progress=False)
        F = features_in_memory(model.backbone, test)
        with torch.inference_mode():
            logits = model.head.cpu().eval()(torch.from_numpy(F)).numpy()
        acc[name] = float(np.mean(logits.argmax(1) == test.labels))
        res[name] = {
            "test_accuracy": acc[name],
            "val_accuracy": fr.val_accuracy,
            "start_val_accuracy": fr.start_val_accuracy,
            "kept_start": fr.kept_start,
            "seconds": time.perf_counter() - t0,
        }
        log(f"{ds} fine-tuned {name}: test acc {acc[name]:.4f} ({res[name]['seconds']:.0f} s)")
    res["config"] = {**FinetuneConfig().to_dict(), "seed": seed}
    if tau is not None and ds in tau:
        res["tau"] = _taus(tau[ds]["mean_scores"], acc)
        res["tau_probe_vs_finetuned"] = kendall_tau(
            [tau[ds]["mean_accuracy"][n] for n in acc], [acc[n] for n in acc]
        )
    return res


def markdown(res: dict[str, Any]) -> str:
    lines: list[str] = []
    tau = res["tau"]

    def f(x: Any, spec: str = ".3f") -> str:
        return "-" if x is None else format(x, spec)

    if tau:
        dss = list(tau)
        draws = len(tau[dss[0]]["draws"])
        lines += [
            "### Kendall tau of each score's ranking vs measured linear-probe test accuracy",
            "",
            f"Scores and accuracies averaged over {draws} training draw(s) per data set.",
            "",
            "| score | " + " | ".join(dss) + " | mean |",
            "|---" * (len(dss) + 2) + "|",
        ]
        for sc in SCORES:
            vals = [tau[d]["tau"].get(sc, {}).get("tau") for d in dss]
            finite = [v for v in vals if v is not None and math.isfinite(v)]
            cells = [("-" if v is None or not math.isfinite(v) else f"{v:+.2f}") for v in vals]
            mean = f"{np.mean(finite):+.2f}" if finite else "-"
            models = max(tau[d]["tau"].get(sc, {}).get("models", 0) for d in dss)
            lines.append(f"| {LABEL[sc]} ({models} models) | " + " | ".join(cells) + f" | {mean} |")
        if draws > 1:
            per = [
                ", ".join(f"{pd['tau']['logme']['tau']:+.2f}" for pd in tau[d]["draws"])
                for d in dss
            ]
            lines.append("| LogME, each draw alone | " + " | ".join(per) + " | |")
        lines.append("")
        for d in dss:
            t = tau[d]
            lines += [
                f"#### {d}: {t['n_train']} train / {t['n_test']} test, mean of {draws} draw(s)",
                "",
                "| backbone | LogME | H-score (shr.) | NCE | LEEP | CV ridge probe | "
                "test acc (LogisticHead) | ms/example | rank (LogME) |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            ms = t["mean_scores"]
            order = sorted(ms, key=lambda n: -(ms[n]["logme"] or -np.inf))
            for name in t["mean_accuracy"]:
                r = ms[name]
                msx = np.mean(
                    [
                        next(x for x in pd["table"]["rows"] if x["name"] == name)["ms_per_example"]
                        for pd in t["draws"]
                    ]
                )
                lines.append(
                    f"| {name} | {f(r['logme'])} | {f(r['hscore'])} | {f(r['nce'])} | "
                    f"{f(r['leep'])} | {f(r['probe_accuracy'])} | "
                    f"{t['mean_accuracy'][name]:.4f} ± {t['std_accuracy'][name]:.4f} | "
                    f"{msx:.1f} | {order.index(name) + 1} |"
                )
            lines.append("")
    ft = res.get("finetuned")
    if ft:
        names = [n for n in ft if isinstance(ft[n], dict) and "test_accuracy" in ft[n]]
        lines += [
            f"### Fine-tuned accuracies on {ft['data']} ({ft['n_train']} train + {ft['n_val']} "
            f"validation, {ft['n_test']} test; `FinetuneConfig()` defaults)",
            "",
            "| backbone | linear probe test acc | fine-tuned test acc | seconds |",
            "|---|---|---|---|",
        ]
        for n in names:
            probe_acc = tau.get(ft["data"], {}).get("mean_accuracy", {}).get(n) if tau else None
            lines.append(
                f"| {n} | {f(probe_acc, '.4f')} | {ft[n]['test_accuracy']:.4f} | "
                f"{ft[n]['seconds']:.0f} |"
            )
        if "tau" in ft:
            lines += [
                "",
                "Kendall tau vs the fine-tuned accuracies: "
                + ", ".join(f"{LABEL[k]} {v['tau']:+.2f}" for k, v in ft["tau"].items())
                + f"; linear-probe accuracy {ft['tau_probe_vs_finetuned']:+.2f}.",
            ]
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
    ap.add_argument("--datasets", help="comma-separated (default fashion-mnist,mnist,digits)")
    ap.add_argument("--draws", type=int, default=1, help="training draws per data set (tau)")
    ap.add_argument("--test-size", type=int, help="test examples per data set (default 1000)")
    ap.add_argument(
        "--finetune", metavar="DATASET", help="also fine-tune every backbone on DATASET"
    )
    ap.add_argument("--backbones", help="comma-separated backbone names (default: the five)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="repeat the cost comparison (fresh caches each time) and pool the times",
    )
    args = ap.parse_args()
    names = BACKBONES[:2] if args.quick else BACKBONES
    if args.backbones:
        names = args.backbones.split(",")
    cost_names = COST_BACKBONES[:2] if args.quick else COST_BACKBONES
    n_cost, n_train, n_test = (120, 120, 100) if args.quick else (500, 1000, 1000)
    datasets = ["digits"] if args.quick else ["fashion-mnist", "mnist", "digits"]
    if args.datasets:
        datasets = args.datasets.split(",")
    if args.test_size:
        n_test = args.test_size
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

            from headstart.selection import take_sample

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
            res["tau"] = acceptance_tau(
                datasets, loaded, n_train, n_test, args.seed, root, draws=args.draws
            )
        if args.finetune:
            res["finetuned"] = finetuned_accuracies(
                args.finetune, loaded, n_train, n_test, args.seed, root, res["tau"] or None
            )
    res["wall_s"] = (dt.datetime.now() - started).total_seconds()
    print()
    print(markdown(res))
    print(f"wall time: {res['wall_s'] / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
