"""Entry point: `headstart <command> ...`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import HeadstartError
from . import (
    advise,
    backbones,
    curve,
    datasets,
    env,
    evaluate,
    export,
    fit,
    predict,
    rank,
    report,
    serve,
    transcribe,
)

#: One module per verb, each with ``add_parsers(subparsers)``; `--help` lists them in this order.
COMMANDS = (
    fit,
    predict,
    export,
    serve,
    evaluate,
    rank,
    advise,
    curve,
    report,
    transcribe,
    backbones,
    datasets,
    env,
)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="headstart",
        description="Transfer learning from pretrained image, text and audio models: "
        "feature extraction, fine-tuning, and the reasons for each step.",
    )
    parser.add_argument("--version", action="version", version=f"headstart {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens in detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HeadstartError as exc:
        from .messages import cli_message

        print(f"headstart {args.command}: error: {cli_message(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: finished shards and checkpoints are kept; run the same command "
            "again to resume",
            file=sys.stderr,
        )
        return 130
