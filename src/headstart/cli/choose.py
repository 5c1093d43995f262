"""`headstart rank DATA --backbones a,b,c` and `headstart advise DATA`: choose before you train."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError


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
    _common(r)
    r.set_defaults(func=run_rank)

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
    _common(a)
    a.set_defaults(func=run_advise)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--train-size", type=int, help="labelled budget: a stratified subset of N (train + val)"
    )
    p.add_argument("--text-column")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--val", help="explicit validation file/folder")
    p.add_argument("--test", help="explicit test file/folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="feature cache folder (default: the one `fit` uses)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _splits(args: argparse.Namespace) -> Any:
    from ..data.load import load_data

    return load_data(
        args.data,
        text_column=args.text_column,
        image_column=args.image_column,
        label_column=args.label_column,
        val=args.val,
        test=args.test,
        train_size=args.train_size,
        seed=args.seed,
    )


def _names(spec: str, modality: str) -> list[str]:
    from ..rank import candidates

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


def run_rank(args: argparse.Namespace) -> int:
    from ..rank import rank_backbones

    splits = _splits(args)
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


def run_advise(args: argparse.Namespace) -> int:
    from ..advise import advise
    from ..config import parse_duration
    from ..ladder import LadderConfig

    budget = parse_duration(args.time_budget) if args.time_budget else None
    splits = _splits(args)
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
