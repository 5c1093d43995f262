"""`headstart evaluate MODEL DATA`: metrics of a saved model on labelled data."""

from __future__ import annotations

import argparse
import json


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics of a saved model on labelled data",
        description="DATA is an image folder, a table file, or a built-in data "
        "set (its official test split, or all of it when it has none).",
    )
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--text-column")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--audio-column", help="transcription models: the audio-path column")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="transcription models: skip the base model's WER (before)")  # fmt: skip
    p.add_argument("--out", help="also write the metrics to this JSON file")
    p.add_argument(
        "--skip-bad-files",
        action="store_true",
        help="skip unreadable inputs (each is reported) instead of stopping",
    )
    p.add_argument("--trust-path", action="append", default=[], metavar="FOLDER",
                   help="a folder outside the bundle its backbone may be read from (repeatable); "
                   "any other reference outside the bundle is refused")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .._io import atomic_write_json
    from ..asr import is_transcription_bundle
    from ..data.load import read_source
    from ..errors import DataError
    from ..estimator import load_model
    from ..metrics import classification_metrics
    from ..preflight import check_out_file
    from .messages import report_skipped

    if is_transcription_bundle(args.model):
        from .transcribe import evaluate

        return evaluate(args)
    if args.out:
        check_out_file(args.out)
    clf = load_model(args.model, trusted_paths=args.trust_path)
    columns = {
        "text_column": args.text_column,
        "image_column": args.image_column,
        "label_column": args.label_column,
    }
    pool, test, _ = read_source(args.data, columns, "skip" if args.skip_bad_files else "raise")
    ex = test if test is not None else pool
    if ex.modality != clf.modality_:
        raise DataError(
            f"{args.model} is a model of {clf.modality_} data but {args.data} holds "
            f"{ex.modality} data. Evaluate it on {clf.modality_} data (the kind it was trained "
            "on), or give the model trained on this data."
        )
    report_skipped(ex)
    classes = [str(c) for c in clf.classes_]
    unknown = sorted(set(ex.classes) - set(classes))
    if unknown:
        raise DataError(
            f"{args.data} has labels the model was not trained on: {unknown[:10]}. "
            f"The model knows {classes}."
        )
    remap = np.array([classes.index(c) for c in ex.classes])
    y = remap[ex.labels]
    proba = clf.predict_proba(ex)
    metrics = classification_metrics(y, proba, classes)
    print(
        f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} on {len(y)} examples"
    )
    print(json.dumps({k: metrics[k] for k in ("accuracy", "macro_f1", "per_class")}, indent=2))
    if args.out:
        atomic_write_json(args.out, metrics)
    return 0
