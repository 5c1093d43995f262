"""`headstart fit DATA`: train a model on a data set and write a run folder."""

from __future__ import annotations

import argparse

from ..config import HEADS, STRATEGIES, FitConfig


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="train on a data set (image folder, table file or built-in name)",
        description="Train on DATA and write config.json, metrics.json and model/ to --out.",
    )
    p.add_argument(
        "data",
        nargs="?",
        default="fashion-mnist",
        help="image folder, CSV/TSV/JSONL/Parquet file, or a built-in data set (default: fashion-mnist)",
    )
    p.add_argument("--out", default=None, help="run folder (default: runs/<data name>)")
    p.add_argument(
        "--task",
        default="classification",
        choices=("classification", "transcription"),
        help="classification (default), or transcription: adapt a Whisper speech recogniser "
        "to a table of (audio path, transcript) rows (same as `headstart transcribe fit`)",
    )
    p.add_argument(
        "--backbone",
        default="auto",
        help="e.g. torchvision:mobilenet_v2, timm:..., hf:...; auto (default) ranks the "
        "installed backbones of the data's modality on a sample and takes the best",
    )
    p.add_argument(
        "--backbone-budget",
        type=float,
        metavar="MS",
        help="--backbone auto: only backbones that extract within MS milliseconds per example",
    )
    p.add_argument(
        "--rank-sample",
        type=int,
        default=300,
        help="--backbone auto: training examples to rank the candidates on (default 300)",
    )
    p.add_argument(
        "--track",
        default="none",
        choices=("none", "tensorboard", "mlflow"),
        help="also log the run to TensorBoard (RUN/tb) or MLflow (a local file store in RUN)",
    )
    p.add_argument("--general", help="--task transcription: a general-speech table (forgetting)")
    p.add_argument("--audio-column", help="--task transcription: the audio-path column")
    p.add_argument(
        "--strategy",
        default="auto",
        choices=STRATEGIES,
        help="extract, finetune, or auto: the ladder (default)",
    )
    p.add_argument("--head", default="logistic", choices=HEADS)
    p.add_argument("--text-column")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--val", help="explicit validation file/folder")
    p.add_argument("--test", help="explicit test file/folder")
    p.add_argument(
        "--train-size", type=int, help="labelled budget: a stratified subset of N (train + val)"
    )
    p.add_argument("--test-size", type=int, help="stratified subsample of the test split")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-pretrained",
        dest="pretrained",
        action="store_false",
        help="random initialisation (a from-scratch reference)",
    )
    p.add_argument("--image-size", type=int, help="override the backbone's input size")
    p.add_argument("--max-length", type=int, help="override the text backbone's token window")
    p.add_argument("--engine", default="auto", choices=("auto", "torch", "onnx"))
    p.add_argument("--batch-size", type=int)
    p.add_argument("--no-baseline", dest="baseline", action="store_false")
    p.add_argument(
        "--skip-bad-files",
        dest="on_error",
        action="store_const",
        const="skip",
        default="raise",
        help="skip corrupt images instead of stopping (they are listed in the run's config.json)",
    )
    p.add_argument(
        "--cache-dir", help="feature cache folder (default: ~/.cache/headstart/features)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    ft = p.add_argument_group("fine-tuning (--strategy finetune or auto)")
    ft.add_argument("--unfreeze", type=int, help="top layer groups to train (-1: all; default 2)")
    ft.add_argument("--epochs", type=int, help="fine-tuning epochs (default 5)")
    ft.add_argument("--lr", type=float, help="the head's learning rate (default 1e-3)")
    ft.add_argument(
        "--lr-ratio",
        type=float,
        default=30.0,
        help="head LR / backbone LR; the rule is 10-100 (default 30)",
    )
    ft.add_argument(
        "--layer-decay", type=float, default=1.0, help="LR factor per group toward the input"
    )
    ft.add_argument("--weight-decay", type=float, default=0.01)
    ft.add_argument("--label-smoothing", type=float, default=0.0)
    ft.add_argument("--grad-accum", type=int, default=1)
    ft.add_argument("--finetune-batch-size", type=int, default=32)
    ft.add_argument("--mixed-precision", default="auto", choices=("auto", "no", "bf16", "fp16"))
    ft.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    ft.add_argument(
        "--patience", type=int, default=2, help="epochs without validation gain before stopping"
    )
    ft.add_argument(
        "--bn",
        default="frozen",
        choices=("frozen", "train"),
        help="BatchNorm while fine-tuning: frozen pretrained statistics (default) or batch "
        "statistics in the trainable groups",
    )
    ft.add_argument(
        "--l2sp", type=float, default=0.0, help="L2-SP strength toward pretrained weights"
    )
    ft.add_argument(
        "--strict", action="store_true", help="refuse learning rates that break the 10-100x rule"
    )
    ft.add_argument("--time-budget", help="stop climbing the ladder after this long (e.g. 20m, 1h)")
    ft.add_argument(
        "--ladder",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a ladder threshold (target, min_gain, min_examples, ...)",
    )
    ft.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out (re-running the same command does too)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..config import parse_duration
    from ..run import fit_run

    if args.task == "transcription":
        from .transcribe import fit_from_fit_args

        return fit_from_fit_args(args)
    defaults = FitConfig()
    unset = {k: getattr(defaults, k) for k in ("unfreeze", "epochs", "lr")}
    for key, value in unset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    out = args.out or str(Path("runs") / Path(args.data.rstrip("/")).stem)
    cfg = FitConfig(
        data=args.data,
        out=out,
        backbone=args.backbone,
        strategy=args.strategy,
        head=args.head,
        text_column=args.text_column,
        image_column=args.image_column,
        label_column=args.label_column,
        val=args.val,
        test=args.test,
        train_size=args.train_size,
        test_size=args.test_size,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        pretrained=args.pretrained,
        image_size=args.image_size,
        max_length=args.max_length,
        engine=args.engine,
        batch_size=args.batch_size,
        baseline=args.baseline,
        on_error=args.on_error,
        cache_dir=args.cache_dir,
        backbone_budget_ms=args.backbone_budget,
        rank_sample=args.rank_sample,
        track=args.track,
        unfreeze=args.unfreeze,
        epochs=args.epochs,
        lr=args.lr,
        lr_ratio=args.lr_ratio,
        layer_decay=args.layer_decay,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        grad_accum=args.grad_accum,
        finetune_batch_size=args.finetune_batch_size,
        mixed_precision=args.mixed_precision,
        augment=args.augment,
        patience=args.patience,
        l2sp=args.l2sp,
        bn=args.bn,
        strict=args.strict,
        time_budget_s=parse_duration(args.time_budget) if args.time_budget else None,
        ladder=args.ladder,
    )
    result = fit_run(cfg, progress=not args.quiet)
    print(result.summary)
    print(f"  run folder: {result.out} (report.html, metrics.json, decisions.json, model/)")
    return 0
