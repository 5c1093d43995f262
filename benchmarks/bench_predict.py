"""Acceptance 5 of issue 13: `headstart predict MODEL table.csv --output out.csv` over 10,000
rows shows a progress bar and matches `headstart evaluate`'s accuracy.

One command, from the repository root::

    .venv/bin/python benchmarks/bench_predict.py [--model runs/NAME/model] [--work DIR]

Without ``--model`` it first fits a real model: fashion-mnist (built-in), the default image
backbone (torchvision mobilenet_v2, ImageNet weights), 1,000 labelled examples. It then
writes the official test split, all 10,000 images, as PNG files and a ``table.csv`` of
``image,label`` rows, and runs both commands as real processes on that same table:
``evaluate`` (the baseline: one call over the whole table, the feature cache and the engine
`fit` picks) and ``predict --output out.csv`` (streamed in batches, no cache). It prints the
accuracy of each, the accuracy recomputed from ``out.csv``, whether a progress bar reached
10000/10000, and the wall time of each with their ratio. Exits non-zero when the accuracies
differ or the bar is missing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
N_ROWS = 10_000


def headstart(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "headstart", *args], capture_output=True, text=True, env=env
    )
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"headstart {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return res, seconds


def write_table(work: Path) -> Path:
    """The fashion-mnist test split as PNG files and a table of relative paths and labels."""
    sys.path.insert(0, str(ROOT / "src"))
    from headstart.data.builtin import get_builtin

    table = work / "table.csv"
    if table.exists():
        return table
    _, test = get_builtin("fashion-mnist").load()
    assert test is not None and len(test) >= N_ROWS
    (work / "images").mkdir(parents=True, exist_ok=True)
    with open(work / "table.tmp", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label"])
        for i in range(N_ROWS):
            name = f"images/{i:05d}.png"
            Image.fromarray(test.inputs[i]).save(work / name)
            w.writerow([name, test.classes[int(test.labels[i])]])
    os.replace(work / "table.tmp", table)
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="a model bundle (default: fit one on fashion-mnist)")
    ap.add_argument("--work", default="/tmp/headstart-bench-predict", help="scratch folder")
    ap.add_argument("--batch-size", default="64")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:
        run = work / "run"
        if not (run / "model" / "headstart.json").exists():
            _, fit_s = headstart("fit", "fashion-mnist", "--train-size", "1000", "--strategy",
                                 "extract", "--out", str(run), "-q")  # fmt: skip
            print(f"fit: {fit_s:.1f} s")
        model = str(run / "model")
    table = write_table(work)
    ev, ev_s = headstart("evaluate", model, str(table))
    ev_acc = float(re.search(r"accuracy (\d\.\d+)", ev.stdout).group(1))  # type: ignore[union-attr]
    out = work / "out.csv"
    pr, pr_s = headstart("predict", model, str(table), "--output", str(out),
                         "--batch-size", args.batch_size)  # fmt: skip
    said = re.search(r"accuracy (\d\.\d+) on ([\d,]+) rows", pr.stderr)
    rows = list(csv.DictReader(out.open()))
    file_acc = sum(r["label"] == r["true_label"] for r in rows) / len(rows)
    bar = f"{N_ROWS}/{N_ROWS}" in pr.stderr and "predict: 100%" in pr.stderr
    result = {
        "model": model,
        "rows": len(rows),
        "evaluate_accuracy": ev_acc,
        "predict_accuracy_printed": float(said.group(1)) if said else None,
        "predict_accuracy_from_out_csv": round(file_acc, 6),
        "progress_bar_reached_end": bar,
        "evaluate_s": round(ev_s, 1),
        "predict_s": round(pr_s, 1),
        "predict_over_evaluate_time": round(pr_s / ev_s, 2),
    }
    print(json.dumps(result, indent=2))
    ok = bar and len(rows) == N_ROWS and f"{file_acc:.4f}" == f"{ev_acc:.4f}" and said
    print("PASS" if ok else "FAIL: accuracies differ, rows are missing or no progress bar")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
