"""`headstart predict MODEL INPUT...`: one JSON line per input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predict with a saved model: one JSON line per input",
        description="Inputs are image files, or (text models) texts; a .txt file "
        "gives one text per line and '-' reads lines from standard input.",
    )
    p.add_argument("model", help="a model bundle folder (runs/NAME/model)")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--top", type=int, default=0, help="only the top K probabilities (0: all)")
    p.set_defaults(func=run)


def _texts(items: list[str]) -> tuple[list[str], list[str]]:
    texts, names = [], []
    for item in items:
        if item == "-":
            lines = [ln.rstrip("\n") for ln in sys.stdin if ln.strip()]
            texts += lines
            names += [f"stdin:{i + 1}" for i in range(len(lines))]
        elif item.endswith(".txt") and Path(item).is_file():
            lines = [ln for ln in Path(item).read_text().splitlines() if ln.strip()]
            texts += lines
            names += [f"{item}:{i + 1}" for i in range(len(lines))]
        else:
            texts.append(item)
            names.append(item[:60])
    return texts, names


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..asr import is_transcription_bundle
    from ..data.base import Examples
    from ..estimator import load_model

    if is_transcription_bundle(args.model):
        from .transcribe import predict

        return predict(args)
    clf = load_model(args.model)
    if clf.modality_ == "text":
        inputs, names = _texts(args.inputs)
    elif clf.modality_ == "audio":
        from ..data.audio import read_audio

        for item in args.inputs:
            read_audio(item)  # clear error naming the file before any work
        inputs, names = list(args.inputs), list(args.inputs)
    else:
        from ..data.images import open_image

        for item in args.inputs:
            open_image(item)  # clear error naming the file before any work
        inputs, names = list(args.inputs), list(args.inputs)
    modality: Any = clf.modality_
    ex = Examples(modality, inputs, np.full(len(inputs), -1), list(clf.classes_), name="predict")
    proba = clf.predict_proba(ex)
    for name, p in zip(names, proba, strict=True):
        order = np.argsort(-p)
        if args.top:
            order = order[: args.top]
        row = {
            "input": name,
            "label": str(clf.classes_[int(np.argmax(p))]),
            "probabilities": {str(clf.classes_[i]): round(float(p[i]), 6) for i in order},
        }
        print(json.dumps(row))
    return 0
