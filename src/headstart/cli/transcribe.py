"""`headstart transcribe fit|evaluate|predict`: adapt Whisper to a domain's speech.

    headstart transcribe fit dictation.csv --backbone hf:openai/whisper-tiny.en --out runs/asr \\
        --test held_out.csv --general general.csv
    headstart transcribe evaluate runs/asr/model held_out.csv
    headstart transcribe predict runs/asr/model clip.wav ...

``fit`` reads a table of (audio path, transcript) rows, or ``dictation`` (the built-in
synthetic set, whose test and general tables are then used too).
"""

from __future__ import annotations

import argparse
import json


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transcribe",
        help="speech recognition: fine-tune Whisper on (audio, transcript) pairs, measure WER",
        description="Adapt a Whisper model to a domain's recordings and measure word error "
        "rate before and after, on held-out domain speech and on general speech.",
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    f = verbs.add_parser(
        "fit",
        help="fine-tune on a table of audio paths and transcripts",
        description="DATA is a CSV/TSV/JSONL table with an audio-path column and a transcript "
        "column (paths relative to the table), or 'dictation' (built-in, synthetic).",
    )
    f.add_argument("data")
    add_fit_options(f)
    f.set_defaults(func=fit)

    e = verbs.add_parser(
        "evaluate",
        help="word error rate of a tuned model on a table, before and after tuning",
    )
    e.add_argument("model", help="a transcription model folder (runs/NAME/model)")
    e.add_argument("data", help="table of audio paths and transcripts, or 'dictation' (its test)")
    e.add_argument("--audio-column")
    e.add_argument("--text-column")
    e.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the base model's WER (before)")  # fmt: skip
    e.add_argument("--out", help="also write the result (with every transcript) to this JSON file")
    e.set_defaults(func=evaluate)

    r = verbs.add_parser("predict", help="transcribe audio files: one JSON line per file")
    r.add_argument("model", help="a transcription model folder, or a Whisper backbone name")
    r.add_argument("inputs", nargs="+", help="audio files")
    r.set_defaults(func=predict)


def add_fit_options(f: argparse.ArgumentParser) -> None:
    """The options of `transcribe fit` (also usable by `fit --task transcription`)."""
    from ..asr import DEFAULT_ASR_BACKBONE, TranscriptionConfig

    d = TranscriptionConfig()
    f.add_argument("--out", default=None, help="run folder (default: runs/<data name>-asr)")
    f.add_argument("--backbone", default=DEFAULT_ASR_BACKBONE,
                   help=f"Whisper model: hf:<repo> or a folder (default {DEFAULT_ASR_BACKBONE})")  # fmt: skip
    f.add_argument("--test", help="held-out domain table: WER before and after")
    f.add_argument("--general", help="general-speech table: WER before and after (forgetting)")
    f.add_argument("--audio-column")
    f.add_argument("--text-column")
    f.add_argument("--epochs", type=int, default=d.epochs)
    f.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr:g})")
    f.add_argument("--unfreeze", type=int, default=d.unfreeze_encoder_blocks,
                   help="top encoder blocks to train besides the decoder (-1: all; default "
                   f"{d.unfreeze_encoder_blocks})")  # fmt: skip
    f.add_argument("--batch-size", type=int, default=d.batch_size)
    f.add_argument("--val-fraction", type=float, default=d.val_fraction)
    f.add_argument("--patience", type=int, default=d.patience)
    f.add_argument("--seed", type=int, default=d.seed)
    f.add_argument("--time-budget", help="stop training after this long (e.g. 20m)")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def fit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..asr import TranscriptionConfig, fit_transcription
    from ..config import parse_duration

    out = args.out or str(Path("runs") / f"{Path(args.data.rstrip('/')).stem}-asr")
    cfg = TranscriptionConfig(
        backbone=args.backbone, epochs=args.epochs, lr=args.lr,
        unfreeze_encoder_blocks=args.unfreeze, batch_size=args.batch_size,
        val_fraction=args.val_fraction, patience=args.patience, seed=args.seed,
        time_budget_s=parse_duration(args.time_budget) if args.time_budget else None,
    )  # fmt: skip
    result = fit_transcription(
        args.data, out=out, test_csv=args.test, general_csv=args.general, config=cfg,
        audio_column=args.audio_column, text_column=args.text_column, progress=not args.quiet,
    )  # fmt: skip
    print(result.summary)
    print(f"  run folder: {result.out} (metrics.json, transcripts.json, model/)")
    return 0


def fit_from_fit_args(args: argparse.Namespace) -> int:
    """`headstart fit DATA --task transcription ...`: the `fit` command's options mapped onto
    :func:`headstart.asr.fit_transcription`.

    ``--backbone auto`` means Whisper tiny.en. ``--epochs`` and ``--lr`` are used only when
    given (not None): `fit`'s classification defaults (a head's learning rate of 1e-3) would
    wreck a pretrained Whisper; the batch size is 8. ``--unfreeze`` counts encoder blocks;
    ``--test`` is the held-out domain table and ``--general`` (if `fit` has it) the
    general-speech table.
    """
    from ..asr import TranscriptionConfig

    d = TranscriptionConfig()
    backbone = getattr(args, "backbone", "auto")
    ns = argparse.Namespace(
        data=args.data,
        out=getattr(args, "out", None),
        backbone=d.backbone if backbone in (None, "auto") else backbone,
        test=getattr(args, "test", None),
        general=getattr(args, "general", None),
        audio_column=getattr(args, "audio_column", None),
        text_column=getattr(args, "text_column", None),
        epochs=d.epochs if getattr(args, "epochs", None) is None else args.epochs,
        lr=d.lr if getattr(args, "lr", None) is None else args.lr,
        unfreeze=d.unfreeze_encoder_blocks
        if getattr(args, "unfreeze", None) is None
        else args.unfreeze,
        batch_size=d.batch_size,
        val_fraction=d.val_fraction,
        patience=d.patience if getattr(args, "patience", None) is None else args.patience,
        seed=d.seed if getattr(args, "seed", None) is None else args.seed,
        time_budget=getattr(args, "time_budget", None),
        quiet=getattr(args, "quiet", False),
    )
    return fit(ns)


def evaluate(args: argparse.Namespace) -> int:
    from .._io import atomic_write_json
    from ..asr import evaluate_transcription

    res = evaluate_transcription(
        args.model, args.data, baseline=args.baseline,
        audio_column=args.audio_column, text_column=args.text_column,
    )  # fmt: skip
    line = f"WER {res['wer_after']:.4f} on {res['n']} recordings"
    if "wer_before" in res:
        line += f" (base model before tuning: {res['wer_before']:.4f})"
    print(line)
    short = {k: v for k, v in res.items() if k != "transcripts"}
    print(json.dumps(short, indent=2))
    if args.out:
        atomic_write_json(args.out, res)
    return 0


def predict(args: argparse.Namespace) -> int:
    from ..asr import transcribe
    from ..data.audio import read_audio

    for item in args.inputs:
        read_audio(item)  # a clear error naming the file before any model work
    for path, text in zip(args.inputs, transcribe(args.model, args.inputs), strict=True):
        print(json.dumps({"input": path, "transcript": text}))
    return 0
