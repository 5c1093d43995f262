"""One entry point from "what the user named" to checked train / validation / test splits.

:func:`load_data` reads a built-in data set, an image folder or a table, sets aside a test
split (given, official, or carved with a seed), applies the labelled budget ``train_size``,
carves the validation split, validates the result and describes it in
``Splits.description``. The same arguments and seed always give identical splits.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.data.base import Examples, Splits
from headstart.data.builtin import get_builtin, is_builtin, list_builtin
from headstart.data.files import read_image_folder, read_table, table_format
from headstart.data.images import OnError
from headstart.data.split import stratified_split, stratified_subset
from headstart.errors import ConfigError, DataError, did_you_mean

BUILTIN_PREFIX = "builtin:"
log = logging.getLogger("headstart")


def _is_audio_folder(root: Path, sample: int = 200) -> bool:
    """True when the first ``sample`` audio or image files under ``root`` are mostly audio
    (audio that needs converting, such as .m4a, counts: its reader names the fix)."""
    from headstart.data.audio import UNSUPPORTED_AUDIO_EXTENSIONS, is_audio_file
    from headstart.data.images import is_image_file

    n_audio = n_image = 0
    for _, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            n_audio += is_audio_file(f) or Path(f).suffix.lower() in UNSUPPORTED_AUDIO_EXTENSIONS
            n_image += is_image_file(f)
        if n_audio + n_image >= sample:
            break
    return n_audio > n_image


def _read_path(path: Path, columns: dict[str, str | None], on_error: OnError) -> Examples:
    if path.is_dir():
        if _is_audio_folder(path):
            from headstart.data.audio import read_audio_folder

            return read_audio_folder(path, on_error=on_error)
        return read_image_folder(path, on_error=on_error)
    return read_table(path, on_error=on_error, **columns)


def read_source(
    spec: str | os.PathLike[str],
    columns: dict[str, str | None] | None = None,
    on_error: OnError = "raise",
) -> tuple[Examples, Examples | None, str]:
    """Read one data source whole, without splitting it: ``(pool, official test, kind)``.

    ``spec`` is a built-in data set's name (``builtin:`` prefix optional), a folder with one
    sub-folder per class, or a table. ``columns`` holds :func:`~headstart.data.files.read_table`'s
    ``text_column`` / ``image_column`` / ``label_column``. The official test split is
    returned for built-in data sets that have one, else None; ``kind`` is "built-in",
    "<modality> folder" or "table". :func:`load_data` splits what this returns.
    """
    text = os.fspath(spec)
    name = text.removeprefix(BUILTIN_PREFIX)
    path = Path(text).expanduser()
    if text.startswith(BUILTIN_PREFIX) or (not path.exists() and is_builtin(name)):
        pool, test = get_builtin(name).load()
        return pool, test, "built-in"
    if path.exists():
        ex = _read_path(path, columns or {}, on_error)
        return ex, None, f"{ex.modality} folder" if path.is_dir() else "table"
    names = [d.name for d in list_builtin()]
    if table_format(path) or os.sep in text or path.suffix:
        raise DataError(f"No such file or folder: {text}. Check the path.")
    hint = did_you_mean(text, names)
    raise DataError(
        f"{text!r} is not a file, a folder or a built-in data set.{hint} Give a table "
        f"(.csv, .tsv, .jsonl, .parquet), a folder with one sub-folder per class, or one of: "
        f"{', '.join(names)}."
    )


def _align(ex: Examples, classes: list[str], role: str) -> Examples:
    """Re-index `ex`'s labels onto the training classes; unseen labels are an error."""
    unseen = [c for c in ex.classes if c not in classes]
    if unseen:
        raise DataError(
            f"The {role} data {ex.name} has labels that never occur in the training data: "
            f"{', '.join(map(repr, unseen[:10]))}. Fix the labels (spelling, case), add "
            f"training examples of these classes, or remove those {role} examples. "
            f"Training classes: {', '.join(classes)}."
        )
    lookup = np.array([classes.index(c) for c in ex.classes], dtype=np.int64)
    labels = lookup[ex.labels] if len(ex) else ex.labels
    return replace(ex, labels=labels, classes=list(classes), meta=dict(ex.meta))


def _validate_pool(pool: Examples, need: int) -> None:
    """Zero examples, missing labels, one class, or classes too small to split."""
    what = pool.name or "the data"
    if len(pool) == 0:
        raise DataError(f"{what} has no examples. Check the path and the file's contents.")
    missing = np.flatnonzero(pool.labels < 0)
    if missing.size:
        where = ", ".join(pool.source_of(int(i)) for i in missing[:5])
        raise DataError(
            f"{missing.size} examples of {what} have no label ({where}). Label them or remove them."
        )
    counts = pool.class_counts()
    present = [c for c, n in zip(pool.classes, counts, strict=True) if n > 0]
    if len(present) < 2:
        raise DataError(
            f"{what} has only one class ({', '.join(present) or 'none'}): a classifier needs "
            "at least two. Add examples of another class, or check the label column."
        )
    small = [(c, int(n)) for c, n in zip(pool.classes, counts, strict=True) if n < need]
    if small:
        shown = ", ".join(f"{c!r} has {n}" for c, n in small[:8])
        more = f" (and {len(small) - 8} more)" if len(small) > 8 else ""
        hint = ""
        if len(pool.classes) > len(pool) / 2:
            column = pool.meta.get("label_column")
            hint = f" Almost every example has its own label: is {column!r} the label column?"
        raise DataError(
            f"Every class needs at least {need} training examples (one for training and one "
            f"for validation), but in {what} {shown}{more}.{hint} Add examples of these "
            "classes, or remove them from the data."
        )


def _counts(ex: Examples | None) -> dict[str, int] | None:
    if ex is None:
        return None
    return {c: int(n) for c, n in zip(ex.classes, ex.class_counts(), strict=True)}


def _check_args(**kw: Any) -> None:
    for key in ("val_fraction", "test_fraction"):
        v = kw[key]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 < v < 1.0:
            raise ConfigError(f"{key} must be a fraction between 0 and 1, got {v!r}.")
    for key in ("train_size", "test_size"):
        v = kw[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"{key} must be a whole number of examples >= 1, got {v!r}.")
    if kw["on_error"] not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {kw['on_error']!r}.")


def load_data(
    spec: str | os.PathLike[str],
    *,
    text_column: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    val: str | os.PathLike[str] | None = None,
    test: str | os.PathLike[str] | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    on_error: OnError = "raise",
) -> Splits:
    """Read `spec` and return checked, stratified train / validation / test splits.

    `spec` is a built-in name (``"imdb"``, or ``"builtin:imdb"`` when a file of that name
    exists), a folder with one sub-folder per class, or a table file. The test split is the
    `test` file if given, else the data set's official test split, else a stratified
    `test_fraction` carved from the data with `seed`. `train_size` is the labelled budget:
    a stratified subset of that many examples of the remaining pool, from which the
    validation split (`val_fraction`, at least one per class) is carved, so train + val =
    `train_size`; with a `val` file the whole budget is training data. `test_size` takes a
    stratified subsample of the test split. Column arguments apply to every table read.
    """
    _check_args(**locals())
    columns = {
        "text_column": text_column,
        "image_column": image_column,
        "label_column": label_column,
    }
    pool, official, kind = read_source(spec, columns, on_error)
    carve_val = val is None
    _validate_pool(pool, 2 if carve_val else 1)
    classes = list(pool.classes)
    name = pool.name or os.fspath(spec)
    notes: list[str] = []
    desc: dict[str, Any] = {"source": os.fspath(spec), "kind": kind, "modality": pool.modality}
    desc.update(
        {k: pool.meta[k] for k in ("label_column", "input_column", "detected") if k in pool.meta}
    )
    skipped = list(pool.meta.get("skipped") or [])

    def read_other(p: str | os.PathLike[str], role: str) -> Examples:
        path = Path(p).expanduser()
        if not path.exists():
            raise DataError(f"The {role} file or folder {os.fspath(p)!r} does not exist.")
        ex = _read_path(path, columns or {}, on_error)
        if ex.modality != pool.modality:
            raise DataError(
                f"The {role} data {p} holds {ex.modality}, the training data {pool.modality}."
            )
        if len(ex) == 0:
            raise DataError(f"The {role} data {p} has no examples.")
        skipped.extend(ex.meta.get("skipped") or [])
        return _align(ex, classes, role)

    if test is not None:
        test_ex: Examples | None = read_other(test, "test")
        desc["test_from"] = f"the file {os.fspath(test)}"
    elif official is not None:
        test_ex = _align(official, classes, "test")
        desc["test_from"] = "the official test split"
    else:
        keep = 2 if carve_val else 1
        rest, part = stratified_split(pool.labels, test_fraction, seed, keep_per_class=keep)
        test_ex = pool.subset(part, name=f"{name} test")
        pool = pool.subset(rest)
        desc["test_from"] = f"carved {test_fraction:g} of the data, stratified, seed {seed}"

    if train_size is not None:
        if train_size > len(pool):
            left = (
                " after setting aside the test split"
                if desc["test_from"].startswith("carved")
                else ""
            )
            raise DataError(
                f"train_size={train_size} but only {len(pool)} labelled examples are available"
                f"{left} in {name}. Ask for at most {len(pool)}."
            )
        per = 2 if carve_val else 1
        if train_size < per * len(classes):
            raise DataError(
                f"train_size={train_size} is too small for {len(classes)} classes: each class "
                f"needs {per} (training{' and validation' if carve_val else ''}), so at least "
                f"{per * len(classes)}."
            )
        pool = pool.subset(stratified_subset(pool.labels, train_size, seed, min_per_class=per))
        desc["train_size"] = f"stratified budget of {train_size}, seed {seed}"

    labelled = pool if val is None else None
    if val is None:
        rest, part = stratified_split(pool.labels, val_fraction, seed + 1, keep_per_class=1)
        train_ex, val_ex = (
            pool.subset(rest, name=f"{name} train"),
            pool.subset(part, name=f"{name} val"),
        )
        desc["val_from"] = f"carved {val_fraction:g} of the training data, stratified, seed {seed}"
    else:
        train_ex, val_ex = replace(pool, name=f"{name} train"), read_other(val, "validation")
        desc["val_from"] = f"the file {os.fspath(val)}"

    if test_ex is not None and test_size is not None:
        if test_size > len(test_ex):
            raise DataError(
                f"test_size={test_size} but the test split has only {len(test_ex)} examples."
            )
        test_ex = test_ex.subset(
            stratified_subset(test_ex.labels, test_size, seed + 2, min_per_class=1)
        )
        desc["test_size"] = f"stratified subsample of {test_size}, seed {seed}"

    splits = {"train": train_ex, "val": val_ex, "test": test_ex}
    for role, ex in splits.items():
        absent = [c for c, n in (_counts(ex) or {}).items() if n == 0]
        if absent:
            notes.append(f"no {role} examples of: {', '.join(absent)}")
    desc.update(
        seed=seed,
        classes=classes,
        sizes={k: (len(v) if v is not None else 0) for k, v in splits.items()},
        class_counts={k: _counts(v) for k, v in splits.items()},
        skipped=len(skipped),
        notes=notes,
    )
    if skipped:
        desc["skipped_examples"] = [f"{w}: {r}" for w, r in skipped[:20]]
        log.warning(
            "skipped %d unreadable input(s):\n%s%s",
            len(skipped),
            "\n".join(f"  {w}: {r}" for w, r in skipped[:20]),
            f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else "",
        )
    desc["summary"] = _summary(desc)
    return Splits(
        train=train_ex,
        val=val_ex,
        test=test_ex,
        classes=classes,
        description=desc,
        pool=labelled,
    )


def _summary(d: dict[str, Any]) -> str:
    sizes = d["sizes"]
    lines = [
        f"{d['source']} ({d['kind']}, {d['modality']}): {len(d['classes'])} classes",
        f"  train {sizes['train']}, val {sizes['val']}, test {sizes['test']}",
        f"  test: {d['test_from']}; val: {d['val_from']}",
    ]
    if "train_size" in d:
        lines.append(f"  budget: {d['train_size']}")
    if "input_column" in d:
        lines.append(f"  columns: input {d['input_column']!r}, label {d['label_column']!r}")
    if d["skipped"]:
        lines.append(f"  skipped {d['skipped']} unusable examples")
    lines += [f"  note: {n}" for n in d["notes"]]
    return "\n".join(lines)
