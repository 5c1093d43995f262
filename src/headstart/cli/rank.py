"""`headstart rank DATA --backbones a,b,c`: rank backbones by transferability before training."""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from .options import add_data_options, load_splits


def add_parsers(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "rank",
        help="rank backbones for a data set by transferability (LogME, H-score, NCE, LEEP, probe)",
        description="Extract features of a stratified sample of DATA's training split with each "
        "backbone (through the feature cache that `fit` reuses) and rank the backbones by LogME.",
    )
    r.add_argument("data", help="image folder, CSV/TSV/JSONL/Parquet file, or a built-in data set")
    r.add_argument(
        "--backbones",
        default="auto",
        help="comma-separated backbone names, or 'auto': the installed ones for the data's modality",
    )
    r.add_argument("--sample", type=int, default=500, help="stratified sample size (default 500)")
    r.add_argument("--cv", type=int, default=5, help="folds of the probe (default 5)")
    r.add_argument(
        "--probe",
        default="ridge",
        choices=("ridge", "logistic"),
        help="CV probe: closed-form ridge (fast, default) or LogisticHead",
    )
    r.add_argument(
        "--budget-ms", type=float, help="also name the best backbone within this extraction cost"
    )
    add_data_options(r)
    r.set_defaults(func=run)


def _names(spec: str, modality: str) -> list[str]:
    from ..selection.rank import candidates

    if spec.strip() == "auto":
        names = candidates(modality)
        if not names:
            raise ConfigError(
                f"No installed {modality} backbone to rank: install one "
                f"(`headstart backbones --modality {modality}`) or name them with --backbones."
            )
        return names
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ConfigError(
            f"--backbones got {spec!r}: give comma-separated names, e.g. "
            "torchvision:mobilenet_v2,hf:facebook/dinov2-small"
        )
    return names


def run(args: argparse.Namespace) -> int:
    from ..selection.rank import rank_backbones

    splits = load_splits(args)
    names = _names(args.backbones, splits.train.modality)
    table = rank_backbones(
        splits.train,
        names,
        sample=args.sample,
        seed=args.seed,
        cv=args.cv,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
        probe=args.probe,
    )
    best = table.best(args.budget_ms) if args.budget_ms is not None else table.best()
    if args.json:
        print(
            json.dumps(
                {**table.to_dict(), "best": best.name, "budget_ms": args.budget_ms},
                indent=2,
                default=float,
            )
        )
        return 0
    print(table.format())
    within = f" within {args.budget_ms:g} ms/example" if args.budget_ms is not None else ""
    print(
        f"\nbest{within}: {best.name}  (fit with: headstart fit {args.data} --backbone {best.name})"
    )
    return 0
