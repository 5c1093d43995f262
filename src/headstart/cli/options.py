"""Data options shared by the choosing verbs (`rank`, `advise`): the same flags as `fit`."""

from __future__ import annotations

import argparse
from typing import Any


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The data, split and output flags `rank` and `advise` share with `fit`."""
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
    p.add_argument(
        "--skip-bad-files",
        action="store_true",
        help="skip unreadable inputs (each is reported) instead of stopping",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def load_splits(args: argparse.Namespace) -> Any:
    """The splits the data flags describe (as `fit` would make them)."""
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
        on_error="skip" if args.skip_bad_files else "raise",
    )
