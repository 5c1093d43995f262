"""Forgetting on the source domain, measured after the fact on saved fine-tuned bundles.

    python benchmarks/forgetting_source.py RUN_DIR [RUN_DIR ...] [--n 64]

For each `headstart fit` run folder whose model was fine-tuned, loads the pretrained backbone
(same name and preprocessing) and the tuned one from the bundle, and prints
``forgetting.source_forgetting`` on crops of natural photographs (the CKA of pretrained vs
tuned features, and the original ImageNet classifier's top-1 agreement), beside what the run
measured on its own validation data. New runs record the same figures themselves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    from headstart.backbones.registry import load_backbone
    from headstart.estimator import load_model
    from headstart.forgetting import source_forgetting

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--n", type=int, default=64, help="photo crops in the probe")
    args = ap.parse_args()
    print(
        "| run | backbone LR / head LR | CKA, user's data | CKA, photos | top-1 agreement, user's data | top-1 agreement, photos |"
    )
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        d = Path(run)
        metrics = json.loads((d / "metrics.json").read_text())
        ft = metrics.get("finetune")
        if not ft:
            print(f"| {d.name} | not fine-tuned | | | | |")
            continue
        config = json.loads((d / "config.json").read_text())["config"]
        tuned = load_model(d / "model").backbone_.eval()
        pristine = load_backbone(
            config["backbone"] if config["backbone"] != "auto" else metrics["backbone"],
            image_size=config.get("image_size"),
        ).eval()
        src = source_forgetting(pristine, tuned, n=args.n)
        f = ft["forgetting"]
        ratio = 1.0 / config["lr_ratio"]
        agree = src.get("source_top1_agreement_source")
        print(
            f"| {d.name} | {ratio:.2g} | {f['cka']:.3f} | {src['cka_source']:.3f} | "
            f"{f.get('source_top1_agreement', float('nan')):.2f} | "
            f"{'-' if agree is None else f'{agree:.2f}'} |"
        )


if __name__ == "__main__":
    main()
