"""`headstart fit DATA`: train a model on a data set and write a run folder."""

from __future__ import annotations

import argparse

from ..config import HEADS, STRATEGIES, FitConfig


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="train on a data set (image folder, table file or built-in name)",
                       description="Train on DATA and write config.json, metrics.json and model/ to --out.")
    p.add_argument("data", nargs="?", default="fashion-mnist",
                   help="image folder, CSV/TSV/JSONL/Parquet file, or a built-in data set (default: fashion-mnist)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<data name>)")
    p.add_argument("--backbone", default="auto", help="e.g. torchvision:mobilenet_v2, timm:..., hf:... (default: auto)")
    p.add_argument("--strategy", default="extract", choices=STRATEGIES)
    p.add_argument("--head", default="logistic", choices=HEADS)
    p.add_argument("--text-column")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--val", help="explicit validation file/folder")
    p.add_argument("--test", help="explicit test file/folder")
    p.add_argument("--train-size", type=int, help="labelled budget: a stratified subset of N (train + val)")
    p.add_argument("--test-size", type=int, help="stratified subsample of the test split")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                   help="random initialisation (a from-scratch reference)")
    p.add_argument("--image-size", type=int, help="override the backbone's input size")
    p.add_argument("--max-length", type=int, help="override the text backbone's token window")
    p.add_argument("--engine", default="auto", choices=("auto", "torch", "onnx"))
    p.add_argument("--batch-size", type=int)
    p.add_argument("--no-baseline", dest="baseline", action="store_false")
    p.add_argument("--skip-bad-files", dest="on_error", action="store_const", const="skip", default="raise",
                   help="skip corrupt images instead of stopping (they are listed in the run's config.json)")
    p.add_argument("--cache-dir", help="feature cache folder (default: ~/.cache/headstart/features)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..run import fit_run

    out = args.out or str(Path("runs") / Path(args.data.rstrip("/")).stem)
    cfg = FitConfig(
        data=args.data, out=out, backbone=args.backbone, strategy=args.strategy, head=args.head,
        text_column=args.text_column, image_column=args.image_column, label_column=args.label_column,
        val=args.val, test=args.test, train_size=args.train_size, test_size=args.test_size,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
        pretrained=args.pretrained, image_size=args.image_size, max_length=args.max_length,
        engine=args.engine, batch_size=args.batch_size, baseline=args.baseline,
        on_error=args.on_error, cache_dir=args.cache_dir,
    )
    result = fit_run(cfg, progress=not args.quiet)
    print(result.summary)
    print(f"  run folder: {result.out} (metrics.json, config.json, model/)")
    return 0
