"""`headstart advise DATA`: extract or fine-tune? A recommendation with its reasons."""

from __future__ import annotations

import argparse
import json

from .options import add_data_options, load_splits


def add_parsers(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser(
        "advise",
        help="extract or fine-tune? a recommendation with its reasons, from measurements",
        description="Measure DATA (size, class balance, distance from the backbone's pretraining "
        "domain, transferability, learning curve, compute) and recommend what `fit --strategy auto` "
        "will do, with the rule that fired.",
    )
    a.add_argument("data", help="image folder, CSV/TSV/JSONL/Parquet file, or a built-in data set")
    a.add_argument("--backbone", help="backbone to advise on (default: the modality's default)")
    a.add_argument("--sample", type=int, default=500, help="examples measured (default 500)")
    a.add_argument("--time-budget", help="time you can spend, e.g. 20m or 1h (fit's --time-budget)")
    a.add_argument(
        "--ladder",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a ladder threshold, as in fit (min_examples, min_per_class, ...)",
    )
    add_data_options(a)
    a.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config import LadderConfig, parse_duration
    from ..selection.advise import advise

    budget = parse_duration(args.time_budget) if args.time_budget else None
    splits = load_splits(args)
    advice = advise(
        splits,
        args.backbone,
        budget_s=budget,
        sample=args.sample,
        seed=args.seed,
        ladder=LadderConfig.from_overrides(args.ladder),
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(advice.to_dict(), indent=2, default=float))
        return 0
    print(f"{advice.backbone} on {args.data}:")
    print(advice.format())
    strategy = "finetune" if advice.recommendation == "finetune" else "extract"
    print(
        f"\nrun: headstart fit {args.data} --backbone {advice.backbone} --strategy auto"
        f"   (or --strategy {strategy} to skip the ladder)"
    )
    return 0
