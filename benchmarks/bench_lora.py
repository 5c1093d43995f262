"""LoRA against full fine-tuning on IMDB with all-MiniLM-L6-v2 (issue 12, acceptance 4).

    python benchmarks/bench_lora.py                      # 2,000 labels, 1 epoch, 64 tokens, 500 test
    python benchmarks/bench_lora.py --parallel --threads 1   # the two arms at once (shared CPUs)
    python benchmarks/bench_lora.py --n 100 --test-size 64 # a smoke run

The defaults are sized for 2 shared CPU cores (a full fine-tuning step of 16 reviews took
~19 s at 64 tokens there under a load average of 12): raise ``--epochs`` and ``--max-length``
(headstart's own default for this model is 256 tokens) where there is more compute.

Both arms run headstart's own ``finetune`` strategy (:func:`headstart.strategies.run_strategy`
with ``strategy="finetune"``) from the same linear probe (LP-FT), on the same splits:
``--n`` labelled reviews from the IMDB pool (stratified, seed 0; 80% train, 20% validation,
as ``headstart fit --train-size`` draws them) and ``--test-size`` reviews (stratified, seed 0)
from the official test split, or where the installed package has none, from the pool's
reviews outside the budget (disjoint from training and validation). The defaults of ``FinetuneConfig`` apply except:

* full fine-tuning: ``unfreeze=-1`` (every group), backbone rate ``lr / lr_ratio`` (1e-3 / 30);
* LoRA: ``peft="lora"``, rank 8, alpha 16, the attention query and value projections of all
  six blocks (``--lora-targets auto``), adapters at the head's rate (1e-3), backbone frozen;
* both: ``--epochs`` epochs, batch ``--batch-size``, at most ``--max-length`` tokens
  (head+tail), ``patience`` above the epoch count (every epoch runs; the best one is kept),
  ``keep_start=False`` (the trained model is compared, never the starting probe kept instead).

Each arm runs in its own process (the pristine features are computed once by the parent and
handed over; ``--parallel`` runs the two at once), so its peak memory is its own: the peak resident set size during fine-tuning
(``VmHWM`` after resetting it through ``/proc/self/clear_refs`` just before training) and the
resident size just before. Reported per arm: test accuracy, trainable parameters and their
share (head included), median optimiser-step time (epoch seconds / steps), peak memory, and
forgetting as :mod:`headstart.forgetting` measures it for text (linear CKA of pretrained vs
tuned features on 256 validation reviews, recorded by the strategy, and on 256 test reviews;
relative weight drift per layer group, of the merged weights for LoRA). Ratios are LoRA /
full fine-tuning, measured in the same run.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

BACKBONE = "hf:sentence-transformers/all-MiniLM-L6-v2"
PROBE = 256


def splits(n: int, test_size: int) -> tuple[Any, Any, Any]:
    from headstart.data import load_builtin
    from headstart.data.split import budget_split, stratified_subset

    pool, test = load_builtin("imdb")
    tr, va = budget_split(pool.labels, n, 0.2, seed=0)
    if test is None:  # the installed package has one pool: test on reviews outside the budget
        rest = np.setdiff1d(np.arange(len(pool)), np.concatenate([tr, va]))
        test = pool.subset(rest, name="imdb rest")
    te = stratified_subset(test.labels, test_size, 0)
    return (
        pool.subset(tr, name="imdb train"),
        pool.subset(va, name="imdb val"),
        test.subset(te, name="imdb test"),
    )


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def arm(args: argparse.Namespace) -> dict[str, Any]:
    """One fine-tuning run (``args.arm``: full or lora) in this process."""
    import torch

    from headstart.backbones import load_backbone
    from headstart.config import FinetuneConfig
    from headstart.features.cache import features_in_memory
    from headstart.forgetting import linear_cka
    from headstart.strategies import Context, run_strategy

    torch.set_num_threads(args.threads)
    train, val, test = splits(args.n, args.test_size)
    feats = np.load(args.features)
    bb = load_backbone(BACKBONE, max_length=args.max_length)
    common = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "patience": args.epochs + 1,
        "keep_start": False,  # compare the two trainings, not a fallback to the probe
    }
    if args.arm == "lora":
        cfg = FinetuneConfig(peft="lora", **common)
    else:
        cfg = FinetuneConfig(unfreeze=-1, **common)
    ctx = Context(
        backbone=bb,
        train=train,
        val=val,
        classes=list(train.classes),
        features=lambda b, ex: features_in_memory(b, ex),
        seed=0,
        train_features=feats["train"],
        val_features=feats["val"],
    )
    rss_before = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident size (VmHWM)
    t0 = time.perf_counter()
    result = run_strategy(ctx, "finetune", finetune=cfg)
    fit_s = time.perf_counter() - t0
    peak = rss_kib("VmHWM")
    chosen, extraction = result.chosen, result.extraction
    Ft = features_in_memory(chosen.backbone, test)
    acc = float(np.mean(np.argmax(chosen.head.predict_proba(Ft), 1) == test.labels))
    extract_acc = float(
        np.mean(np.argmax(extraction.head.predict_proba(feats["test"]), 1) == test.labels)
    )
    d = chosen.detail
    n_total = sum(p.numel() for p in chosen.backbone.parameters()) + sum(
        p.numel() for p in chosen.head.to_torch().parameters()
    )
    steps = [h["seconds"] / -(-len(train) // args.batch_size) for h in d["history"]]
    return {
        "arm": args.arm,
        "test_accuracy": round(acc, 4),
        "extraction_test_accuracy": round(extract_acc, 4),
        "val_accuracy": round(chosen.val_accuracy, 4),
        "val_accuracy_per_epoch": [round(h["val_accuracy"], 4) for h in d["history"]],
        "best_epoch": d["best_epoch"],
        "n_trainable": d["n_trainable"],
        "n_params": n_total,
        "trainable_share": d["n_trainable"] / n_total,
        "step_s": round(float(np.median(steps)), 3),
        "epoch_s": [round(h["seconds"], 1) for h in d["history"]],
        "fit_s": round(fit_s, 1),
        "rss_before_mib": round(rss_before / 1024),
        "peak_rss_mib": round(peak / 1024),
        "cka_val": round(d["forgetting"]["cka"], 4),
        "cka_test": round(linear_cka(feats["test"][:PROBE], Ft[:PROBE]), 4),
        "weight_drift": d["forgetting"]["weight_drift"],
        "peft": d.get("peft"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="labelled reviews (train + validation)")
    ap.add_argument("--test-size", type=int, default=500, help="official test reviews scored")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64, help="tokens per review")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per arm")
    ap.add_argument(
        "--parallel",
        action="store_true",
        help="run the two arms at the same time (each with --threads): on a loaded shared "
        "machine both then see the same contention, and the run takes about half as long",
    )
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--arm", choices=("full", "lora"), help=argparse.SUPPRESS)
    ap.add_argument("--features", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:  # a child: one arm, JSON on the last line of stdout
        print(json.dumps(arm(args)))
        return

    import torch

    from headstart.backbones import load_backbone
    from headstart.features.cache import features_in_memory

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train, val, test = splits(args.n, args.test_size)
    bb = load_backbone(BACKBONE, max_length=args.max_length)
    tmp = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    feats = tmp / "features.npz"
    np.savez(feats, **{k: features_in_memory(bb, ex) for k, ex in (("train", train), ("val", val), ("test", test))})  # fmt: skip
    extract_s = time.perf_counter() - t0
    print(
        f"IMDB: {len(train)} train, {len(val)} validation, {len(test)} test reviews; "
        f"{args.epochs} epochs, batch {args.batch_size}, {args.max_length} tokens; pristine "
        f"features in {extract_s:.0f} s",
        flush=True,
    )
    rows, procs = {}, {}
    for name in ("full", "lora"):
        cmd = [sys.executable, __file__, "--arm", name, "--features", str(feats)]
        for k in ("n", "test_size", "epochs", "batch_size", "max_length", "threads"):
            cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
        procs[name] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if not args.parallel:
            procs[name].wait()
    for name, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"{name} failed:\n{stderr[-3000:]}")
        rows[name] = json.loads(stdout.strip().splitlines()[-1])
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    full, lora = rows["full"], rows["lora"]

    def line(label: str, key: str, fmt: str, ratio: bool = True) -> str:
        a, b = full[key], lora[key]
        r = f"{b / a:.3f}x" if ratio and a else ""
        return f"| {label} | {format(a, fmt)} | {format(b, fmt)} | {r} |"

    print("\n| | full fine-tuning | LoRA (r 8, alpha 16, query+value) | LoRA / full |")
    print("|---|---|---|---|")
    print(line(f"test accuracy ({len(test)} reviews)", "test_accuracy", ".4f", ratio=False))
    print(line("validation accuracy (best epoch)", "val_accuracy", ".4f", ratio=False))
    print(line("trainable parameters (head included)", "n_trainable", ",d"))
    print(line("trainable share", "trainable_share", ".2%"))
    print(line("median step, s", "step_s", ".3f"))
    print(line("peak RSS during fine-tuning, MiB", "peak_rss_mib", "d"))
    print(line("RSS before fine-tuning, MiB", "rss_before_mib", "d"))
    print(line("CKA pretrained vs tuned, 256 val reviews", "cka_val", ".4f", ratio=False))
    print(line("CKA pretrained vs tuned, 256 test reviews", "cka_test", ".4f", ratio=False))
    print(line("fit wall time, s", "fit_s", ".1f"))
    print(f"\nextraction (linear probe) test accuracy: {full['extraction_test_accuracy']:.4f}")
    print(f"weight drift, full: {full['weight_drift']}\nweight drift, LoRA: {lora['weight_drift']}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
