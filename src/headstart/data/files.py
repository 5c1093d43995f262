"""Reading a user's own data: a folder of images per class, or a table of texts or image paths.

Both readers return :class:`~headstart.data.base.Examples` holding references (paths or
texts) and integer labels, and record what they decided (which column is the label, which
files were ignored or skipped) in ``Examples.meta`` so it can be shown to the user.
"""

from __future__ import annotations

import difflib
import json
import lzma
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from headstart.data.base import Examples, Modality
from headstart.data.folders import drop_unreadable, scan_class_folders
from headstart.data.images import OnError, check_images, is_image_file
from headstart.errors import DataError, did_you_mean

#: Table formats by file name ending (a trailing .gz/.bz2/.xz/.zip/.zst is allowed for CSV/TSV).
TABLE_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_COMPRESSED = {".gz", ".bz2", ".xz", ".zip", ".zst"}

#: What a damaged compressed table raises while it is read (zlib, xz, zip).
_ARCHIVE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, lzma.LZMAError, zipfile.BadZipFile)

LABEL_NAMES = ("label", "labels", "class", "target", "y", "category", "stars", "sentiment")
TEXT_NAMES = ("text", "review", "sentence", "content", "body", "comment", "message", "document")
IMAGE_NAMES = ("image", "path", "file", "filepath", "image_path", "filename", "img", "file_path")


def table_format(path: str | os.PathLike[str]) -> str | None:
    """'csv', 'tsv', 'jsonl', 'json' or 'parquet' from the file name, or None if unknown."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
        fmt = TABLE_FORMATS.get(suffixes[-1]) if suffixes else None
        return fmt if fmt in ("csv", "tsv", "jsonl") else None
    return TABLE_FORMATS.get(suffixes[-1]) if suffixes else None


# ----------------------------------------------------------------------------- image folders


def read_image_folder(root: str | os.PathLike[str], on_error: OnError = "raise") -> Examples:
    """Read ``root/<class name>/<image>`` (images may sit in nested folders inside a class).

    Classes are the sub-folder names, sorted. Hidden files and folders are ignored, and so
    are files that are not images (counted in ``meta["ignored_files"]``). Every image is
    verified cheaply; with ``on_error="skip"`` unreadable ones are left out and listed in
    ``meta["skipped"]`` as ``(path, reason)``.
    """
    root, class_dirs, paths, labels, ignored, _ = scan_class_folders(
        root, kind="image", wanted=is_image_file, shown=_EXT_SHOWN, example="cat/1.jpg, dog/2.jpg"
    )
    good, problems = check_images(paths, on_error)
    paths, labels = drop_unreadable(root, "image", class_dirs, paths, labels, good, len(problems))
    return Examples(
        modality="image",
        inputs=paths,
        labels=np.asarray(labels, dtype=np.int64),
        classes=class_dirs,
        name=str(root),
        meta={"format": "image folder", "ignored_files": ignored, "skipped": problems},
    )


_EXT_SHOWN = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".webp")


# ------------------------------------------------------------------------------------ tables


def read_frame(path: Path, fmt: str) -> tuple[pd.DataFrame, list[str]]:
    """The table as a DataFrame plus one source label per row ("file.csv:row 2", ...).

    ``fmt`` is what :func:`table_format` names ('csv', 'tsv', 'jsonl', 'json', 'parquet').
    CSV/TSV cells are read as strings, nothing as missing. Raises DataError naming the file
    (and, for JSON Lines, the line) when it cannot be read.
    """
    name = path.name
    try:
        if fmt in ("csv", "tsv"):
            df = pd.read_csv(
                path,
                sep="," if fmt == "csv" else "\t",
                dtype=str,
                keep_default_na=False,
                encoding="utf-8-sig",
            )
            return df, [f"{name}:row {i + 2}" for i in range(len(df))]
        if fmt == "parquet":
            df = pd.read_parquet(path)
            return df, [f"{name}:row {i + 1}" for i in range(len(df))]
        text = path.read_text(encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: it has no header and no rows.") from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text (byte {e.start} cannot be decoded). Save it as UTF-8."
        ) from None
    except (pd.errors.ParserError, OSError, ValueError, EOFError, *_ARCHIVE_ERRORS) as e:
        raise DataError(
            f"Cannot read {path} as {fmt.upper()}: {e}. Check that the file is complete and "
            "is what its name says."
        ) from None
    if fmt == "json":
        try:
            records = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as e:
            raise DataError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise DataError(
                f"{path} must hold a JSON list of objects, one per example "
                '([{"text": ..., "label": ...}, ...]); for one object per line use .jsonl.'
            )
        return pd.DataFrame.from_records(records), [
            f"{name}:item {i + 1}" for i in range(len(records))
        ]
    records, sources = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{name}:line {lineno} is not valid JSON ({e.msg}). Fix the line."
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f'{name}:line {lineno} must be a JSON object like {{"text": ..., "label": ...}}.'
            )
        records.append(obj)
        sources.append(f"{name}:line {lineno}")
    return pd.DataFrame.from_records(records), sources


def _cell(v: Any) -> str:
    """A cell as text: '' for missing, whole floats without '.0' (parquet ints with nulls)."""
    if v is None:
        return ""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if v.is_integer():
            return str(int(v))
    return str(v)


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def _show(columns: list[str]) -> str:
    """Column names for a message, long ones cut, with a hint when there is no header row."""
    shown = ", ".join(repr(c[:37] + "...") if len(c) > 40 else c for c in columns)
    if any(_is_number(c) or len(c) > 60 or "\n" in c for c in columns):
        shown += (
            ". The first row looks like data, not column names: add a header row "
            "(for example: label,text)"
        )
    return shown


def _column(given: str, columns: list[str], role: str, path: Path, arg: str) -> str:
    if given in columns:
        return given
    raise DataError(
        f"{path} has no {role} column {given!r}.{did_you_mean(given, columns)} "
        f"Available columns: {_show(columns)}. Pass the right name as {arg}=..."
    )


def _by_name(columns: list[str], names: tuple[str, ...]) -> str | None:
    lower = {c.lower(): c for c in reversed(columns)}
    return next((lower[n] for n in names if n in lower), None)


def _mostly_files(values: list[str], base: Path) -> bool:
    sample = [v.strip() for v in values if v.strip()][:50]
    if not sample:
        return False
    hits = sum(len(v) < 1024 and "\n" not in v and _resolve(v, base).is_file() for v in sample)
    return hits > len(sample) / 2


def _resolve(v: str, base: Path) -> Path:
    p = Path(v.strip()).expanduser()
    return p if p.is_absolute() else base / p


def _mostly_audio(values: list[str]) -> bool:
    """True when most non-empty values end like audio files (.wav, .flac, .mp3 ...)."""
    from headstart.data.audio import is_audio_file

    sample = [v.strip() for v in values if v.strip()][:50]
    return bool(sample) and sum(is_audio_file(v) for v in sample) > len(sample) / 2


def _detect_input(
    cells: dict[str, list[str]], label: str, base: Path, path: Path
) -> tuple[str, Modality]:
    """(column, modality) of the input column, by name first, then by content; a column of
    file paths holds audio when most of them end like audio files, else images."""
    column, modality = _detect_input_column(cells, label, base, path)
    if modality == "image" and _mostly_audio(cells[column]):
        return column, "audio"
    return column, modality


def _detect_input_column(
    cells: dict[str, list[str]], label: str, base: Path, path: Path
) -> tuple[str, Modality]:
    columns = [c for c in cells if c != label]
    audio = _by_name(columns, ("audio", "audio_path", "audio_file", "wav", "clip"))
    if audio and _mostly_files(cells[audio], base):
        return audio, "image"  # a file column; _detect_input tells audio from images
    img = _by_name(columns, IMAGE_NAMES)
    txt = _by_name(columns, TEXT_NAMES)
    if img and (not txt or _mostly_files(cells[img], base)):
        return img, "image"
    if txt:
        return txt, "text"
    strings = [c for c in columns if not all(_is_number(v) for v in cells[c] if v.strip())]
    files = [c for c in strings if _mostly_files(cells[c], base)]
    if len(files) == 1:
        return files[0], "image"
    if strings:
        longest = max(strings, key=lambda c: np.mean([len(v) for v in cells[c]]))
        return longest, "text"
    raise DataError(
        f"Cannot tell which column of {path} holds the inputs: no column is named like text "
        f"({', '.join(TEXT_NAMES[:4])}...) or an image path ({', '.join(IMAGE_NAMES[:4])}...), "
        f"and no column other than the label holds text. Columns: {_show(list(cells))}. "
        "Pass text_column=... or image_column=..."
    )


def encode_labels(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Class indices and sorted class names; numeric names sort as numbers (1, 2, 10)."""
    names = sorted(set(values))
    if names and all(_is_number(v) for v in names):
        as_float = {v: float(v) for v in names}
        if all(f.is_integer() for f in as_float.values()):
            canon = {v: str(int(f)) for v, f in as_float.items()}  # '1.0' and '1' are one class
        else:
            canon = {v: v for v in names}
        classes = sorted(set(canon.values()), key=float)
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[canon[v]] for v in values], dtype=np.int64), classes
    index = {c: i for i, c in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64), names


def _check_delimiter(path: Path, fmt: str, columns: list[str]) -> None:
    """A one-column CSV whose header holds tabs is a TSV under the wrong name (and the
    reverse): say so, rather than that no label column exists."""
    if fmt not in ("csv", "tsv") or len(columns) != 1:
        return
    other, named, proper = ("\t", "comma", ".tsv") if fmt == "csv" else (",", "tab", ".csv")
    if other not in columns[0]:
        return
    kind = "tab" if other == "\t" else "comma"
    raise DataError(
        f"{path} is read as {named}-separated ({fmt.upper()}, from its name) but its header "
        f"row is {kind}-separated: {columns[0][:60]!r}. Rename the file to end in {proper} "
        f"(or save it {named}-separated)."
    )


def _check_label_spellings(values: list[str], path: Path, column: str) -> None:
    """Refuse labels that spell one class two ways (0/1 beside neg/pos, Pos beside pos): read
    as they are they would silently make extra classes."""
    names = sorted(set(values))
    numbers = [v for v in names if _is_number(v)]
    words = [v for v in names if not _is_number(v)]
    if numbers and words:
        raise DataError(
            f"The label column {column!r} of {path} mixes numbers ({', '.join(numbers[:5])}) "
            f"and words ({', '.join(words[:5])}), which would make {len(names)} classes. Use "
            "one spelling per class (all numbers or all names) and run again."
        )
    by_case: dict[str, list[str]] = {}
    for v in words:
        by_case.setdefault(v.casefold(), []).append(v)
    twins = [spellings for spellings in by_case.values() if len(spellings) > 1]
    if twins:
        shown = "; ".join(" / ".join(t) for t in twins[:5])
        raise DataError(
            f"The label column {column!r} of {path} spells classes in different cases "
            f"({shown}), which would make them separate classes. Use one spelling per class."
        )


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _rows(sources: list[str], bad: list[int]) -> str:
    shown = ", ".join(sources[i].rsplit(":", 1)[-1] for i in bad[:5])
    return shown + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")


def read_table(
    path: str | os.PathLike[str],
    *,
    text_column: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    on_error: OnError = "raise",
) -> Examples:
    """Read labelled examples from a CSV, TSV, JSON Lines, JSON or Parquet file.

    Columns not given are detected: the label column by name (label, class, target, ...,
    case-insensitive); the input column by name (text, review, ... or image, path, file, ...),
    else the one string column whose values are mostly existing files (images), else the
    string column with the longest texts. Image paths are read relative to the table's
    folder. The choice is recorded in ``meta`` (``label_column``, ``input_column``,
    ``detected``). Sources are ``"file.csv:row N"`` counted as a spreadsheet does (header =
    row 1), ``"file.jsonl:line N"``, ``"file.json:item N"`` or ``"file.parquet:row N"``.

    With ``on_error="skip"`` rows with a missing label, an empty input or an unreadable
    image are left out and listed in ``meta["skipped"]`` as ``(source, reason)``; with
    ``"raise"`` (the default) they raise a DataError naming the rows.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"Table file not found: {path}. Check the path.")
    if path.is_dir():
        raise DataError(f"{path} is a folder; read_table needs a file (use read_image_folder).")
    fmt = table_format(path)
    if fmt is None:
        raise DataError(
            f"Unknown table format for {path.name}: use one of "
            f"{', '.join(sorted(TABLE_FORMATS))} (CSV/TSV may also be compressed, e.g. .csv.gz)."
        )
    if text_column is not None and image_column is not None:
        raise DataError("Give text_column or image_column, not both: one column is the input.")
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes): it has no header and no rows.")
    df, sources = read_frame(path, fmt)
    df.columns = [str(c) for c in df.columns]
    columns = list(df.columns)
    _check_delimiter(path, fmt, columns)
    if len(df) == 0:
        raise DataError(f"{path} has no data rows (columns: {', '.join(columns) or 'none'}).")
    cells = {c: [_cell(v) for v in df[c].tolist()] for c in columns}

    detected = {
        "label": label_column is None,
        "input": text_column is None and image_column is None,
    }
    if label_column is not None:
        label = _column(label_column, columns, "label", path, "label_column")
    else:
        found = _by_name(columns, LABEL_NAMES)
        if found is None:
            close = [
                c for c in columns if difflib.get_close_matches(c.lower(), LABEL_NAMES, 1, 0.7)
            ]
            guess = f" Did you mean label_column={close[0]!r}?" if close else ""
            raise DataError(
                f"Cannot tell which column of {path} holds the labels: none is named "
                f"{', '.join(LABEL_NAMES)}. Columns: {_show(columns)}.{guess} "
                "Pass label_column=... (CLI: --label-column)."
            )
        label = found
    base = path.parent
    modality: Modality
    if text_column is not None:
        column, modality = _column(text_column, columns, "text", path, "text_column"), "text"
    elif image_column is not None:
        column = _column(image_column, columns, "image", path, "image_column")
        modality = "audio" if _mostly_audio(cells[column]) else "image"
    else:
        column, modality = _detect_input(cells, label, base, path)
    if column == label:
        raise DataError(f"The input column and the label column of {path} are both {label!r}.")

    raw_labels = [v.strip() for v in cells[label]]
    raw_inputs = cells[column]
    skipped: list[tuple[str, str]] = []
    keep = np.ones(len(df), dtype=bool)
    checks = (
        (label, "no label", "Fill in the labels", [i for i, v in enumerate(raw_labels) if not v]),
        (
            column,
            f"an empty {column!r} cell",
            "Fill them in",
            [i for i, v in enumerate(raw_inputs) if not v.strip()],
        ),
    )
    for col, what, fix, bad in checks:
        if bad and on_error == "raise":
            raise DataError(
                f"{_plural(len(bad), 'row')} of {path} {'has' if len(bad) == 1 else 'have'} "
                f"{what} (column {col!r}): "
                f"{_rows(sources, bad)}. {fix} or remove these rows, or load with "
                "on_error='skip' to leave them out."
            )
        skipped += [(sources[i], what) for i in bad if keep[i]]
        keep[bad] = False
    idx = np.flatnonzero(keep)
    inputs: list[str] = [raw_inputs[i] for i in idx]
    if modality == "audio":
        from headstart.data.audio import audio_problem

        inputs = [str(_resolve(v, base)) for v in inputs]
        why = [audio_problem(f) for f in inputs]
        unusable = [(sources[idx[i]], w) for i, w in enumerate(why) if w is not None]
        if unusable and on_error == "raise":
            first, reason = unusable[0]
            raise DataError(
                f"{len(unusable)} audio file(s) in {path} cannot be used: {first}: {reason}. "
                "Fix or remove them, or load with on_error='skip' to leave them out."
            )
        skipped += unusable
        ok = [i for i, w in enumerate(why) if w is None]
        idx, inputs = idx[ok], [inputs[i] for i in ok]
    if modality == "image":
        inputs = [str(_resolve(v, base)) for v in inputs]
        good, problems = check_images(inputs, on_error, sources=[sources[i] for i in idx])
        skipped += problems
        idx, inputs = idx[good], [inputs[i] for i in good]
    if len(idx) == 0:
        raise DataError(f"No usable rows left in {path} after skipping {len(skipped)} bad ones.")
    _check_label_spellings([raw_labels[i] for i in idx], path, label)
    labels, classes = encode_labels([raw_labels[i] for i in idx])
    return Examples(
        modality=modality,
        inputs=inputs,
        labels=labels,
        classes=classes,
        name=str(path),
        sources=[sources[i] for i in idx],
        meta={
            "format": fmt,
            "label_column": label,
            "input_column": column,
            "detected": detected,
            "rows": len(df),
            "skipped": skipped,
        },
    )
