"""`headstart backbones`: the known backbones and whether their weights are installed."""

from __future__ import annotations

import argparse
import json


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbones", help="known backbones and whether their weights are installed")
    p.add_argument("--modality", choices=("image", "text", "audio"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
