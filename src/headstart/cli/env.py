"""`headstart env`: library versions and machine facts, to paste into a bug report."""

from __future__ import annotations

import argparse
import json


def add_parsers(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("env", help="versions and machine facts, for bug reports")
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._env import machine, versions

    print(json.dumps({"versions": versions(), "machine": machine()}, indent=2))
    return 0
