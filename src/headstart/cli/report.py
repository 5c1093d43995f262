"""`headstart report RUN_DIR`: (re)write the report page of a run or study folder."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "report",
        help="(re)write report.html for a run or study folder",
        description="Write RUN_DIR/report.html from the JSON files of a `headstart fit` "
        "run or a `headstart curve` study. The page is self-contained: open it from disk.",
    )
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    print(write_report(args.run_dir))
    return 0
