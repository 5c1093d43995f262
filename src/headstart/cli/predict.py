"""`headstart predict MODEL INPUT...`: labels for texts, files, folders and whole tables.

Inputs stream through the model in batches of ``--batch-size`` with a progress bar on
standard error, and each batch's rows are written as soon as it is done, so a table of a
million rows never sits in memory as features. Without ``--output`` every prediction is one
JSON line on standard output (as before); with ``--output FILE.csv`` or ``FILE.jsonl`` the
file is written atomically (a killed run leaves no half file). Unusable inputs are handled
as `fit` handles them: one error naming each, or, with ``--skip-bad-files``, left out and
listed by name while the run goes on. When a table has a label column, the accuracy over
its rows is printed as a convenience (the same figure `headstart evaluate` gives).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

#: Output formats by file name ending.
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

#: Inputs per call into the model: several batches, so text models can sort by length.
BATCHES_PER_CHUNK = 4


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="predict with a saved model: texts, files, folders or tables",
        description="INPUT is a table (.csv, .tsv, .jsonl, .json, .parquet) with a text or "
        "file-path column, a folder of image or audio files, a .txt file with one input per "
        "line, '-' for lines on standard input, or the image files or texts themselves. "
        "Without --output, one JSON line per input on standard output.",
    )
    p.add_argument("model", help="a model bundle folder (runs/NAME/model)")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--column", help="the table's input column (texts, or image / audio paths); "
                   "found by name or content as in `fit` when left out")  # fmt: skip
    p.add_argument("--label-column", help="the table's label column, if it has one: its "
                   "accuracy is then printed (found by name: label, class, target, ...)")  # fmt: skip
    p.add_argument("-o", "--output", help="write the predictions to this .csv or .jsonl file "
                   "(atomically) instead of JSON lines on standard output")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=64, help="inputs per forward pass (64)")
    p.add_argument("--skip-bad-files", action="store_true",
                   help="leave out unreadable files and empty cells, list them, and go on")  # fmt: skip
    p.add_argument("--top", type=int, default=0, help="only the top K probabilities (0: all)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--trust-path", action="append", default=[], metavar="FOLDER",
                   help="a folder outside the bundle its backbone may be read from (repeatable); "
                   "any other reference outside the bundle is refused")  # fmt: skip
    p.set_defaults(func=run)


def _output_format(output: str | None) -> str | None:
    from ..errors import ConfigError

    if output is None:
        return None
    fmt = OUTPUT_FORMATS.get(Path(output).suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"--output {output}: the file name must end in .csv or .jsonl (the format is "
            "taken from it)."
        )
    if Path(output).is_dir():
        raise ConfigError(
            f"--output {output} is a folder; give a file name ending in .csv or .jsonl."
        )
    return fmt


class _Writer:
    """Rows to JSON lines or CSV; a CSV's header is written with the first row."""

    def __init__(self, fh: IO[bytes] | None, fmt: str, classes: list[str], top: int) -> None:
        self.fh, self.fmt, self.classes, self.top = fh, fmt, classes, top
        self.header_done = False

    def _write(self, text: str) -> None:
        if self.fh is None:  # standard output
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            self.fh.write(text.encode("utf-8"))

    def rows(self, names: list[str], proba: Any, truth: list[str] | None) -> None:
        import numpy as np

        buf = io.StringIO()
        if self.fmt == "csv":
            w = csv.writer(buf, lineterminator="\n")
            if not self.header_done:
                extra = ["true_label"] if truth is not None else []
                w.writerow(["input", "label", "probability", *extra]
                           + [f"p_{c}" for c in self.classes])  # fmt: skip
                self.header_done = True
        for k, (name, p) in enumerate(zip(names, proba, strict=True)):
            best = int(np.argmax(p))
            if self.fmt == "csv":
                extra = [truth[k]] if truth is not None else []
                w.writerow([name, self.classes[best], f"{p[best]:.6f}", *extra]
                           + [f"{x:.6f}" for x in p])  # fmt: skip
                continue
            order = np.argsort(-p)[: self.top or None]
            row: dict[str, Any] = {"input": name, "label": self.classes[best]}
            if truth is not None:
                row["true_label"] = truth[k]
            row["probabilities"] = {self.classes[i]: round(float(p[i]), 6) for i in order}
            buf.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._write(buf.getvalue())


@contextmanager
def _open_output(output: str | None) -> Iterator[IO[bytes] | None]:
    """The output file, written atomically; None for standard output."""
    from .._io import atomic_open

    if output is None:
        yield None
        return
    with atomic_open(output, "wb") as fh:
        yield fh


def _label_of(cell: str, classes: list[str]) -> str | None:
    """A label cell as one of the model's classes ('1.0' is class '1'), or None if unknown."""
    if cell in classes:
        return cell
    try:
        as_float = float(cell)
    except ValueError:
        return None
    return str(int(as_float)) if as_float.is_integer() and str(int(as_float)) in classes else None


def _chunk_proba(clf: Any, modality: Any, inputs: list[str], skip_bad: bool) -> tuple[Any, list]:
    """Probabilities of one chunk, and the (index, reason) of inputs that failed to decode.

    A file can pass the cheap header check and still fail when decoded (a cut-off JPEG):
    then the chunk is checked file by file, the bad ones dropped (``skip_bad``) or named in
    the error, and the rest predicted.
    """
    import numpy as np

    from ..data.base import Examples
    from ..data.unlabelled import input_problem
    from ..errors import DataError

    def proba_of(xs: list[str]) -> Any:
        ex = Examples(modality, xs, np.full(len(xs), -1), list(clf.classes_), name="predict")
        return clf.predict_proba(ex, cache=False)

    try:
        return proba_of(inputs), []
    except DataError as exc:
        if modality == "text":
            raise
        bad = [
            (i, w) for i, x in enumerate(inputs) if (w := input_problem(x, modality, decode=True))
        ]
        if not bad:
            raise exc from None  # not one file's decoding: let the original error through
    if not skip_bad:
        return None, bad
    drop = {i for i, _ in bad}
    kept = [x for i, x in enumerate(inputs) if i not in drop]
    return (proba_of(kept) if kept else np.empty((0, len(clf.classes_)))), bad


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from ..asr import is_transcription_bundle
    from ..bundle import read_meta
    from ..data.unlabelled import check_inputs, drop_bad, read_predict_inputs
    from ..errors import ConfigError, DataError
    from ..estimator import load_model

    if is_transcription_bundle(args.model):
        from .transcribe import predict

        given = [f for f, v in (("--output", args.output), ("--column", args.column),
                                ("--label-column", args.label_column)) if v]  # fmt: skip
        if given:
            raise ConfigError(
                f"{', '.join(given)}: {args.model} is a transcription model, which takes audio "
                "files and prints one JSON line per file; these options are for classifiers."
            )
        return predict(args)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be a whole number >= 1, got {args.batch_size}.")
    if args.top < 0:
        raise ConfigError(f"--top must be >= 0 (0: all probabilities), got {args.top}.")
    fmt = _output_format(args.output) or "jsonl"
    if fmt == "csv" and args.top:
        raise ConfigError(
            "--top applies to JSON lines; a CSV output has one probability column per class."
        )
    # the inputs are read and checked before the model loads: a bad file fails in a second
    modality: Any = read_meta(Path(args.model))["modality"]
    found = read_predict_inputs(
        args.inputs, modality, column=args.column, label_column=args.label_column
    )
    found = check_inputs(found, modality, skip_bad=args.skip_bad_files)
    if not len(found):
        raise DataError(
            f"No usable inputs left after skipping {len(found.skipped)}: "
            + "; ".join(f"{w}: {r}" for w, r in found.skipped[:5])
        )
    clf = load_model(args.model, trusted_paths=args.trust_path)
    clf.batch_size = args.batch_size
    classes = [str(c) for c in clf.classes_]
    chunk = args.batch_size * BATCHES_PER_CHUNK
    predicted: list[int] = []
    truths: list[str] = []
    skipped = list(found.skipped)
    bar = tqdm(total=len(found), unit=modality if modality != "image" else "img",
               desc="predict", file=sys.stderr, disable=args.quiet, dynamic_ncols=True)  # fmt: skip
    with _open_output(args.output) as fh:
        writer = _Writer(fh, fmt, classes, args.top)
        for start in range(0, len(found), chunk):
            idx = list(range(start, min(start + chunk, len(found))))
            proba, bad = _chunk_proba(
                clf, modality, [found.inputs[i] for i in idx], args.skip_bad_files
            )
            if bad:
                part = drop_bad(found, [(idx[i], w) for i, w in bad], skip_bad=args.skip_bad_files)
                skipped += part.skipped[len(found.skipped) :]
                drop = {idx[i] for i, _ in bad}
                idx = [i for i in idx if i not in drop]
            truth = [found.labels[i] for i in idx] if found.labels is not None else None
            writer.rows([found.names[i] for i in idx], proba, truth)
            predicted += [int(k) for k in np.argmax(proba, axis=1)]
            truths += truth or []
            bar.update(len(idx) + len(bad))
    bar.close()
    _report(args, found, skipped, predicted, truths, classes)
    return 0


def _report(
    args: argparse.Namespace,
    found: Any,
    skipped: list[tuple[str, str]],
    predicted: list[int],
    truths: list[str],
    classes: list[str],
) -> None:
    """What the run did, on standard error: skipped inputs by name, the accuracy when the
    table had labels, and where the predictions went."""
    err = sys.stderr
    if skipped:
        print(f"skipped {len(skipped)} input(s) that cannot be used:", file=err)
        for where, why in skipped[:50]:
            print(f"  {where}: {why}", file=err)
        if len(skipped) > 50:
            print(f"  ... and {len(skipped) - 50} more", file=err)
    if found.label_column is not None:
        as_class = [_label_of(t, classes) for t in truths]
        known = [(p, t) for p, t in zip(predicted, as_class, strict=True) if t is not None]
        right = sum(classes[p] == t for p, t in known)
        left_out = len(truths) - len(known)
        note = (
            f" ({left_out} rows with an empty label or one the model does not know are left out)"
            if left_out
            else ""
        )
        if known:
            print(
                f"the table has a label column {found.label_column!r}: accuracy "
                f"{right / len(known):.4f} on {len(known):,} rows{note}",
                file=err,
            )
        else:
            print(f"the table's label column {found.label_column!r} holds no label the model "
                  f"knows ({', '.join(classes[:10])}); no accuracy", file=err)  # fmt: skip
    if args.output:
        print(f"wrote {len(predicted):,} predictions to {args.output}", file=err)
