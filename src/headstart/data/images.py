"""Opening and checking image files, with errors that name the file and the fix.

Decoding stays lazy: :func:`open_image` decodes one file when a batch needs it, and
:func:`check_images` verifies a whole list cheaply (headers and, for PNG, checksums) before a
long run starts, so that a bad file fails in the first second rather than after an hour.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from headstart.errors import DataError

OnError = Literal["raise", "skip"]

#: File name endings (lower case) read as images. Other files in an image folder are ignored.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

_SKIP_HINT = "Remove or replace the file, or load the data with on_error='skip' to leave it out."

# What PIL raises on bad input: unknown format, truncated data, bad header values, bombs.
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends in one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _check_file(p: Path, where: str) -> None:
    """Raise DataError when `p` is missing, not a regular file, or empty."""
    if not p.exists():
        raise DataError(
            f"Image file not found: {where}. Check the path (relative paths in a table are "
            f"read from the table's folder), or remove the entry. {_SKIP_HINT}"
        )
    if not p.is_file():
        raise DataError(f"{where} is not a regular file (a folder?). {_SKIP_HINT}")
    if p.stat().st_size == 0:
        raise DataError(f"Image file {where} is empty (0 bytes). {_SKIP_HINT}")


def open_image(path: str | os.PathLike[str], *, source: str | None = None) -> Image.Image:
    """Decode one image file completely and return it as an RGB :class:`PIL.Image.Image`.

    EXIF orientation is applied (phone photos come out upright), transparency is composed on
    white, and 16-bit grey is scaled to 8 bits. `source` names the entry in messages (for
    example ``"labels.csv:row 12"``); by default the path is used.

    Raises
    ------
    DataError
        when the file is missing, empty (0 bytes), not an image, or truncated/corrupt.
    """
    p = Path(path)
    where = f"{p} ({source})" if source else str(p)
    _check_file(p, where)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd EXIF/ICC data; not fatal
            with Image.open(p) as im:
                im.load()  # full decode: a truncated file raises here, not in a worker later
                return _to_rgb(im)
    except _DECODE_ERRORS as e:
        raise DataError(
            f"Cannot decode image {where}: {_reason(e)}. The file is corrupt, truncated or "
            f"not an image in a format Pillow reads. {_SKIP_HINT}"
        ) from e


def _reason(e: BaseException) -> str:
    if isinstance(e, UnidentifiedImageError):
        return "not a recognised image format"
    return str(e).strip() or type(e).__name__


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, upright, transparency on white."""
    with contextlib.suppress(Exception):  # a broken EXIF block is no reason to refuse pixels
        im = ImageOps.exif_transpose(im) or im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        im.mode == "P" and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im.copy()


def image_problem(path: str | os.PathLike[str], *, decode: bool = False) -> str | None:
    """Why `path` cannot be used as an image, in a few words, or None when it looks fine.

    Without `decode` only the header (and, for PNG, the chunk checksums) is verified, which is
    fast; a JPEG that does not end in its end-of-image marker is decoded in full, so one cut
    short is found here too.
    """
    p = Path(path)
    try:
        if not p.exists():
            return "file not found"
        if not p.is_file():
            return "not a regular file"
        if p.stat().st_size == 0:
            return "empty file (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if decode or _jpeg_cut_short(p):
                with Image.open(p) as im:
                    im.load()
            else:
                with Image.open(p) as im:
                    im.verify()
    except _DECODE_ERRORS as e:
        return _reason(e)
    return None


def _jpeg_cut_short(p: Path) -> bool:
    """True for a JPEG whose last bytes are not its end-of-image marker (FF D9).

    Pillow's ``verify`` reads only a JPEG's header, so a download cut short passes it; the
    marker test is two reads, and only a suspect file is then decoded in full to be sure
    (some writers pad after the marker, which the decode accepts).
    """
    with open(p, "rb") as fh:
        if fh.read(2) != b"\xff\xd8":
            return False
        fh.seek(max(0, p.stat().st_size - 64))
        tail = fh.read().rstrip(b"\x00\r\n ")
    return not tail.endswith(b"\xff\xd9")


def check_images(
    paths: Sequence[str | os.PathLike[str]],
    on_error: OnError = "raise",
    *,
    sources: Sequence[str] | None = None,
    decode: bool = False,
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Verify every image in `paths`; return ``(good_indices, problems)``.

    `problems` lists ``(where, reason)`` for each bad file, where `where` is the entry of
    `sources` (if given) or the path. With ``on_error="raise"`` any problem raises one
    DataError that lists the first few bad files and how many there are; with ``"skip"`` the
    bad files are left out of `good_indices` and reported in `problems`.
    """
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    good: list[int] = []
    problems: list[tuple[str, str]] = []
    for i, path in enumerate(paths):
        reason = image_problem(path, decode=decode)
        if reason is None:
            good.append(i)
        else:
            where = str(path) if sources is None else f"{sources[i]} ({path})"
            problems.append((where, reason))
    if problems and on_error == "raise":
        shown = "\n".join(f"  {w}: {r}" for w, r in problems[:5])
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        missing = any(r == "file not found" for _, r in problems)
        paths_hint = "Check the paths (a table's relative paths start at its folder). " * missing
        raise DataError(
            f"{len(problems)} of {len(paths)} image files cannot be read:\n{shown}{more}\n"
            f"{paths_hint}Remove or replace these files, or load the data with "
            "on_error='skip' to leave them out."
        )
    return np.asarray(good, dtype=np.int64), problems
