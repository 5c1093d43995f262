"""Walking a folder of class sub-folders (``root/<class name>/<file>``), for any modality.

:func:`scan_class_folders` finds the files and their classes; :func:`drop_unreadable` leaves
out the ones a modality's checker rejected. The image and audio folder readers
(:func:`headstart.data.files.read_image_folder`, :func:`headstart.data.audio.read_audio_folder`)
are built on these two.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from headstart.errors import DataError

__all__ = ["SPLIT_NAMES", "drop_unreadable", "is_hidden", "scan_class_folders"]

log = logging.getLogger("headstart")


def is_hidden(name: str) -> bool:
    """Hidden files and folders (``.name``) and macOS archive leftovers (``__MACOSX``)."""
    return name.startswith(".") or name == "__MACOSX"


def scan_class_folders(
    root: str | os.PathLike[str],
    *,
    kind: str,
    wanted: Callable[[str], bool],
    shown: Iterable[str],
    example: str,
    unsupported: Iterable[str] = (),
) -> tuple[Path, list[str], list[str], list[int], int, list[str]]:
    """Walk ``root/<class name>/...`` for the files ``wanted`` accepts (by file name).

    Returns (root, class names, paths, class indices, ignored file count, paths whose
    extension is in ``unsupported``). Classes are the sub-folder names, sorted; hidden files
    and folders are skipped; files that are neither wanted nor unsupported are counted as
    ignored. ``kind`` ("image", "audio"), ``shown`` (the extensions named in an error) and
    ``example`` ("cat/1.jpg, dog/2.jpg") word the errors for a missing folder, a folder with
    no class sub-folders and a class folder with nothing in it.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{kind.capitalize()} folder not found: {root}. Check the path.")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder of class sub-folders.")
    entries = sorted(e for e in os.listdir(root) if not is_hidden(e))
    class_dirs = [e for e in entries if (root / e).is_dir()]
    loose = [e for e in entries if (root / e).is_file()]
    if not class_dirs:
        n = sum(wanted(e) for e in loose)
        found = f" It holds {n} {kind} files directly;" if n else ""
        first, second = (x.strip() for x in example.split(","))
        raise DataError(
            f"No class sub-folders in {root}.{found} headstart expects one sub-folder per "
            f"class, named after the class: {root}/{first}, {root}/{second}, ..."
        )
    _refuse_split_layout(root, class_dirs, kind)
    bad_ext = {e.lower() for e in unsupported}
    paths: list[str] = []
    labels: list[int] = []
    odd: list[str] = []
    ignored = len(loose)
    for k, name in enumerate(class_dirs):
        n_before = len(paths)
        for dirpath, dirnames, filenames in os.walk(root / name):
            dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
            for f in sorted(filenames):
                if is_hidden(f):
                    continue
                if wanted(f):
                    paths.append(os.path.join(dirpath, f))
                    labels.append(k)
                elif Path(f).suffix.lower() in bad_ext:
                    odd.append(os.path.join(dirpath, f))
                else:
                    ignored += 1
        top = str(root / name)
        deeper = [os.path.relpath(os.path.dirname(q), top) for q in paths[n_before:]]
        deeper = [d for d in deeper if d != "."]
        if deeper:
            shown_dirs = sorted(set(deeper))
            log.warning(
                "%d %s files in sub-folders of %s (%s) are counted as class %r; to make those "
                "sub-folders classes of their own, give a folder whose sub-folders are the classes",
                len(deeper),
                kind,
                top,
                ", ".join(shown_dirs[:3]) + (", ..." if len(shown_dirs) > 3 else ""),
                name,
            )
        if len(paths) == n_before and not odd:
            raise DataError(
                f"Class folder {root / name} holds no {kind} files (looked for "
                f"{', '.join(sorted(e.lstrip('.') for e in shown))}). Add {kind} files to it "
                "or remove the folder."
            )
    return root, class_dirs, paths, labels, ignored, odd


#: Folder names that hold splits, not classes.
SPLIT_NAMES = frozenset(
    {"train", "training", "test", "testing", "val", "valid", "validation", "dev"}
)


def _refuse_split_layout(root: Path, class_dirs: list[str], kind: str) -> None:
    """A folder of splits (``data/train/cat``, ``data/test/cat``) read as one of classes would
    train a classifier of 'train' against 'test'. Refuse it and name the folders to give."""
    splits = [d for d in class_dirs if d.lower() in SPLIT_NAMES]
    if len(splits) < 2 or len(splits) < len(class_dirs) / 2:
        return
    inner = [
        {e for e in os.listdir(root / d) if (root / d / e).is_dir() and not is_hidden(e)}
        for d in splits
    ]
    shared = sorted(set.intersection(*inner)) if inner else []
    if not shared:
        return
    train = next((d for d in splits if d.lower().startswith("train")), splits[0])
    test = next((d for d in splits if d.lower().startswith("test")), None)
    val = next((d for d in splits if d.lower() in ("val", "valid", "validation", "dev")), None)
    flags = (f" --test {root / test}" if test else "") + (f" --val {root / val}" if val else "")
    raise DataError(
        f"{root} holds split folders ({', '.join(splits)}), each with the same class "
        f"sub-folders ({', '.join(shared[:4])}{', ...' if len(shared) > 4 else ''}), not one "
        f"sub-folder per class: read as it is, the classes would be {', '.join(class_dirs)}. "
        f"Give the training folder and the others as their splits: {root / train}{flags}"
    )


def drop_unreadable(
    root: Path,
    kind: str,
    class_dirs: list[str],
    paths: list[str],
    labels: list[int],
    good: Iterable[int],
    n_problems: int,
) -> tuple[list[str], list[int]]:
    """The readable files (indices ``good``); raises if a class has none of them left."""
    if not n_problems:
        return paths, labels
    keep = list(good)
    paths = [paths[i] for i in keep]
    labels = [labels[i] for i in keep]
    emptied = sorted(set(class_dirs) - {class_dirs[k] for k in set(labels)})
    if emptied:
        raise DataError(
            f"After skipping {n_problems} unreadable {kind} files, class folder(s) "
            f"{', '.join(emptied)} in {root} have no {kind} files left. Replace the bad files."
        )
    return paths, labels
