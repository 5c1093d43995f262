"""The default path end to end: what `headstart fit` chooses, how long it takes, what it wastes.

    PYTHONPATH=src python benchmarks/bench_ladder.py                      # default budget only
    PYTHONPATH=src python benchmarks/bench_ladder.py --budgets 60s,30m    # both budgets (hours)
    PYTHONPATH=src python benchmarks/bench_ladder.py --sets digits --hindsight

Each row is one real process, ``headstart fit <set> --time-budget <b>`` with every other
setting at its default except the labelled budget (``--train-size``, per set below, as in
the README and benchmarks/RESULTS.md), timed by wall clock with the machine's load average.
Printed per set and budget:

* the chosen path (backbone, input size, rung) and the wall time;
* discarded work: seconds spent on rungs that ran and were not kept, plus the share of
  ranking spent on candidates that were not chosen, as a share of the wall time;
* the test accuracy (± its standard error) on the test examples the run scored;
* with ``--hindsight``: every rung the run considered (ran or skipped) is run to completion
  once, with the same backbone and the same test examples (``--test-size n`` takes the
  subset the planner took), and the regret is the best of them minus the run's accuracy.

A set that is not installed is skipped with the command that installs it. Results go to
stdout as a Markdown table and to ``--json`` (default ``/tmp/bench_ladder.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: labelled budget per set (None: all of it); the README's and RESULTS.md's settings
TRAIN_SIZE: dict[str, int | None] = {
    "digits": None,
    "fashion-mnist": 1000,
    "mnist": 1000,
    "imdb": 1000,
    "pang-lee": None,
    "spoken-commands": None,
}


def _fit(args: list[str], out: Path) -> tuple[float, dict[str, Any], dict[str, Any], str]:
    cmd = [sys.executable, "-m", "headstart", "fit", *args, "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    decisions = json.loads((out / "decisions.json").read_text())
    return wall, metrics, decisions, " ".join(cmd[2:])


def _discarded(metrics: dict[str, Any], decisions: dict[str, Any]) -> float:
    chosen = decisions.get("chosen")
    waste = sum(r["seconds"] for r in decisions["rungs"] if r["label"] != chosen)
    table = (decisions.get("backbone") or {}).get("table")
    for st in metrics.get("steps", []):
        if st["name"] == "rank backbones" and st["action"] == "ran" and table:
            n = max(1, len(table["rows"]))
            waste += st.get("seconds", 0.0) * (n - 1) / n
    return waste


def _installed(name: str) -> bool:
    from headstart.data.builtin import get_builtin

    return get_builtin(name).is_installed()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(TRAIN_SIZE))
    ap.add_argument("--budgets", default="60s")
    ap.add_argument("--hindsight", action="store_true")
    ap.add_argument("--json", default="/tmp/bench_ladder.json")
    ap.add_argument("--keep", default=None, help="keep the run folders here (default: deleted)")
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    print(
        "| set | budget | chosen path | wall s | discarded | test accuracy | n test | best in hindsight | regret |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-ladder-") as scratch:
        tmp = args.keep or scratch
        for name in args.sets.split(","):
            if not _installed(name):
                print(
                    f"| {name} | | not installed: headstart datasets --install {name} | | | | | | |"
                )
                continue
            size = TRAIN_SIZE.get(name)
            base = [name] + (["--train-size", str(size)] if size else [])
            for budget in args.budgets.split(","):
                out = Path(tmp) / f"{name}-{budget}"
                wall, m, d, cmd = _fit([*base, "--time-budget", budget], out)
                res = m.get("test") or m["val"]
                cfg = json.loads((out / "config.json").read_text())["resolved"]
                px = f" @ {cfg['image_size']} px" if cfg.get("image_size") else ""
                path = f"{m['backbone']}{px}, {d['chosen']}"
                row: dict[str, Any] = {
                    "set": name, "budget": budget, "command": cmd, "path": path,
                    "wall_s": round(wall, 1), "discarded_s": round(_discarded(m, d), 1),
                    "accuracy": res["accuracy"], "se": res.get("accuracy_se"),
                    "n_test": m.get("n_test"), "load": os.getloadavg()[0],
                }  # fmt: skip
                hind = ""
                if args.hindsight:
                    scores = {}
                    considered = [r["unfreeze"] for r in d["rungs"]]
                    for st in d.get("skipped", []):
                        if "top" in st["step"]:
                            considered.append(int(st["step"].split("top ")[1].split()[0]))
                    for k in sorted(set(considered)):
                        extra = ["--strategy", "extract"] if k == 0 else [
                            "--strategy", "finetune", "--unfreeze", str(k)]  # fmt: skip
                        o = Path(tmp) / f"{name}-{budget}-hind-{k}"
                        px_flag = ["--image-size", str(cfg["image_size"])] if px else []
                        _, hm, _, _ = _fit(
                            [*base, "--backbone", m["backbone"], *px_flag, *extra,
                             "--time-budget", "inf", "--test-size", str(m.get("n_test"))], o
                        )  # fmt: skip
                        scores[k] = hm["test"]["accuracy"]
                    best = max(scores.values())
                    row["hindsight"] = scores
                    row["regret_points"] = round(100 * (best - res["accuracy"]), 2)
                    hind = f"{best:.4f} | {row['regret_points']:+.2f} pts"
                else:
                    hind = "- | -"
                rows.append(row)
                Path(args.json).write_text(json.dumps(rows, indent=2))  # after every row
                se = f" ± {row['se']:.4f}" if row["se"] else ""
                print(
                    f"| {name} | {budget} | {path} | {row['wall_s']:.1f} | "
                    f"{100 * row['discarded_s'] / max(1e-9, wall):.0f}% | "
                    f"{row['accuracy']:.4f}{se} | {row['n_test']} | {hind} |",
                    flush=True,
                )
    Path(args.json).write_text(json.dumps(rows, indent=2))
    print(f"rows written to {args.json}")


if __name__ == "__main__":
    main()
