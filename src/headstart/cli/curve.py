"""`headstart curve DATA`: the data-efficiency study (learning curves per strategy)."""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING, Any

from ..config import parse_duration
from ..errors import ConfigError
from ..plan import DEFAULT_TIME_BUDGET_S

if TYPE_CHECKING:
    from ..curve import CurveConfig


def parse_fractions(text: str) -> list[float]:
    """``"0.01,0.1,1.0"`` or ``"1%,10%,100%"`` → ``[0.01, 0.1, 1.0]``."""
    try:
        values = [
            float(t.strip().rstrip("%")) / (100.0 if t.strip().endswith("%") else 1.0)
            for t in text.split(",")
            if t.strip()
        ]
    except ValueError:
        raise ConfigError(
            f"--fractions takes comma-separated fractions such as 0.01,0.1,1.0 (or "
            f"1%,10%,100%); got {text!r}."
        ) from None
    return values


def _strategies(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "curve",
        help="data-efficiency study: from scratch vs extraction vs fine-tuning per label budget",
        description="For each fraction of the training labels and each seed, train every strategy on "
        "the same split and score it on one test split. Writes cells/, curve.json, results.md, "
        "curve.png and report.html to --out; run the same command again to resume.",
    )
    p.add_argument(
        "data",
        nargs="?",
        default="fashion-mnist",
        help="image folder, table file or built-in data set (default: fashion-mnist)",
    )
    p.add_argument(
        "--fractions",
        type=str,
        default="0.01,0.05,0.1,0.5,1.0",
        help="fractions of the training labels (default: 0.01,0.05,0.1,0.5,1.0)",
    )
    p.add_argument(
        "--strategies",
        type=str,
        default="scratch,extract,finetune",
        help="any of extract, finetune, auto (the ladder as `fit` runs it), scratch, cnn, "
        "baseline (scratch on images adds cnn; default: scratch,extract,finetune)",
    )
    p.add_argument(
        "--time-budget",
        type=parse_duration,
        default=DEFAULT_TIME_BUDGET_S,
        help="each auto cell's budget, as `fit --time-budget` (e.g. 60s, 30m; inf: no limit; "
        f"default {DEFAULT_TIME_BUDGET_S:g}s)",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per cell: 0..N-1 (default 3)")
    p.add_argument("--backbone", default="auto", help="pretrained backbone (default: auto)")
    p.add_argument("--out", default=None, help="study folder (default: runs/curve-<data name>)")
    p.add_argument(
        "--train-size", type=int, help="cap the label pool at N examples (fraction 1.0 means N)"
    )
    p.add_argument("--test-size", type=int, help="stratified subsample of the test split")
    p.add_argument("--test", help="explicit test file/folder")
    p.add_argument("--text-column")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--image-size", type=int)
    p.add_argument(
        "--skip-bad-files",
        action="store_true",
        help="skip unreadable inputs (each is reported) instead of stopping",
    )
    p.add_argument("--max-length", type=int)
    p.add_argument("--engine", default="auto", choices=("auto", "torch", "onnx"))
    p.add_argument("--batch-size", type=int)
    p.add_argument("--cache-dir")
    ft = p.add_argument_group("fine-tuning (as `headstart fit --strategy finetune`)")
    ft.add_argument("--unfreeze", type=int, default=2)
    ft.add_argument("--epochs", type=int, default=5)
    ft.add_argument("--lr", type=float, default=1e-3)
    ft.add_argument("--lr-ratio", type=float, default=30.0)
    ft.add_argument("--finetune-batch-size", type=int, default=32)
    ft.add_argument("--patience", type=int, default=2)
    ft.add_argument("--mixed-precision", default="auto", choices=("auto", "no", "bf16", "fp16"))
    sc = p.add_argument_group("from scratch")
    sc.add_argument("--scratch-epochs", type=int, default=15)
    sc.add_argument("--scratch-lr", type=float, help="default 1e-3 for images, 5e-4 for text")
    sc.add_argument(
        "--scratch-min-steps",
        type=int,
        default=300,
        help="train at least this many optimiser steps (small budgets get more epochs)",
    )
    sc.add_argument("--scratch-patience", type=int, default=4)
    sc.add_argument("--cnn-epochs", type=int, default=30)
    sc.add_argument("--cnn-lr", type=float, default=2e-3)
    sc.add_argument("--cnn-min-steps", type=int, default=500)
    sc.add_argument("--cnn-patience", type=int, default=6)
    p.add_argument(
        "--max-cells", type=int, help="compute at most N new cells, then stop (run again to go on)"
    )
    p.add_argument(
        "--track",
        default="none",
        choices=("none", "tensorboard", "mlflow"),
        help="also log to TensorBoard (<out>/tb) or MLflow (SQLite file <out>/mlflow.db)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..curve import CurveConfig, run_curve
    from ..preflight import check_image_size, check_out_dir
    from ..tracking import check_tracker

    if args.max_cells is not None and args.max_cells < 0:
        raise ConfigError(f"--max-cells must be 0 or more; got {args.max_cells}.")
    out = args.out or str(Path("runs") / f"curve-{Path(args.data.rstrip('/')).stem}")
    check_image_size(args.image_size)
    check_out_dir(out)
    check_tracker(args.track)
    cfg = CurveConfig.build(
        data=args.data,
        out=out,
        fractions=parse_fractions(args.fractions),
        strategies=_strategies(args.strategies),
        seeds=args.seeds,
        backbone=args.backbone,
        text_column=args.text_column,
        image_column=args.image_column,
        label_column=args.label_column,
        test=args.test,
        train_size=args.train_size,
        test_size=args.test_size,
        skip_bad_files=args.skip_bad_files,
        image_size=args.image_size,
        max_length=args.max_length,
        engine=args.engine,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        unfreeze=args.unfreeze,
        epochs=args.epochs,
        lr=args.lr,
        lr_ratio=args.lr_ratio,
        finetune_batch_size=args.finetune_batch_size,
        patience=args.patience,
        mixed_precision=args.mixed_precision,
        scratch_epochs=args.scratch_epochs,
        scratch_lr=args.scratch_lr,
        scratch_min_steps=args.scratch_min_steps,
        scratch_patience=args.scratch_patience,
        cnn_epochs=args.cnn_epochs,
        cnn_lr=args.cnn_lr,
        cnn_min_steps=args.cnn_min_steps,
        cnn_patience=args.cnn_patience,
        track=args.track,
        time_budget_s=args.time_budget,
    )
    res = run_curve(
        cfg, progress=not args.quiet, max_new_cells=args.max_cells, command=_command(cfg)
    )
    left = res.total - len(res.computed) - len(res.reused)
    print(
        f"cells: {len(res.computed)} computed, {len(res.reused)} reused (finished earlier), "
        f"{left} left" + ("" if res.complete else ": run the same command again to go on")
    )
    if res.rows:
        print("test accuracy (%), mean ± std over seeds:")
        print(res.table())
    print(res.headline)
    print(f"  study folder: {res.out} (curve.json, results.md, curve.png, report.html)")
    return 0


def _command(cfg: CurveConfig) -> str:
    """The command line that reproduces `cfg` (non-default settings only)."""
    from ..curve import CurveConfig

    default = CurveConfig()
    parts = ["headstart", "curve", cfg.data]
    items: list[tuple[str, Any]] = []
    for name, value in cfg.to_dict().items():
        if name == "ladder":  # no curve flags: always the default ladder
            continue
        if name == "time_budget_s":
            if value != default.time_budget_s:
                items.append(("time_budget", "inf" if value == float("inf") else f"{value:g}s"))
            continue
        if name in ("extract", "finetune"):  # sections: flat flags, as the parser takes them
            base = getattr(default, name).to_dict()
            for key, v in value.items():
                if v != base[key]:
                    flag = (
                        "finetune_batch_size" if (name, key) == ("finetune", "batch_size") else key
                    )
                    items.append((flag, v))
        elif name == "out" or value != getattr(default, name):
            items.append((name, value))
    for name, value in items:
        if name == "data":
            continue
        text = (
            ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
            if isinstance(value, list)
            else str(value)
        )
        parts += [f"--{name.replace('_', '-')}", text]
    return " ".join(shlex.quote(p) for p in parts)
