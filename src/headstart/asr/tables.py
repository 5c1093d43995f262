"""Tables of (audio path, transcript) rows, and the built-in ``dictation`` set's tables.

A table is CSV, TSV, JSON Lines, JSON or Parquet with an audio-path column (``audio``,
``path``, ``file`` ...; paths relative to the table's folder) and a transcript column
(``transcript``, ``text``, ``sentence`` ...). The built-in ``dictation`` set (synthetic,
espeak-ng; see :mod:`headstart.data.speech`) is named simply ``dictation``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import sha256_file, stable_hash
from ..errors import DataError, did_you_mean

__all__ = [
    "AUDIO_COLUMNS",
    "TEXT_COLUMNS",
    "Transcripts",
    "builtin_tables",
    "read_transcripts",
    "resolve_tables",
]

AUDIO_COLUMNS = ("audio", "audio_path", "path", "file", "filepath", "file_path", "wav", "clip")
TEXT_COLUMNS = ("transcript", "transcription", "text", "sentence", "words", "label")


@dataclass
class Transcripts:
    """Audio files and what is said in them, from one table."""

    paths: list[str]
    texts: list[str]
    sources: list[str]
    name: str

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: Sequence[int], name: str | None = None) -> Transcripts:
        return Transcripts(
            [self.paths[i] for i in idx],
            [self.texts[i] for i in idx],
            [self.sources[i] for i in idx],
            name or self.name,
        )

    def fingerprint(self) -> str:
        return stable_hash({"texts": self.texts, "audio": [sha256_file(p) for p in self.paths]})[
            :32
        ]


def builtin_tables(spec: str) -> dict[str, Path] | None:
    """{"train", "test", "general"} tables of the built-in ``dictation`` set, if ``spec`` names it."""
    text = spec.removeprefix("builtin:")
    if text != "dictation" or (Path(spec).exists() and not spec.startswith("builtin:")):
        return None
    from ..data.builtin import dataset_dirs

    for d in dataset_dirs():
        folder = d / "dictation"
        if (folder / "train.csv").is_file():
            return {k: folder / f"{k}.csv" for k in ("train", "test", "general")}
    raise DataError(
        "The built-in data set 'dictation' is not installed (it is generated with espeak-ng). "
        "Install it with: headstart datasets --install dictation"
    )


def _pick(columns: list[str], given: str | None, names: tuple[str, ...], role: str,
          path: Path, arg: str) -> str:  # fmt: skip
    if given is not None:
        if given in columns:
            return given
        raise DataError(
            f"{path} has no {role} column {given!r}.{did_you_mean(given, columns)} Columns: "
            f"{', '.join(columns)}. Pass the right name as {arg}."
        )
    lower = {c.lower(): c for c in reversed(columns)}
    found = next((lower[n] for n in names if n in lower), None)
    if found is None:
        raise DataError(
            f"Cannot tell which column of {path} holds the {role}: none is named "
            f"{', '.join(names[:4])} ... Columns: {', '.join(columns)}. Pass {arg}."
        )
    return found


def read_transcripts(
    path: str | os.PathLike[str],
    *,
    audio_column: str | None = None,
    text_column: str | None = None,
    check_audio: bool = True,
) -> Transcripts:
    """Read a table of (audio path, transcript) rows; paths relative to the table's folder.

    Raises DataError naming the rows with an empty cell or a missing or unreadable audio
    file (the header of every file is checked when ``check_audio``).
    """
    from ..data.audio import audio_problem
    from ..data.files import read_frame, table_format

    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"Transcript table not found: {p}. Check the path.")
    fmt = table_format(p)
    if fmt not in ("csv", "tsv", "jsonl", "json", "parquet"):
        raise DataError(
            f"{p.name}: a transcript table is a .csv, .tsv, .jsonl, .json or .parquet file "
            "with an audio-path column and a transcript column."
        )
    df, sources = read_frame(p, fmt)
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if len(df) == 0:
        raise DataError(f"{p} has no rows (columns: {', '.join(columns) or 'none'}).")
    a = _pick(columns, audio_column, AUDIO_COLUMNS, "audio paths", p, "--audio-column")
    t = _pick(columns, text_column, TEXT_COLUMNS, "transcripts", p, "--text-column")
    if a == t:
        raise DataError(f"The audio column and the transcript column of {p} are both {a!r}.")
    paths, texts = [], []
    empty, bad = [], []
    for k, (av, tv) in enumerate(zip(df[a].tolist(), df[t].tolist(), strict=True)):
        av = "" if av is None or (isinstance(av, float) and math.isnan(av)) else str(av).strip()
        tv = "" if tv is None or (isinstance(tv, float) and math.isnan(tv)) else str(tv).strip()
        if not av or not tv:
            empty.append(sources[k])
            continue
        f = Path(av).expanduser()
        f = f if f.is_absolute() else p.parent / f
        if check_audio:
            why = audio_problem(f)
            if why is not None:
                bad.append(f"{sources[k]}: {why}")
        paths.append(str(f))
        texts.append(tv)
    if empty:
        raise DataError(
            f"{len(empty)} row(s) of {p} have an empty audio or transcript cell "
            f"({', '.join(empty[:5])}). Fill them in or remove the rows."
        )
    if bad:
        raise DataError(f"{len(bad)} audio file(s) in {p} cannot be used. First: {bad[0]}")
    return Transcripts(paths, texts, list(sources), str(p))


def resolve_tables(
    train_csv: str | os.PathLike[str], test_csv: Any, general_csv: Any
) -> tuple[Path, Path | None, Path | None]:
    """(train, test, general) tables: those of the built-in ``dictation`` set when
    ``train_csv`` names it (the given test and general tables take precedence), else the
    given paths."""
    builtin = builtin_tables(os.fspath(train_csv))
    if builtin is not None:
        return (
            builtin["train"],
            Path(test_csv) if test_csv is not None else builtin["test"],
            Path(general_csv) if general_csv is not None else builtin["general"],
        )
    return (
        Path(train_csv),
        Path(test_csv) if test_csv is not None else None,
        Path(general_csv) if general_csv is not None else None,
    )
