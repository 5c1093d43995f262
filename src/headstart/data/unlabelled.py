"""Reading what `headstart predict` is asked to label: tables, folders, file lists or texts.

Unlike :func:`~headstart.data.files.read_table`, nothing here needs a label: the inputs of a
prediction run usually have none. When a table does carry a label column (found by name as
`fit` finds it, or named with ``--label-column``) its cells are kept, so the caller can state
an accuracy as a convenience. The model is already trained, so its modality is known and
picks the input column: a text model reads a text column, an image or audio model a column
of file paths (relative paths start at the table's folder, as in `fit`).

Bad inputs are handled as `fit` handles them (``--skip-bad-files``): each unusable input is
named with its reason; with ``skip_bad=True`` it is left out and listed in
:attr:`PredictInputs.skipped`, otherwise one :class:`~headstart.errors.DataError` lists them
and names the flag.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from headstart.data.audio import audio_problem, is_audio_file
from headstart.data.files import IMAGE_NAMES, LABEL_NAMES, TEXT_NAMES, read_frame, table_format
from headstart.data.folders import is_hidden
from headstart.data.images import image_problem, is_image_file
from headstart.errors import DataError, did_you_mean

#: Column names read as audio paths, by name (case-insensitive), before the image names.
AUDIO_NAMES = ("audio", "audio_path", "audio_file", "wav", "clip")

SKIP_FLAG_HINT = (
    "Fix or remove them, or pass --skip-bad-files to leave them out (they are then listed "
    "by name and the run goes on)."
)


@dataclass
class PredictInputs:
    """The inputs to label, in order, and where each came from.

    ``inputs`` are texts (text models) or file paths (image and audio models); ``names``
    are what the output shows for each (the path, ``"table.csv:row 2"``, ``"stdin:3"`` or
    the text's first 60 characters); ``labels`` hold a table's label cells when it has a
    label column (else None); ``skipped`` lists ``(name, reason)`` for inputs left out.
    """

    inputs: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    labels: list[str] | None = None
    label_column: str | None = None
    input_column: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: inputs are file paths read from a table column (messages name the row and the file)
    table_files: bool = False

    def __len__(self) -> int:
        return len(self.inputs)

    def add(self, inputs: Sequence[str], names: Sequence[str]) -> None:
        self.inputs += inputs
        self.names += names
        if self.labels is not None:
            self.labels += [""] * len(inputs)


def _lower(columns: Sequence[str], names: Sequence[str]) -> str | None:
    by = {c.lower(): c for c in reversed(columns)}
    return next((by[n] for n in names if n in by), None)


def _resolve(value: str, base: Path) -> str:
    p = Path(value.strip()).expanduser()
    return str(p if p.is_absolute() else base / p)


def _mostly_files(values: Sequence[str], base: Path) -> bool:
    sample = [v for v in values if v.strip()][:50]
    hits = sum(
        len(v) < 1024 and "\n" not in v and Path(_resolve(v, base)).is_file() for v in sample
    )
    return bool(sample) and hits > len(sample) / 2


def _cell(v: object) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _pick_input(
    cells: dict[str, list[str]], modality: str, label: str | None, base: Path, path: Path
) -> str:
    """The input column of a table for a model of `modality`, by name, then by content."""
    columns = [c for c in cells if c != label]
    if modality == "text":
        by_name = _lower(columns, TEXT_NAMES)
        if by_name:
            return by_name
        strings = [c for c in columns if any(not _is_number(v) for v in cells[c] if v.strip())]
        if strings:
            return max(strings, key=lambda c: sum(map(len, cells[c])) / max(1, len(cells[c])))
    else:
        names = AUDIO_NAMES + IMAGE_NAMES if modality == "audio" else IMAGE_NAMES + AUDIO_NAMES
        by_name = _lower(columns, names)
        if by_name:
            return by_name
        files = [c for c in columns if _mostly_files(cells[c], base)]
        if len(files) == 1:
            return files[0]
    what = "text" if modality == "text" else f"{modality} file path"
    raise DataError(
        f"Cannot tell which column of {path} holds the {what}s for this {modality} model. "
        f"Columns: {', '.join(cells)}. Name it with --column."
    )


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def read_table_inputs(
    path: Path, modality: str, *, column: str | None = None, label_column: str | None = None
) -> PredictInputs:
    """The rows of a CSV / TSV / JSON Lines / JSON / Parquet table, unchecked.

    Empty cells are kept (as ``""``) so :func:`check_inputs` can name their rows.
    """
    fmt = table_format(path)
    assert fmt is not None  # the caller dispatches on table_format
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes): it has no header and no rows.")
    df, sources = read_frame(path, fmt)
    cells = {str(c): [_cell(v) for v in df[c].tolist()] for c in df.columns}
    if not len(df):
        raise DataError(f"{path} has no data rows (columns: {', '.join(cells) or 'none'}).")
    for given, flag in ((column, "--column"), (label_column, "--label-column")):
        if given is not None and given not in cells:
            raise DataError(
                f"{path} has no column {given!r}.{did_you_mean(given, list(cells))} "
                f"Columns: {', '.join(cells)}. Pass the right name as {flag}."
            )
    label = label_column or _lower(list(cells), LABEL_NAMES)
    if column is None:
        column = _pick_input(cells, modality, label, path.parent, path)
    if label == column:
        label = None
    values = cells[column]
    if modality != "text":
        values = [_resolve(v, path.parent) if v.strip() else "" for v in values]
    return PredictInputs(
        inputs=values,
        names=list(sources),
        labels=[v.strip() for v in cells[label]] if label else None,
        label_column=label,
        input_column=column,
        table_files=modality != "text",
    )


def _folder_files(root: Path, modality: str) -> list[str]:
    """Every file of the model's kind under `root`, hidden ones left out, in sorted order."""
    wanted: Callable[[str], bool] = is_audio_file if modality == "audio" else is_image_file
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        found += [
            os.path.join(dirpath, f) for f in sorted(filenames) if not is_hidden(f) and wanted(f)
        ]
    if not found:
        kind = "audio" if modality == "audio" else "image"
        raise DataError(f"{root} holds no {kind} files (searched its sub-folders too).")
    return found


def _lines(text: str, where: str) -> tuple[list[str], list[str]]:
    kept = [(i, ln.rstrip("\r")) for i, ln in enumerate(text.split("\n"), start=1) if ln.strip()]
    return [ln for _, ln in kept], [f"{where}:{i}" for i, _ in kept]


def read_predict_inputs(
    items: Sequence[str],
    modality: str,
    *,
    column: str | None = None,
    label_column: str | None = None,
) -> PredictInputs:
    """Everything `items` names, in order: tables, folders, ``.txt`` lists, ``-``, or single
    inputs (a file path for image and audio models, a text for text models).

    A ``.txt`` file or ``-`` (standard input) gives one input per line: texts for a text
    model, file paths for the others. A folder gives every image (or audio) file under it.
    Only a single table may carry labels: with several items the labels are dropped.
    """
    out = PredictInputs()
    for item in items:
        path = Path(item).expanduser()
        if item == "-":
            out.add(*_lines(sys.stdin.read(), "stdin"))
        elif table_format(path) and path.is_file():
            t = read_table_inputs(path, modality, column=column, label_column=label_column)
            if len(items) == 1:
                return t
            out.add(t.inputs, t.names)
            out.input_column, out.table_files = t.input_column, t.table_files
        elif path.is_dir():
            if modality == "text":
                raise DataError(
                    f"{item} is a folder, but this is a text model: give a table with a text "
                    "column, a .txt file with one text per line, or the texts themselves."
                )
            files = _folder_files(path, modality)
            out.add(files, files)
        elif path.suffix.lower() == ".txt" and path.is_file():
            lines, names = _lines(path.read_text(encoding="utf-8-sig"), item)
            if modality != "text":
                lines = [_resolve(ln, path.parent) for ln in lines]
            out.add(lines, names)
        elif modality == "text":
            out.add([item], [item[:60]])
        else:
            out.add([str(path)], [item])
    if (column or label_column) and out.input_column is None:
        raise DataError(
            "--column and --label-column choose columns of a table (.csv, .tsv, .jsonl, "
            f".json, .parquet), but no table was given: {', '.join(items)[:200]}."
        )
    return out


def input_problem(value: str, modality: str, *, decode: bool = False) -> str | None:
    """Why one input cannot be used, in a few words, or None when it looks fine."""
    if not value.strip():
        return "empty text" if modality == "text" else "empty path"
    if modality == "image":
        return image_problem(value, decode=decode)
    if modality == "audio":
        return audio_problem(value, decode=decode)
    return None


def check_inputs(found: PredictInputs, modality: str, *, skip_bad: bool) -> PredictInputs:
    """Leave out (``skip_bad``) or refuse, naming each, the inputs that cannot be used.

    Image files are checked cheaply (header, PNG checksums); a file that only fails when
    decoded is found when its batch runs (:func:`drop_bad`).
    """
    bad = [
        (i, why)
        for i, v in enumerate(found.inputs)
        if (why := input_problem(v, modality)) is not None
    ]
    return drop_bad(found, bad, skip_bad=skip_bad)


def drop_bad(
    found: PredictInputs, bad: Sequence[tuple[int, str]], *, skip_bad: bool
) -> PredictInputs:
    """`found` without the inputs at the indices in `bad`, which are added to ``skipped``;
    without ``skip_bad`` a DataError naming them and the --skip-bad-files flag."""
    if not bad:
        return found
    named = [(_where(found, i), why) for i, why in bad]
    if not skip_bad:
        shown = "\n".join(f"  {w}: {r}" for w, r in named[:5])
        more = f"\n  ... and {len(named) - 5} more" if len(named) > 5 else ""
        raise DataError(
            f"{len(named)} of {len(found)} inputs cannot be used:\n{shown}{more}\n{SKIP_FLAG_HINT}"
        )
    drop = {i for i, _ in bad}
    keep = [i for i in range(len(found)) if i not in drop]
    return PredictInputs(
        inputs=[found.inputs[i] for i in keep],
        names=[found.names[i] for i in keep],
        labels=[found.labels[i] for i in keep] if found.labels is not None else None,
        label_column=found.label_column,
        input_column=found.input_column,
        skipped=found.skipped + named,
        table_files=found.table_files,
    )


def _where(found: PredictInputs, i: int) -> str:
    name, value = found.names[i], found.inputs[i]
    return f"{name} ({value})" if found.table_files and value and value != name else name
