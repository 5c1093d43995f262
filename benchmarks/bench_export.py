"""Issue 13, acceptance 1: `headstart export` of three real models, checked on whole test splits.

One command, from the repository root::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_export.py [--work DIR] [--only NAME]

For each model (trained here with `headstart fit` when ``DIR/<name>/model`` is missing, on
the same splits as the fit: seed 0, 20% test):

* ``digits-extract``: torchvision mobilenet_v2 (offline ImageNet weights), frozen, logistic
  head, digits;
* ``digits-finetune``: the same backbone with its top 2 layer groups fine-tuned (2 epochs);
* ``pang-lee-extract``: all-MiniLM-L6-v2, frozen, on pang-lee with a budget of 1,000 reviews.

it exports the bundle with ``--int8`` and runs PyTorch (the bundle's prediction path), the
float32 graph and the int8 graph on every example of the test split, in the same batches
(32), interleaved batch by batch so load from other work on the machine hits all three
alike. Reported: max abs difference of probabilities and label agreement (float32 and int8
against PyTorch), accuracies, the int8 accuracy drop, and the int8 speed-up over the float32
graph (ONNX Runtime time only, preprocessing excluded). Results go to ``DIR/bench_export.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CASES: dict[str, dict[str, Any]] = {
    "digits-extract": {
        "data": "digits",
        "train_size": None,
        "fit": shlex.split("--backbone torchvision:mobilenet_v2 --strategy extract"),
    },
    "digits-finetune": {
        "data": "digits",
        "train_size": None,
        "fit": shlex.split(
            "--backbone torchvision:mobilenet_v2 --strategy finetune --unfreeze 2 --epochs 2"
        ),
    },
    "pang-lee-extract": {
        "data": "pang-lee",
        "train_size": 1000,
        "fit": shlex.split(
            "--backbone hf:sentence-transformers/all-MiniLM-L6-v2 --strategy extract "
            "--train-size 1000"
        ),
    },
}


def fit_if_missing(name: str, case: dict[str, Any], work: Path) -> Path:
    run = work / name
    if not (run / "model" / "headstart.json").exists():
        cmd = [sys.executable, "-m", "headstart", "fit", case["data"], *case["fit"],
               "--no-baseline", "--time-budget", "inf", "--out", str(run), "-q"]  # fmt: skip
        print("$", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, check=True)
    return run


def bench(name: str, case: dict[str, Any], work: Path) -> dict[str, Any]:
    from headstart.data.load import load_data
    from headstart.export import export_bundle

    run = fit_if_missing(name, case, work)
    metrics = json.loads((run / "metrics.json").read_text())
    test = load_data(case["data"], train_size=case["train_size"], seed=0).test
    assert test is not None and len(test) == metrics["n_test"], "not the fit's test split"
    classes = json.loads((run / "model" / "headstart.json").read_text())["classes"]
    labels = np.array([classes.index(c) for c in test.classes])[test.labels]
    t0 = time.perf_counter()
    res = export_bundle(
        run / "model",
        work / "onnx" / f"{name}.onnx",
        int8=True,
        examples=test,
        source=f"{case['data']} test split ({len(test)})",
        labels=labels,
    )
    par = res.parity
    sec = par["seconds"]
    row = {
        "model": name,
        "n_test": par["n"],
        "fit_test_accuracy": metrics["test"]["accuracy"],
        "onnx": par["onnx"],
        "int8": par["int8"],
        "accuracy": par["accuracy"],
        "seconds": sec,
        "int8_speedup_vs_fp32_onnx": sec["onnx"] / sec["int8"],
        "onnx_speedup_vs_torch": sec["torch"] / sec["onnx"],
        "size_mb": {
            "fp32": res.model.stat().st_size / 1e6,
            "int8": res.int8.stat().st_size / 1e6 if res.int8 else None,
        },
        "export_and_check_s": time.perf_counter() - t0,
        "ok": par["ok"] and par["onnx"]["label_agreement"] >= 0.999,
    }
    print(
        f"{name}: {par['n']} test examples; float32 graph vs PyTorch: max abs diff "
        f"{par['onnx']['max_abs_diff']:.2e}, labels agree {par['onnx']['label_agreement']:.2%}; "
        f"int8: max abs diff {par['int8']['max_abs_diff']:.2e}, labels agree "
        f"{par['int8']['label_agreement']:.2%}; accuracy torch {par['accuracy']['torch']:.4f} "
        f"(fit reported {metrics['test']['accuracy']:.4f}), onnx {par['accuracy']['onnx']:.4f}, "
        f"int8 {par['accuracy']['int8']:.4f} (drop {par['accuracy']['int8_drop']:+.4f}); "
        f"time torch {sec['torch']:.2f} s, onnx {sec['onnx']:.2f} s, int8 {sec['int8']:.2f} s "
        f"(int8 speed-up {row['int8_speedup_vs_fp32_onnx']:.2f}x); size "
        f"{row['size_mb']['fp32']:.1f} MB -> {row['size_mb']['int8']:.1f} MB",
        flush=True,
    )
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/hs-export-bench", help="run folders and outputs")
    ap.add_argument("--only", choices=sorted(CASES), action="append")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = [bench(n, CASES[n], work) for n in (args.only or CASES)]
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    (work / "bench_export.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {work / 'bench_export.json'}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
